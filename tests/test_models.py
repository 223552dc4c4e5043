"""edgeclf.models: every registered architecture, parameter/MAC counts, BN placement, fine-tuning.

The transfer backbones' own checks (preprocessing, weights files, int8 round trip) are in
test_backbones.py."""

from __future__ import annotations

import numpy as np
import pytest
from _whitening import patches_2x2, response_second_moment, whitened_variances
from conftest import MOBILENET_WEIGHTS

from edgeclf._cpuinfo import FLAGS_ENV
from edgeclf._keras import keras
from edgeclf.errors import ConfigError
from edgeclf.models import MODEL_OPTIONS, MODELS, ModelConfig, Preprocessing, build_model
from edgeclf.models import mobilenet_v2 as mnv2
from edgeclf.models.flops import count_macs
from edgeclf.train.config import Optimizer, TrainConfig, resolve_mixed_precision

L = keras.layers
TRANSFER = [name for name, spec in MODELS.items() if spec.two_phase]


def _cfg(name: str, **kw) -> ModelConfig:
    if "weights" in MODELS[name].options:
        kw.setdefault("weights", "none")
    return ModelConfig(name=name, **kw)


def _small(name: str) -> ModelConfig:
    """Transfer models at their tiny test size (32 px, smallest alpha); the others at their defaults."""
    return ModelConfig(name=name, **MODELS[name].tiny) if name in TRANSFER else _cfg(name)


def _check_classifier(model, input_shape, num_classes: int) -> np.ndarray:
    assert tuple(model.input_shape) == (None, *input_shape)
    assert tuple(model.output_shape) == (None, num_classes)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, *input_shape)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, num_classes) and probs.dtype == np.float32
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    return probs


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("input_shape, num_classes", [((32, 32, 3), 10), ((28, 28, 1), 4)])
def test_every_model_builds_and_outputs_probabilities(name, input_shape, num_classes):
    keras.backend.clear_session()
    model = build_model(_small(name), input_shape, num_classes)
    _check_classifier(model, input_shape, num_classes)
    assert count_macs(model) > 0


@pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason=f"{MOBILENET_WEIGHTS} missing")
def test_mobilenet_v2_loads_the_shared_weights_file():
    import h5py

    keras.backend.clear_session()
    model = build_model(_cfg("mobilenet_v2", weights=str(MOBILENET_WEIGHTS), img_size=96), (32, 32, 3), 10)
    _check_classifier(model, (32, 32, 3), 10)
    base = mnv2.base_model(model)
    assert base.input_shape == (None, 96, 96, 3)
    # the file's tensors are really in the model (not a fresh random init)
    with h5py.File(MOBILENET_WEIGHTS, "r") as f:
        for layer, var in (("Conv1", "kernel:0"), ("block_16_project", "kernel:0"), ("Conv_1_bn", "beta:0")):
            expected = np.asarray(f[layer][layer][var])
            got = {w.name.split("/")[-1]: w.numpy() for w in base.get_layer(layer).weights}[var]
            np.testing.assert_array_equal(got, expected)
    # the base counts 2,257,984 parameters (shared/weights/README.md); the head is 1280 x 10 + 10
    assert base.count_params() == 2_257_984 and model.count_params() == 2_257_984 + 12_810


def test_mobilenet_v2_missing_weights_file(tmp_path):
    missing = tmp_path / "no_such_weights.h5"
    with pytest.raises(mnv2.WeightsError, match="no_such_weights.h5: weights file not found"):
        build_model(_cfg("mobilenet_v2", weights=str(missing)), (32, 32, 3), 10)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not an hdf5 file")
    with pytest.raises(mnv2.WeightsError, match="broken.h5"):
        build_model(_cfg("mobilenet_v2", weights=str(broken), img_size=32), (32, 32, 3), 10)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="unknown model 'resnet'; choose one of cnn, cnn-resnet9, cnn-small"):
        build_model(ModelConfig(name="resnet"), (32, 32, 3), 10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_spec_recipe_and_tiny_config_are_valid(name):
    spec = MODELS[name]
    cfg = TrainConfig.from_recipe(ModelConfig(name=name, **spec.tiny), {"epochs": None, "lr": 0.5})
    assert cfg.lr == 0.5  # a given value overrides the recipe, None keeps it
    expected = {"optimizer": Optimizer, "mixed_precision": resolve_mixed_precision}
    for key, value in spec.recipe.items():
        if key != "lr":
            assert getattr(cfg, key) == expected.get(key, lambda v: v)(value)
    assert set(spec.options) <= MODEL_OPTIONS
    assert not spec.two_phase or spec.set_base_trainable


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu avx2 fma", False),                               # AVX2-only EPYC: bf16 is emulated (~5x slower)
    ("avx2 avx512f avx512_vnni avx512_bf16", True),        # Zen 4
    ("avx2 avx512f avx512_bf16 amx_tile amx_bf16", True),  # Sapphire Rapids
    ("fp asimd asimddp bf16", False),                      # ARM: not measured, stays float32
])
def test_mixed_precision_auto_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setenv(FLAGS_ENV, flags)
    cnn = TrainConfig.from_recipe(ModelConfig(name="cnn"))
    assert cnn.mixed_precision is expected
    assert TrainConfig.from_recipe(ModelConfig(name="mobilenet_v2")).mixed_precision is False
    # the user's choice wins over the recipe's "auto", either way
    assert TrainConfig.from_recipe(ModelConfig(name="cnn"), {"mixed_precision": not expected}).mixed_precision \
        is (not expected)
    assert TrainConfig.from_dict(cnn.to_dict()).mixed_precision is expected  # config.json keeps the resolved value


