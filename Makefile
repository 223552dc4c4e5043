# edgeclf developer targets. `make install` creates .venv; every other target uses it.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= cifar10
# MobileNetV2 ImageNet weights: 'imagenet' (Keras download) or a local .h5 file
MNV2_WEIGHTS ?= imagenet
DEMO_EPOCHS  ?= 5
PYTEST_ARGS  ?=
# pytest-xdist workers for `make test`: one per core; a file's functions (or a class) per worker (module fixtures built once)
PYTEST_WORKERS ?= 2

.PHONY: install test test-fast test-stream demo bench lint clean

$(BIN)/edgeclf: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,dev]"
	@touch $@

install: $(BIN)/edgeclf ## create .venv with edgeclf[train,dev]

test: install ## the whole test suite (real-data tests included), PYTEST_WORKERS processes
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

test-fast: install ## tests without the slow real-data ones
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadscope -m "not slow" $(PYTEST_ARGS)

test-stream: install ## the test suite with every image folder on the streaming input path (EDGECLF_STREAM=1)
	EDGECLF_STREAM=1 $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# train -> export (int8 TFLite + ONNX, validated) -> predict on test images
demo: install
	$(BIN)/edgeclf train --model cnn --data $(DATA) --epochs $(DEMO_EPOCHS) --name demo-cnn
	$(BIN)/edgeclf export export/demo-cnn --quantize int8
	$(BIN)/python -m edgeclf.data.samples $(DATA) export/demo-cnn/samples --per-class 2
	$(BIN)/edgeclf predict export/demo-cnn export/demo-cnn/samples

bench: install ## train (or reuse) cnn + mobilenet_v2 on CIFAR-10, export, benchmark -> benchmarks/results/
	DATA=$(DATA) MNV2_WEIGHTS=$(MNV2_WEIGHTS) bash benchmarks/run.sh

lint: install ## ruff + the import-linter layering contracts in pyproject.toml (docs/architecture.md)
	$(BIN)/ruff check edgeclf tests
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf .pytest_cache build *.egg-info
