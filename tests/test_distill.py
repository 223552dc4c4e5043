"""Knowledge distillation (``edgeclf train --teacher``): the loss against its formula, a student
that follows a teacher which disagrees with the labels, both ways of getting the teacher's outputs,
the saved model being the plain student, and refusals of teachers that don't fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _cli import run_cli as _run_cli

from edgeclf._keras import keras, tf
from edgeclf.data import AugmentConfig, DataConfig, load_dataset
from edgeclf.errors import ConfigError
from edgeclf.models import ModelConfig
from edgeclf.models.io import load_keras_model
from edgeclf.train import load_config, train
from edgeclf.train.config import DistillConfig, Optimizer, TeacherTargets, TrainConfig
from edgeclf.train.distill import distillation_loss, load_teacher
from edgeclf.train.evaluate import predict_probs

PERMUTATION = np.array([1, 2, 0])  # the teacher calls class 0 "1", 1 "2" and 2 "0": never the label


def _cfg(data_dir: Path, out: Path, name: str, distill: DistillConfig | None = None, **kw) -> TrainConfig:
    base = {"model": ModelConfig(name="cnn", width=4, dropout=0.0),
            "data": DataConfig(source=str(data_dir), val_split=0.1, seed=0),
            "augment": AugmentConfig(flip=True, translate_px=2), "epochs": 2, "batch_size": 32,
            "optimizer": Optimizer.ADAM, "lr": 3e-3, "weight_decay": 0.0, "label_smoothing": 0.1,
            "name": name, "out": str(out), "seed": 0, "distill": distill}
    base.update(kw)
    return TrainConfig(**base)


#: The teacher's logits are SHARPEN x the tiny model's permuted probabilities: the tiny model's own top-1
#: probability is ~0.44 on half the test images, too flat for its top-1 to be a target (students' agreement
#: with it ranged 0.41-0.74 over 6 seeds without a validation split); sharpened, the median is ~0.96 and the
#: agreement 0.91-0.97 (2026-12-05, Zen 4).
SHARPEN = 20.0


@pytest.fixture(scope="module")
def teacher_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The session's tiny model with its outputs permuted and sharpened (a confident teacher the labels
    contradict): ``softmax(SHARPEN * p[:, PERMUTATION^-1])``."""
    model = load_keras_model(tiny_model_dir)
    inputs = keras.Input(model.input_shape[1:])
    permute = keras.layers.Dense(3, use_bias=False, name="permute")
    teacher = keras.Model(inputs, keras.layers.Softmax(name="sharpen")(permute(model(inputs))))
    matrix = np.zeros((3, 3), np.float32)
    matrix[np.arange(3), PERMUTATION] = SHARPEN
    permute.set_weights([matrix])
    d = tmp_path_factory.mktemp("teacher")
    teacher.save(d / "model.keras")
    shutil.copy(tiny_model_dir / "labels.txt", d / "labels.txt")
    return d