def test_mixed_precision_refuses_other_values():
    with pytest.raises(ConfigError, match="mixed_precision must be true, false or 'auto', got 'yes'"):
        TrainConfig.from_recipe(ModelConfig(name="cnn"), {"mixed_precision": "yes"})


def test_from_recipe_refuses_unknown_fields():
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_recipe(ModelConfig(name="cnn"), {"epochz": 3})


@pytest.mark.parametrize("name", sorted(n for n, s in MODELS.items() if not s.two_phase))
def test_embedded_normalisation_matches_the_spec(name):
    """The model's own normalisation layer computes what its spec declares, on random pixels.
    (Transfer backbones: tests/test_backbones.py compares theirs with keras.applications.)"""
    keras.backend.clear_session()
    model = build_model(ModelConfig(name=name, **MODELS[name].tiny), (32, 32, 3), 3)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    got = np.asarray(model.get_layer("normalize")(x))
    want = {Preprocessing.MINUS_ONE_TO_ONE: x / 127.5 - 1.0, Preprocessing.ZERO_TO_ONE: x / 255.0}
    np.testing.assert_allclose(got, want[MODELS[name].preprocessing], atol=1e-6)
    if MODELS[name].preprocessing is Preprocessing.MINUS_ONE_TO_ONE:
        ref = keras.applications.mobilenet_v2.preprocess_input(x.copy())
        np.testing.assert_allclose(got, ref, atol=1e-6)


def test_registry_and_configs_import_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys, edgeclf.models, edgeclf.train.config, edgeclf.cli.train; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_cnn_small_has_the_reference_parameter_count():
    keras.backend.clear_session()
    model = build_model(_cfg("cnn-small"), (32, 32, 3), 10)
    # conv 896 + 18,496 + 73,856; BN 4 x (32 + 64 + 128); fc1 2*2*128*128 + 128; logits 128*10 + 10
    expected = 896 + 18_496 + 73_856 + 4 * (32 + 64 + 128) + (512 * 128 + 128) + (128 * 10 + 10)
    assert expected == 161_098
    assert model.count_params() == expected
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected - 2 * (32 + 64 + 128)  # moving mean/variance are not trained


def _consumers(model) -> dict[str, list[str]]:
    """layer name -> names of the layers that take its output (from the functional graph)."""
    out: dict[str, list[str]] = {layer["name"]: [] for layer in model.get_config()["layers"]}
    for layer in model.get_config()["layers"]:
        for node in layer["inbound_nodes"]:
            for inbound in node:
                out[inbound[0]].append(layer["name"])
    return out


@pytest.mark.parametrize("name, n_convs", [("cnn", 7), ("cnn-resnet9", 8)])
def test_cnn_convolutions_are_followed_by_batchnorm_then_relu(name, n_convs):
    keras.backend.clear_session()
    model = build_model(_cfg(name, width=8), (32, 32, 3), 10)
    consumers = _consumers(model)
    convs = [layer for layer in model.layers if isinstance(layer, L.Conv2D)]
    assert len(convs) == n_convs
    for conv in convs:
        assert not conv.use_bias, conv.name  # the bias would be redundant with BN's beta
        (bn_name,) = consumers[conv.name]
        bn = model.get_layer(bn_name)
        assert isinstance(bn, L.BatchNormalization), f"{conv.name} -> {bn_name}"
        (act_name,) = consumers[bn_name]
        assert isinstance(model.get_layer(act_name), L.ReLU), f"{bn_name} -> {act_name}"
    # the reference cnn-small has the opposite order: its conv applies ReLU before BN
    small = build_model(_cfg("cnn-small"), (32, 32, 3), 10)
    conv1 = small.get_layer("conv1")
    assert conv1.activation is keras.activations.relu
    assert isinstance(small.get_layer(_consumers(small)["conv1"][0]), L.BatchNormalization)


