"""The ImageNet transfer backbones (edgeclf.models.transfer): embedded preprocessing against
``keras.applications.<family>.preprocess_input``, ``--weights`` from a local file, the two-phase
freezing, and a round trip train -> int8 TFLite + int8 ONNX export -> runtime for every backbone.

ImageNet weights cannot be downloaded here, so the round trip starts from weights made in the test
and passed through ``--weights PATH``: the randomly initialised base, saved with ``save_weights``.
The MobileNets' fresh bases give every image the same features (feature std 1e-11 to 1e-18 at
32 px, measured: glorot-initialised convs shrink the signal layer by layer and BatchNorm with
identity statistics does not restore it), which makes the float model constant and any int8
comparison meaningless; for those bases the BatchNorm moving statistics are first set to the batch
statistics of training images (one pass in training mode). ``vgg16``'s base has no BatchNorm and
mapped every image to nearly the same direction (mean cosine 0.98, a one-class float model decided
by run-to-run noise: a flaky CI failure), so its convs get a data-dependent init instead
(:func:`_standardise_convs`; mean cosine 0.77 after it). Its float model can still favour one class
(90 / 0 / 0 and 59 / 3 / 28 test predictions in two runs of the same test), so the round trip checks
every int8 file by the correlation of its class probabilities with the float model's
(MIN_PROB_CORRELATION) and by top-1 agreement only where the float predictions are spread.

Random features do not solve the tiny task, so the round trip does not ask for accuracy: it checks
that training froze what the recipe says, that both int8 files pass the export, that the runtime's
class probabilities track the float model's from image to image (MIN_PROB_CORRELATION), and that
its top-1 agrees with a float model whose predictions are spread over the classes (MIN_AGREEMENT).
"""

from __future__ import annotations

import shutil
import urllib.request

import numpy as np
import pytest
from _bn_stats import set_base_bn_stats

from edgeclf._keras import keras, tf
from edgeclf.errors import ConfigError, WeightsError
from edgeclf.models import MODELS, ModelConfig, Preprocessing, build_model, get_spec, transfer

L = keras.layers
BACKBONES = [name for name, spec in MODELS.items() if spec.two_phase]
#: their round trip (train + two int8 conversions) takes 1-2 CPU-minutes each, 5-24 minutes of wall time
#: while a training ran beside it (CI runs slow tests too)
HEAVY = {"mobilenet_v3_small", "mobilenet_v3_large", "efficientnetv2_b0", "resnet50", "vgg16"}
#: int8 vs float top-1 agreement required on the 90 test images. Measured 0.58-0.98 (docs/models.md):
#: a head fitted to random features flips on small feature changes, so int8 noise moves more
#: decisions than on a trained model (mobilenet_v2 with ImageNet weights on CIFAR-10: 0.97).
#: KNOWN WEAKNESS: wrongly scaled or channel-swapped pixels agreed 0.36-0.52 for mobilenet_v2 and
#: mobilenet_v3_small but up to 0.61-0.80 for the other five, whose near-chance, one-class-leaning
#: float models this threshold cannot separate from a broken path (docs/models.md, "Known weakness
#: of the round trip"): the fix is float models that solve the task and the real export gate.
MIN_AGREEMENT = 0.55
#: Backbones whose top-1 agreement is not asserted: `mobilenet` (V1)'s near-chance float model agreed
#: 0.58 / 0.60 (TFLite / ONNX) with correct input and 0.42-0.61 with broken input (docs/models.md),
#: and 0.544 in a CI run on 2026-12-02 (AMD EPYC Zen 5) with nothing changed on its path, so the check
#: could only flake, never tell a broken file apart; its probability correlation (0.66 / 0.69 correct,
#: <= 0.25 broken) is what checks it. `mobilenet_v3_large`: BGR input still agreed 0.56 / 0.68 (a broken
#: file passes), and its correct int8 TFLite agreed 0.500 in a fresh-clone CI run on 2026-12-03 (AMD EPYC
#: Zen 5, nothing changed on its path; the same test passed when re-run), so its check flaked as well.
AGREEMENT_UNINFORMATIVE = frozenset({"mobilenet", "mobilenet_v3_large"})
#: Mean per-class Pearson correlation, across the 90 test images, between the float and the int8
#: probabilities (:func:`_probability_correlation`). One run each, 2026-12-01, AMD EPYC Zen 4
#: (avx512_vnni): correct input 0.66-0.95 for the five MobileNets (TFLite and ONNX), 0.996 for vgg16;
#: the same files fed pixels x 0.5, BGR order or 255 - pixels: -0.08 to 0.52 for the MobileNets, but
#: 0.35-0.83 for vgg16 (whose random features barely react to the input; docs/models.md). Unlike top-1
#: agreement it still checks the file when the float model favours one class.
#: Classes whose float probability varies less than the int8 file's output step are left out of it:
#: `efficientnetv2_b0`'s float model gave 1/3 +- 0.0005 (std over the 90 test images), below the int8
#: TFLite's uint8 output step (1/256), so its TFLite correlation measured rounding (0.45-0.63 per class;
#: 0.495 in a fresh-clone CI run on 2026-12-04, AMD EPYC Zen 4) while its ONNX (float Softmax output)
#: gave 0.99 (2026-12-04, Zen 4, debug prints beside a training).
MIN_PROB_CORRELATION = 0.5
#: When no class varies by more than the output step, the int8 file's probabilities must equal the float
#: model's to within this many steps (efficientnetv2_b0's TFLite: 0.51 of a step at most over the 90
#: test images, float std 0.0004-0.0006; 2026-12-04, Zen 4).
NEAR_CONSTANT_STEPS = 2


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in names]