@pytest.fixture(scope="module")
def students(tiny_data_dir, teacher_dir, tmp_path_factory):
    """The same student (seed, data, recipe) trained without and with the teacher, both target modes.

    No validation split: with one, training keeps the epoch of best validation top-1 against the labels,
    which for a student of this label-contradicting teacher is its first, least distilled one (the
    agreement this tests then varied 0.34-0.81 with the seed)."""
    out = tmp_path_factory.mktemp("students")
    kw = {"data": DataConfig(source=str(tiny_data_dir), val_split=0.0, seed=0), "epochs": 4}
    runs = {"plain": train(_cfg(tiny_data_dir, out, "plain", **kw), progress=False)}
    for targets in TeacherTargets:
        d = DistillConfig(str(teacher_dir), alpha=0.9, temperature=2.0, targets=targets)
        runs[targets.value] = train(_cfg(tiny_data_dir, out, f"kd-{targets.value}", d, **kw), progress=False)
    return runs


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p || q) in nats over rows."""
    return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))


@pytest.mark.parametrize("targets", ["cached", "per-batch"])
def test_distilled_student_follows_the_teacher(students, teacher_dir, tiny_data_dir, targets):
    ds = load_dataset(DataConfig(source=str(tiny_data_dir), val_split=0.1, seed=0), progress=False)
    p_teacher = predict_probs(load_keras_model(teacher_dir), ds.x_test)
    assert (p_teacher.argmax(1) == ds.y_test).mean() < 0.2  # the teacher contradicts the labels

    def follow(run):
        p = predict_probs(load_keras_model(run.model_dir), ds.x_test)
        return (p.argmax(1) == p_teacher.argmax(1)).mean(), _kl(p_teacher, p)

    plain_agree, plain_kl = follow(students["plain"])
    kd_agree, kd_kl = follow(students[targets])
    assert kd_agree > plain_agree + 0.4, (kd_agree, plain_agree)
    assert kd_kl < plain_kl / 2, (kd_kl, plain_kl)


def test_saved_model_is_the_plain_student_and_config_records_distillation(students, teacher_dir):
    plain, kd = students["plain"], students["cached"]
    m_plain, m_kd = load_keras_model(plain.model_dir), load_keras_model(kd.model_dir)
    assert [type(layer).__name__ for layer in m_kd.layers] == [type(layer).__name__ for layer in m_plain.layers]
    assert m_kd.count_params() == m_plain.count_params()
    assert kd.metrics["params"] == plain.metrics["params"] and kd.metrics["teacher"] == [str(teacher_dir)]
    cfg = load_config(kd.model_dir)
    assert cfg.distill == DistillConfig(str(teacher_dir), alpha=0.9, temperature=2.0, targets=TeacherTargets.CACHED)
    raw = json.loads((kd.model_dir / "config.json").read_text())
    assert raw["distill"] == {"teacher": [str(teacher_dir)], "alpha": 0.9, "temperature": 2.0, "targets": "cached",
                              "tta": False}
    # a config.json written before ensembles (one teacher as a string) still loads
    assert DistillConfig(**{**raw["distill"], "teacher": str(teacher_dir)}) == cfg.distill
    assert load_config(plain.model_dir).distill is None


@pytest.mark.parametrize("alpha, temperature, smoothing", [(0.9, 4.0, 0.1), (0.5, 1.0, 0.0), (1.0, 2.5, 0.0)])
def test_distillation_loss_is_hinton_et_al(alpha, temperature, smoothing):
    rng = np.random.default_rng(0)
    c = 5
    z_s, z_t = rng.normal(0, 3, (8, c)), rng.normal(0, 3, (8, c))
    labels = rng.integers(0, c, 8)

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p_s, p_t = softmax(z_s), softmax(z_t)
    y = np.eye(c)[labels]
    y_smooth = y * (1 - smoothing) + smoothing / c
    ce = -np.sum(y_smooth * np.log(p_s), axis=1)
    # the KL between the softened *logits* (the method as published), not between the probabilities
    kl = np.sum(softmax(z_t / temperature) * (np.log(softmax(z_t / temperature)) - np.log(softmax(z_s / temperature))),
                axis=1)
    expected = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    loss = distillation_loss(c, alpha, temperature, smoothing)
    got = loss(tf.constant(np.concatenate([y, p_t], 1), tf.float32), tf.constant(p_s, tf.float32)).numpy()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)


def test_teacher_with_other_classes_or_input_size_is_refused(tiny_data_dir, teacher_dir, tmp_path):
    other = Path(shutil.copytree(teacher_dir, tmp_path / "other-classes"))
    (other / "labels.txt").write_text("a\nb\nc\n")
    with pytest.raises(ConfigError, match=f"teacher {other}: classes"):
        train(_cfg(tiny_data_dir, tmp_path / "out", "x", DistillConfig(str(other))), progress=False)
    with pytest.raises(ConfigError, match=rf"teacher {teacher_dir}: input 32x32x3 differs from the student's "
                                          r"24x24x3; train the student with --input-size 32x32"):
        train(_cfg(tiny_data_dir, tmp_path / "out", "x", DistillConfig(str(teacher_dir)),
                   data=DataConfig(source=str(tiny_data_dir), image_size=(24, 24), seed=0)), progress=False)
    assert not (tmp_path / "out").exists()  # nothing written, no checkpoint left behind


@pytest.mark.parametrize("args, message", [
    (["--distill-alpha", "0.5"], "--distill-alpha only applies with --teacher"),
    (["--temperature", "2", "--teacher-targets", "cached"], "--temperature, --teacher-targets only apply with"),
    (["--teacher-tta"], "--teacher-tta only applies with --teacher"),
    (["--teacher", "t", "--distill-alpha", "0"], "distill_alpha must be in (0, 1]"),
    (["--teacher", "t", "--temperature", "-1"], "temperature must be > 0"),
])
def test_cli_distillation_usage_errors(args, message, tmp_path):
    r = _run_cli(["train", "--data", tmp_path / "unused", "--out", tmp_path / "out", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Usage:" in r.output


def test_ensemble_teacher_with_tta_is_the_mean_over_teachers_and_mirrors(teacher_dir, tiny_model_dir, tiny_data_dir):
    ds = load_dataset(DataConfig(source=str(tiny_data_dir), seed=0))
    x = ds.x_test[:16].astype(np.float32)
    singles = [predict_probs(load_keras_model(d), v) for d in (teacher_dir, tiny_model_dir)
               for v in (x, x[:, :, ::-1])]  # the mirror reverses the width axis of NHWC
    assert not np.allclose(singles[0], singles[1], atol=1e-3)  # the mirror is another input to the teacher
    t = load_teacher(DistillConfig((str(teacher_dir), str(tiny_model_dir)), tta=True), ds.input_shape,
                     ds.class_names)
    got = predict_probs(t.model, x)
    np.testing.assert_allclose(got, np.mean(singles, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    assert not t.model.trainable and t.source == f"{teacher_dir}, {tiny_model_dir}"
    one = load_teacher(DistillConfig(str(teacher_dir), tta=True), ds.input_shape, ds.class_names)
    np.testing.assert_allclose(predict_probs(one.model, x), (singles[0] + singles[1]) / 2, rtol=1e-5, atol=1e-6)
    # two runs of one architecture (the same layer names) combine too
    twice = load_teacher(DistillConfig((str(tiny_model_dir), str(tiny_model_dir))), ds.input_shape, ds.class_names)
    np.testing.assert_allclose(predict_probs(twice.model, x), singles[2], rtol=1e-5, atol=1e-6)


def test_cli_train_with_teacher(tiny_data_dir, teacher_dir, tiny_model_dir, tmp_path):
    r = _run_cli(["train", "--data", tiny_data_dir, "--limit", 60, "--epochs", 1, "--width", 4, "--batch-size", 16,
                  "--optimizer", "adam", "--lr", 3e-3, "--teacher", teacher_dir, "--teacher", tiny_model_dir,
                  "--teacher-tta", "--temperature", 3, "--teacher-targets", "per-batch", "--name", "kd", "--out", tmp_path])
    assert r.exit_code == 0, r.output
    cfg = load_config(tmp_path / "kd")
    assert cfg.distill == DistillConfig((str(teacher_dir), str(tiny_model_dir)), alpha=0.9, temperature=3.0,
                                        targets=TeacherTargets.PER_BATCH, tta=True)