def test_cnn_width_scales_the_stages():
    keras.backend.clear_session()
    model = build_model(_cfg("cnn", width=8), (32, 32, 3), 10)
    filters = [layer.filters for layer in model.layers if isinstance(layer, L.Conv2D)]
    assert filters == [8, 16, 16, 64, 64, 64, 64]
    assert isinstance(model.get_layer("pool"), L.GlobalMaxPooling2D)
    # the documented sizes at 32x32x3, 10 classes: the default width 32 1,980,394 parameters, 151.9 M MACs
    default = build_model(ModelConfig(name="cnn"), (32, 32, 3), 10)
    assert default.count_params() == 1_980_394 and count_macs(default) == 151_882_240


@pytest.mark.parametrize("name", ["cnn", "cnn-resnet9"])
def test_logit_scale_multiplies_the_logits_before_the_softmax(name):
    keras.backend.clear_session()
    plain = build_model(_cfg(name, width=4, logit_scale=1.0), (32, 32, 3), 10)
    scaled = build_model(_cfg(name, width=4), (32, 32, 3), 10)  # the cnn layouts' default: 0.125
    assert ModelConfig(name=name).logit_scale == 0.125 and ModelConfig(name="cnn-small").logit_scale == 1.0
    assert "logit_scale" not in [layer.name for layer in plain.layers]
    scaled.set_weights(plain.get_weights())  # the Rescaling layer has no weights
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    logits = keras.Model(plain.inputs, plain.get_layer("logits").output)(x).numpy()
    want = np.exp(0.125 * logits) / np.exp(0.125 * logits).sum(1, keepdims=True)
    np.testing.assert_allclose(scaled(x).numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="logit_scale"):
        ModelConfig(name=name, logit_scale=0.0)
    # a config.json from before logit_scale existed describes a model without one, not today's default
    old = TrainConfig.from_recipe(ModelConfig(name=name)).to_dict()
    del old["model"]["logit_scale"]
    assert TrainConfig.from_dict(old).model.logit_scale == 1.0


def test_cnn_resnet9_width_scales_the_stages():
    keras.backend.clear_session()
    model = build_model(_cfg("cnn-resnet9", width=8), (32, 32, 3), 10)
    filters = [layer.filters for layer in model.layers if isinstance(layer, L.Conv2D)]
    assert filters == [8, 16, 16, 16, 32, 64, 64, 64]
    # width 16 (round 1's cnn) 414,074 parameters and 24.0 M MACs; width 32: 1,648,362 and 95.3 M
    quarter = build_model(ModelConfig(name="cnn-resnet9", width=16), (32, 32, 3), 10)
    assert quarter.count_params() == 414_074 and count_macs(quarter) == 24_036_608
    default = build_model(ModelConfig(name="cnn-resnet9"), (32, 32, 3), 10)
    assert default.count_params() == 1_648_362 and count_macs(default) == 95_259_136


def test_count_macs_matches_a_hand_computed_value():
    keras.backend.clear_session()
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same")(inp)           # 8*8 outputs x 4 ch x 3*3*3   = 6,912
    x = L.DepthwiseConv2D(3)(x)                       # 6*6 outputs x 4 ch x 3*3     = 1,296
    x = L.Conv2D(6, 1, groups=2)(x)                   # 6*6 outputs x 6 ch x 1*1*2   =   432
    x = L.MaxPooling2D(2)(x)                          # not counted
    x = L.BatchNormalization()(x)                     # not counted
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(5)(x)                               # 6 x 5                        =    30
    inner = keras.Model(inp, out)
    expected = 6_912 + 1_296 + 432 + 30
    assert count_macs(inner) == expected
    # nested models are counted once, with their own shapes
    outer_in = keras.Input((8, 8, 3))
    outer = keras.Model(outer_in, L.Dense(2)(inner(outer_in)))
    assert count_macs(outer) == expected + 5 * 2