def _tiny(name: str, **kw) -> ModelConfig:
    return ModelConfig(name=name, **{**MODELS[name].tiny, **kw})


def _pixels(shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)


def test_the_issue_backbones_are_registered():
    assert set(BACKBONES) == {"mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                              "efficientnetv2_b0", "resnet50", "vgg16"}
    for name in BACKBONES:
        spec = MODELS[name]
        assert spec.builder == "edgeclf.models.transfer:build" and name in transfer.FAMILIES
        assert {"weights", "img_size", "head_epochs", "fine_tune_layers", "fine_tune_lr"} <= spec.options
        assert ("alpha" in spec.options) == bool(spec.pretrained_alphas)
        assert spec.tiny["weights"] == "none" and spec.tiny["img_size"] == 32
        if spec.pretrained_alphas:
            assert spec.tiny["alpha"] == min(spec.pretrained_alphas)


# ---------------------------------------------------------------- embedded preprocessing


def _expected_normalisation(preprocessing: Preprocessing, x: np.ndarray) -> np.ndarray:
    """The documented formula of each mode, independent of Keras."""
    if preprocessing is Preprocessing.MINUS_ONE_TO_ONE:
        return x / 127.5 - 1.0
    if preprocessing is Preprocessing.TORCH:
        return (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    if preprocessing is Preprocessing.CAFFE:
        return x[..., ::-1] - np.array([103.939, 116.779, 123.68])
    raise AssertionError(preprocessing)


@pytest.mark.parametrize("name", BACKBONES)
def test_embedded_preprocessing_matches_keras_preprocess_input(name):
    """Random pixels at 40x40 -> the model's resize to 32 and normalisation == preprocess_input(resize(x)),
    applied exactly once: either by a ``normalize`` layer or by the base's built-in layers, never both."""
    keras.backend.clear_session()
    spec, family = get_spec(name), transfer.FAMILIES[name]
    model = build_model(_tiny(name), (40, 40, 3), 3)
    x = _pixels((4, 40, 40, 3))
    resized = tf.image.resize(x, (32, 32), method="bilinear").numpy()
    reference = getattr(keras.applications, family.module).preprocess_input(resized.copy())
    got = transfer.preprocessing_model(model)(x).numpy()

    base_norm = [layer for layer in transfer.base_model(model).layers
                 if isinstance(layer, (L.Rescaling, L.Normalization))]
    has_normalize = "normalize" in {layer.name for layer in model.layers}
    if family.builtin_preprocessing:
        # preprocess_input is a pass-through for these families: the base normalises by itself
        np.testing.assert_array_equal(reference, resized)
        assert not has_normalize and base_norm
        reference = _expected_normalisation(spec.preprocessing, resized)
    else:
        assert has_normalize and not base_norm
        np.testing.assert_allclose(reference, _expected_normalisation(spec.preprocessing, resized), rtol=1e-5,
                                   atol=1e-4)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["vgg16", "mobilenet_v3_small"])
def test_grey_input_is_repeated_to_three_channels(name):
    keras.backend.clear_session()
    grey = build_model(_tiny(name), (32, 32, 1), 3)
    x = _pixels((2, 32, 32, 1))
    got = transfer.preprocessing_model(grey)(x).numpy()
    want = _expected_normalisation(MODELS[name].preprocessing, np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_caffe_normalisation_stays_frozen_through_fine_tuning():
    keras.backend.clear_session()
    model = build_model(_tiny("vgg16"), (32, 32, 3), 3)
    transfer.set_base_trainable(model, -1)
    assert not model.get_layer("normalize").trainable
    assert not any("normalize" in w.name for w in model.trainable_weights)


# ---------------------------------------------------------------- two phases, BatchNorm


def _first_fine_tuned(layers, last: int) -> int:
    """Index of the first base layer a recipe's ``fine_tune_layers = last`` opens (-1: the whole base)."""
    return 0 if last < 0 else len(layers) - last


@pytest.mark.parametrize("name", BACKBONES)
def test_two_phase_freezing(name):
    """Phase 1 trains the head only; phase 2 the last N base layers; BatchNorm never, and in inference mode."""
    keras.backend.clear_session()
    model = build_model(_tiny(name), (32, 32, 3), 3)
    base = transfer.base_model(model)
    head = {"logits/kernel:0", "logits/bias:0"}
    assert transfer.set_base_trainable(model, 0) == 0
    assert {w.name for w in model.trainable_weights} == head

    last = get_spec(name).recipe["fine_tune_layers"]
    n = transfer.set_base_trainable(model, last)
    start = _first_fine_tuned(base.layers, last)
    opened = [layer for layer in base.layers[start:] if layer.weights and not isinstance(layer, L.BatchNormalization)]
    assert n == len(opened) > 0
    assert all(layer.trainable for layer in opened)
    frozen = [layer for layer in base.layers[:start] if layer.weights]
    assert (last < 0 or frozen) and not any(layer.trainable for layer in frozen)
    bns = [layer for layer in base.layers if isinstance(layer, L.BatchNormalization)]
    assert not any(layer.trainable for layer in bns)
    if bns:  # inference mode even in a training step: the moving statistics stay put
        before = [w.numpy().copy() for w in bns[-1].weights]
        model(_pixels((4, 32, 32, 3)), training=True)
        for a, w in zip(before, bns[-1].weights):
            np.testing.assert_array_equal(a, w.numpy())
    everything = transfer.set_base_trainable(model, -1)
    assert everything == n if last < 0 else everything > n


# ---------------------------------------------------------------- --weights


@pytest.mark.parametrize("name", _params(BACKBONES))
def test_weights_load_from_a_local_file(name, tmp_path):
    """A no-top base saved with save_weights loads through --weights PATH: every tensor arrives."""
    keras.backend.clear_session()
    source = transfer.base_model(build_model(_tiny(name), (32, 32, 3), 3))
    for w in source.weights:  # make the file differ from any fresh initialisation
        w.assign(w + np.random.default_rng(0).normal(0, 0.01, w.shape).astype(np.float32))
    path = tmp_path / f"{name}_no_top.h5"
    source.save_weights(path)
    get_spec(name).validate_weights(str(path))
    loaded = transfer.base_model(build_model(_tiny(name, weights=str(path)), (48, 48, 3), 3))
    assert len(loaded.weights) == len(source.weights)
    for a, b in zip(source.weights, loaded.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def test_weights_of_another_family_are_refused_naming_the_file(tmp_path):
    keras.backend.clear_session()
    path = tmp_path / "mobilenet_no_top.h5"
    transfer.base_model(build_model(_tiny("mobilenet"), (32, 32, 3), 3)).save_weights(path)
    with pytest.raises(WeightsError, match=r"mobilenet_no_top\.h5: could not load MobileNetV3Small weights"):
        build_model(_tiny("mobilenet_v3_small", weights=str(path)), (32, 32, 3), 3)


def test_weights_check_runs_before_building(tmp_path):
    spec = get_spec("resnet50")
    with pytest.raises(WeightsError, match="missing.h5: weights file not found"):
        spec.validate_weights(str(tmp_path / "missing.h5"))
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(WeightsError, match="notes.h5: not an HDF5 weights file"):
        spec.validate_weights(str(text))
    import h5py

    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(WeightsError, match="other.h5: an HDF5 file without Keras layer weights"):
        spec.validate_weights(str(tmp_path / "other.h5"))
    spec.validate_weights("none")
    spec.validate_weights("imagenet")


def test_imagenet_download_failure_says_to_pass_a_local_file(tmp_path, monkeypatch):
    """The real Keras download path, made to fail: an empty cache and an unreachable proxy."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # so urlopen reads the proxy settings above
    with pytest.raises(WeightsError, match="mobilenet: ImageNet weights could not be downloaded .* --weights PATH"):
        build_model(_tiny("mobilenet", weights="imagenet", img_size=128), (32, 32, 3), 3)
    assert not list((tmp_path / "keras").rglob("*.h5"))


def test_alpha_without_imagenet_weights_is_refused():
    with pytest.raises(ConfigError, match="alpha 0.5: mobilenet_v3_small has ImageNet weights only for alpha 0.75, 1"):
        ModelConfig(name="mobilenet_v3_small", alpha=0.5)
    assert ModelConfig(name="mobilenet_v3_small", alpha=0.5, weights="none").alpha == 0.5
    assert ModelConfig(name="mobilenet", alpha=0.25).weights == "imagenet"
    assert ModelConfig(name="vgg16").img_size == MODELS["vgg16"].defaults["img_size"]


# ---------------------------------------------------------------- train -> int8 export -> runtime


def _standardise_convs(base, base_input) -> None:
    """Data-dependent init of a base without BatchNorm (``vgg16``), in place: layer by layer, each
    ``Conv2D``'s kernel and bias are rescaled so its pre-activation has zero mean and unit variance
    per channel on ``base_input`` (the centring of Kraehenbuehl et al. 2015, "Data-dependent
    Initializations of Convolutional Neural Networks"; the scaling of Mishkin & Matas 2016, LSUV).

    Why: glorot-initialised ReLU convs without biases map every image to nearly the same direction
    (vgg16 at 32 px: mean cosine 0.98 between two images' features, all predicted as one class,
    measured), and their scale (0.08) left the head's first steps to the common direction;
    centred, unit-variance pre-activations (as BatchNorm gives the other bases) bring the cosine to
    0.77 and the scale to 1 (measured).
    """
    for conv in [layer for layer in base.layers if isinstance(layer, L.Conv2D) and layer.use_bias]:
        activation, conv.activation = conv.activation, keras.activations.linear
        pre = keras.Model(base.inputs, conv.output)(base_input).numpy()
        conv.activation = activation
        mean, std = pre.mean(axis=(0, 1, 2)), pre.std(axis=(0, 1, 2)) + 1e-6
        kernel, bias = conv.get_weights()
        conv.set_weights([kernel / std, (bias - mean) / std])


def _base_weights_for_the_test(model, images: np.ndarray, path) -> dict[str, list[np.ndarray]]:
    """Save ``model``'s base weights as the test's stand-in for pretrained weights (module docstring).

    If the fresh base gives every image the same features (feature std < 1e-6: the MobileNets),
    its BatchNorm moving statistics are first set to the batch statistics of ``images``, float32
    (N, H, W, 3) [0, 255] (one pass in training mode).

    Returns:
        base layer name -> its saved weights.
    """
    base = transfer.base_model(model)
    base_input = transfer.base_feed(model)(images)
    if float(np.std(base(base_input, training=False))) < 1e-6:
        set_base_bn_stats(model, images)
    if not any(isinstance(layer, L.BatchNormalization) for layer in base.layers):
        _standardise_convs(base, base_input)
    base.save_weights(path)
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers}


def _probability_correlation(float_probs: np.ndarray, int8_probs: np.ndarray, min_std: float = 1e-6) -> float:
    """Mean over classes of the Pearson correlation, across images, between the float model's and an
    int8 file's probability of that class; float (N, C) each. Classes whose float probability varies
    less than ``min_std`` (std across the images) are left out, and so are classes the int8 file gives
    one value; 0.0 when none is left. A faithful int8 file tracks the float model's image-to-image
    changes even when both favour one class (where top-1 agreement says nothing)."""
    rs = [np.corrcoef(float_probs[:, c], int8_probs[:, c])[0, 1] for c in range(float_probs.shape[1])
          if float_probs[:, c].std() > max(min_std, 1e-6) and int8_probs[:, c].std() > 1e-6]
    return float(np.mean(rs)) if rs else 0.0


@pytest.fixture(scope="module")
def roundtrip(tiny_data_dir, tmp_path_factory):
    """name -> (model_dir, ExportResult, the base weights it started from), made on first use: a tiny
    two-phase run from usable base weights (through --weights PATH), then int8 TFLite + int8 ONNX
    export through the gate."""
    from edgeclf.data import AugmentConfig, DataConfig, load_dataset
    from edgeclf.export import ExportConfig, Precision, export_model
    from edgeclf.train import train
    from edgeclf.train.config import TrainConfig

    data = DataConfig(source=str(tiny_data_dir), val_split=0.1, seed=0)
    x_train = load_dataset(data, progress=False).x_train.astype(np.float32)
    out = tmp_path_factory.mktemp("backbones")
    done: dict = {}

    def make(name: str):
        if name not in done:
            keras.backend.clear_session()
            weights = out / f"{name}_base.h5"
            keras.utils.set_random_seed(0)
            start = _base_weights_for_the_test(build_model(_tiny(name), (32, 32, 3), 3), x_train[:128], weights)
            cfg = TrainConfig.from_recipe(
                _tiny(name, weights=str(weights)), {}, data=data, augment=AugmentConfig(flip=True, translate_px=2),
                head_epochs=1, epochs=1, fine_tune_layers=get_spec(name).recipe["fine_tune_layers"], batch_size=32,
                lr=3e-3, fine_tune_lr=1e-3, name=name, out=str(out), seed=0)
            result = train(cfg, progress=False)
            # the float model is near chance on the test images (random-feature base), so an accuracy
            # difference is noise: the gate only has to let the files through; what the test asserts is
            # the top-1 agreement with the float model (MIN_AGREEMENT)
            export = export_model(result.model_dir, ExportConfig(precisions=(Precision.INT8,), calibration_samples=32,
                                                                 max_accuracy_drop_pp=100.0), progress=False)
            done[name] = result.model_dir, export, start
        return done[name]

    yield make
    shutil.rmtree(out, ignore_errors=True)


#: round trips run as their own pytest-xdist scope (``make test``: ``--dist loadscope`` groups a class's
#: tests apart from its module's functions), so the two workers share this file's ~8 min of round trips
#: (CI on 2 cores, 2026-12-02: resnet50 115 s, efficientnetv2_b0 100 s, mobilenet_v3_large 71 s, vgg16
#: 53 s, mobilenet_v2 50 s, mobilenet_v3_small 50 s, mobilenet 24 s)
SECOND_SCOPE = ("efficientnetv2_b0", "vgg16", "mobilenet_v3_small", "mobilenet")


@pytest.mark.parametrize("name", _params([n for n in BACKBONES if n not in SECOND_SCOPE]))
def test_backbone_trains_exports_int8_and_the_runtime_reproduces_it(roundtrip, name):
    _check_round_trip(roundtrip, name)


class TestRoundTripSecondScope:
    """The same round trip for :data:`SECOND_SCOPE` (a class only so that xdist can run it in the other worker)."""

    @pytest.mark.parametrize("name", _params([n for n in BACKBONES if n in SECOND_SCOPE]))
    def test_backbone_trains_exports_int8_and_the_runtime_reproduces_it(self, roundtrip, name):
        _check_round_trip(roundtrip, name)


def _check_round_trip(roundtrip, name: str) -> None:
    """Trained as the recipe says, both int8 files pass the gate, and the runtime reproduces the float model."""
    from edgeclf.data import load_dataset
    from edgeclf.models.io import load_keras_model
    from edgeclf.runtime import load_classifier
    from edgeclf.train.config import load_config

    model_dir, export, start = roundtrip(name)
    model = load_keras_model(model_dir)
    # trained as the recipe says: phase 2 changed some of the last N base layers, nothing before them,
    # and no BatchNorm statistics (inference mode)
    base_layers = transfer.base_model(model).layers
    last = get_spec(name).recipe["fine_tune_layers"]
    changed = {layer.name for layer in base_layers
               if layer.weights and any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), start[layer.name]))}
    assert changed <= {layer.name for layer in base_layers[_first_fine_tuned(base_layers, last):]}
    cfg = load_config(model_dir)
    if not cfg.train_bn:  # the recipe's --train-bn (mobilenet_v2) lets BatchNorm learn
        assert not any(isinstance(model_layer, L.BatchNormalization) for model_layer in
                       (transfer.base_model(model).get_layer(n) for n in changed))

    assert [(a.file, a.status.value) for a in export.artifacts] == [("model_int8.tflite", "ok"),
                                                                   ("model_int8.onnx", "ok")]
    assert export.failures == {}
    x = load_dataset(cfg.data, progress=False).x_test.astype(np.float32)
    float_probs = model.predict(x, verbose=0)
    float_top1 = float_probs.argmax(1)
    # two or more classes predicted for 5+ images each: otherwise top-1 agreement would be trivial and
    # only the probability correlation checks the int8 file
    spread = (np.bincount(float_top1, minlength=3) >= 5).sum() >= 2
    for artifact in ("model_int8.tflite", "model_int8.onnx"):
        clf = load_classifier(model_dir, artifact=artifact)
        try:
            probs = clf.predict(x)
            # the quantization step of the file's probability output: 1/256 for the int8 TFLite's uint8
            # output, 0 for the int8 ONNX's float Softmax. Classes whose float probability varies less are
            # left out: no file could track them (efficientnetv2_b0's near-constant model, MIN_PROB_CORRELATION)
            step = clf.output_tensor.scale or 0.0
        finally:
            clf.close()
        if not (float_probs.std(0) > max(step, 1e-6)).any():
            # near-constant for this file: its top-1 is decided by rounding (ties of uint8 probabilities), so
            # all that can be checked is that it gives the float model's values, to a few steps
            np.testing.assert_allclose(probs, float_probs, atol=NEAR_CONSTANT_STEPS * step, err_msg=artifact)
            continue
        r = _probability_correlation(float_probs, probs, min_std=step)
        assert r >= MIN_PROB_CORRELATION, f"{artifact}: probability correlation with the float model {r:.3f}"
        agreement = float(np.mean(probs.argmax(1) == float_top1))
        if name not in AGREEMENT_UNINFORMATIVE:
            assert not spread or agreement >= MIN_AGREEMENT, f"{artifact}: top-1 agreement {agreement:.3f}"