def test_set_base_trainable_freezes_batchnorm_and_opens_the_last_layers():
    keras.backend.clear_session()
    model = build_model(_cfg("mobilenet_v2", img_size=32), (32, 32, 3), 3)
    base = mnv2.base_model(model)
    layers = base.layers
    head = ["logits/kernel:0", "logits/bias:0"]

    n = mnv2.set_base_trainable(model, 0)  # phase 1: head only
    assert n == 0 and not base.trainable
    assert [w.name for w in model.trainable_weights] == head

    last = 20
    n = mnv2.set_base_trainable(model, last)
    assert base.trainable
    for i, layer in enumerate(layers):
        want = i >= len(layers) - last and not isinstance(layer, L.BatchNormalization)
        assert layer.trainable == want, layer.name
    assert n == sum(1 for layer in layers[-last:] if layer.trainable and layer.weights)
    trainable_names = {w.name for w in model.trainable_weights}
    assert set(head) <= trainable_names
    assert not any("bn" in name.lower() for name in trainable_names)
    assert "Conv_1/kernel:0" in trainable_names and "Conv1/kernel:0" not in trainable_names

    n_all = mnv2.set_base_trainable(model, -1)
    bn_layers = [layer for layer in layers if isinstance(layer, L.BatchNormalization)]
    assert bn_layers and not any(layer.trainable for layer in bn_layers)
    assert n_all == sum(1 for layer in layers if layer.weights and not isinstance(layer, L.BatchNormalization))
    assert n_all > n
    # --train-bn: the BatchNorm layers among the last N learn too (scale and offset)
    mnv2.set_base_trainable(model, last, train_bn=True)
    for i, layer in enumerate(layers):
        assert layer.trainable == (i >= len(layers) - last), layer.name
    assert "Conv_1_bn/gamma:0" in {w.name for w in model.trainable_weights}
    assert not any("moving" in w.name for w in model.trainable_weights)
    mnv2.set_base_trainable(model, -1)
    # BatchNorm runs in inference mode even in a training step: its moving statistics stay put
    before = [w.numpy().copy() for w in bn_layers[0].weights]
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    model(x, training=True)
    for a, w in zip(before, bn_layers[0].weights):
        np.testing.assert_array_equal(a, w.numpy())


def test_model_config_validation():
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="width"):
        ModelConfig(width=2)
    with pytest.raises(ValueError, match="img_size"):
        ModelConfig(img_size=16)
    with pytest.raises(ValueError, match="alpha"):
        ModelConfig(name="mobilenet", alpha=0.0)


def test_model_config_defaults_come_from_the_spec():
    for name, spec in MODELS.items():
        cfg = ModelConfig(name=name)
        assert cfg.img_size == spec.defaults.get("img_size", 96)
        assert (cfg.alpha, cfg.weights) == (1.0, "imagenet")
    assert ModelConfig(name="vgg16", img_size=48).img_size == 48  # given values win
    # a config.json written with every field set reads back unchanged
    cfg = ModelConfig(name="resnet50", weights="none", img_size=72)
    assert ModelConfig(**cfg.to_dict()) == cfg


def test_cnn_whitening_stem_whitens_the_training_patches():
    keras.backend.clear_session()
    from edgeclf.models.cnn import WHITEN, init_whitening

    model = build_model(_cfg("cnn", width=4, stem="whiten"), (32, 32, 3), 10)
    stem = model.get_layer(WHITEN)
    assert (stem.kernel_size, stem.filters, stem.use_bias, stem.trainable) == ((2, 2), 24, False, False)
    assert stem.kernel not in model.trainable_weights
    # images with strongly correlated neighbouring pixels and channels, as photos have
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (300, 8, 8, 1)).repeat(4, axis=1).repeat(4, axis=2)
    images = np.clip(base + rng.normal(0, 12, (300, 32, 32, 3)), 0, 255).astype(np.float32)
    before = stem.kernel.numpy()
    assert init_whitening(model, images).startswith("whitening stem")
    kernel = stem.kernel.numpy()
    assert not np.allclose(kernel, before)
    np.testing.assert_allclose(kernel[..., 12:], -kernel[..., :12])  # the filters and their negation
    # the filters' responses to the images' 2x2 patches: decorrelated, variance l / (l + eps) for the
    # patches' second-moment eigenvalues l (1 where l is far above the floor eps)
    patches = patches_2x2(images)
    want = whitened_variances(patches)
    assert want.min() < 0.95 < want.max()  # the floor matters for some directions of these images, not all
    second_moment = response_second_moment(patches, kernel)
    np.testing.assert_allclose(np.diag(second_moment), want, rtol=2e-3)
    np.testing.assert_allclose(second_moment - np.diag(np.diag(second_moment)), 0.0, atol=1e-3)
    # the layer computes the same responses (the pre-ReLU half through ReLU: positive part)
    out = keras.Model(model.inputs, stem.output)(images[:2]).numpy()
    response = patches[:2 * 31 * 31] @ kernel[..., :12].reshape(12, 12)
    np.testing.assert_allclose(out[..., :12].reshape(-1, 12), response, rtol=1e-4, atol=1e-4)
    # (N, 32, 32, 3) -> 31 x 31 x 24 at the stem, and the model still classifies
    assert out.shape == (2, 31, 31, 24) and model(images[:2]).shape == (2, 10)
    # at the default width: airbench94's MACs (benchmarks/results/airbench-reference/*.json: 118,147,360)
    default = build_model(ModelConfig(name="cnn", stem="whiten"), (32, 32, 3), 10)
    assert default.count_params() == 1_975_082 and count_macs(default) == 118_147_360
    # the conv stem has no whitening layer: nothing to do
    assert init_whitening(build_model(_cfg("cnn", width=4), (32, 32, 3), 10), images) is None
    with pytest.raises(ConfigError, match="stem"):
        ModelConfig(name="cnn", stem="pca")
