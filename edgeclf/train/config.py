"""Typed, validated training configuration (saved as ``config.json`` in the model directory).

Imports no TensorFlow: export, bench and the CLI read a model directory's config through here.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgeclf._cpuinfo import cpu_flags
from edgeclf.data.config import AugmentConfig, DataConfig
from edgeclf.errors import ConfigError
from edgeclf.models.config import ModelConfig
from edgeclf.models.registry import get_spec


class Optimizer(str, enum.Enum):
    ADAM = "adam"
    SGD = "sgd"


class ClassWeight(str, enum.Enum):
    NONE = "none"
    BALANCED = "balanced"


class Distribute(str, enum.Enum):
    """How training is spread over devices and machines (``tf.distribute``; :mod:`edgeclf.train.distribute`).

    ``NONE``: the default device. ``MIRRORED``: ``MirroredStrategy``, every GPU of this machine
    (synchronous data parallelism). ``MULTI_WORKER``: ``MultiWorkerMirroredStrategy`` across the
    machines ``TF_CONFIG`` lists (docs/distributed.md).
    """

    NONE = "none"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi-worker"


class TeacherTargets(str, enum.Enum):
    """Where a distillation teacher's outputs come from (see :mod:`edgeclf.train.distill`).

    ``CACHED``: computed once, on the un-augmented training images, before training (cheaper; the
    student sees an augmented image but the teacher's answer for the plain one).
    ``PER_BATCH``: computed for every augmented training batch, on the same augmented images the
    student sees (one teacher forward pass per image per epoch).
    """

    CACHED = "cached"
    PER_BATCH = "per-batch"


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a trained edgeclf model (Hinton, Vinyals & Dean 2015).

    Loss = ``alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(labels)``,
    with ``z = log p`` of the teacher's / student's probabilities and the recipe's label smoothing
    in the cross-entropy.

    With several teachers the teacher's probabilities are their mean (an ensemble teacher; Hinton et
    al. 2015, section 3, distil an ensemble into one model); with ``tta`` each teacher's probabilities
    are the mean over the image and its horizontal mirror (flip test-time augmentation, as
    ``edgeclf predict --tta``).

    Attributes:
        teacher: the teachers' model directories (each with ``model.keras`` and ``labels.txt``), one
            or more; each must take the same input size and classes as the student. A single path
            string is accepted and stored as a 1-tuple.
        alpha: weight of the distillation term, in (0, 1].
        temperature: softmax temperature ``T`` > 0 (``T = 1``: the teacher's probabilities as they are).
        targets: ``cached`` or ``per-batch`` teacher outputs (:class:`TeacherTargets`).
        tta: average each teacher over the image and its horizontal mirror.
    """

    teacher: tuple[str, ...]
    alpha: float = 0.9
    temperature: float = 4.0
    targets: TeacherTargets = TeacherTargets.CACHED
    tta: bool = False

    def __post_init__(self) -> None:
        teachers = (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher or ())
        object.__setattr__(self, "teacher", tuple(str(t) for t in teachers))
        if not self.teacher or not all(self.teacher):
            raise ConfigError("distillation needs a teacher model directory")
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"distill_alpha must be in (0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        try:
            object.__setattr__(self, "targets", TeacherTargets(self.targets))
        except ValueError:
            raise ConfigError(f"teacher targets must be one of {', '.join(t.value for t in TeacherTargets)}, "
                              f"got {self.targets!r}") from None

    def to_dict(self) -> dict:
        return {**asdict(self), "teacher": list(self.teacher), "targets": self.targets.value}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    Attributes:
        model, data, augment: sub-configs.
        epochs: training epochs (two-phase models: phase-2 fine-tuning epochs).
        head_epochs: two-phase models, phase 1: epochs with the base frozen (0 skips it).
        fine_tune_layers: two-phase models, phase 2: number of last base layers trained (-1 = all).
        train_bn: two-phase models, phase 2: also train the scale and offset (gamma, beta) of the
            BatchNormalization layers among them; their moving statistics stay fixed (inference
            mode), and the saved model has them frozen again.
        batch_size: images per step.
        optimizer: ``adam`` or ``sgd`` (Nesterov, momentum 0.9).
        lr: peak learning rate. The schedule warms up linearly for ``warmup_fraction`` of the steps
            then follows a cosine decay to 0 (one-cycle, Smith & Topin 2017).
        fine_tune_lr: peak learning rate of phase 2 (two-phase models).
        weight_decay: decoupled weight decay (Loshchilov & Hutter 2019); not applied to BN/biases.
        label_smoothing: label smoothing of the cross-entropy (Szegedy et al. 2016).
        mixup_alpha: mixup of the training batches (Zhang et al. 2018), lam ~ Beta(alpha, alpha) per
            batch (:mod:`edgeclf.train.mixup`); 0 = off. Not with ``distill``.
        ema_decay: exponential moving average of the weights in the last phase, decay per optimizer
            step in [0, 1) (:mod:`edgeclf.train.ema`): validated with, and saved as, the model; 0 = off.
        progressive_size: progressive resizing in the last phase (:mod:`edgeclf.train.progressive`):
            its first ``floor(progressive_fraction x epochs)`` epochs train at this input size in
            pixels, the rest at the model's ``img_size`` (transfer models whose input is resized);
            None = off.
        progressive_fraction: the share of the last phase's epochs at ``progressive_size``, in (0, 1).
        patience: early stopping on validation top-1 accuracy (best weights restored); 0 disables.
        class_weight: ``balanced`` weights the loss by inverse class frequency.
        mixed_precision: train in ``mixed_bfloat16``; the saved model is always float32. ``"auto"``
            (the ``cnn`` recipes) is resolved on construction to True where the CPU has native
            bf16 dot products (:data:`BF16_FLAGS`), else False: see :func:`resolve_mixed_precision`.
        seed: seeds Python/NumPy/TensorFlow and the data splits.
        distill: knowledge distillation from a teacher model (None = plain training).
        distribute: ``none``, ``mirrored`` or ``multi-worker`` (:class:`Distribute`); ``batch_size``
            is the global batch, split across the replicas, so ``lr`` needs no change for the same
            batch size (raise both together, linearly, to keep per-replica batches large: Goyal et
            al. 2017).
        time_budget_hours: wall-clock budget of the whole run in hours (None = none): the last
            phase's epochs are re-planned after each epoch so the run ends within it, the learning-rate
            schedule shortened to still decay to 0, or lengthened again when later epochs measure
            faster (:mod:`edgeclf.train.budget`); never more epochs than ``epochs``. Not with
            ``distribute`` multi-worker.
        name, out: the model directory is ``out/name``; the run's checkpoint is ``out/.name.partial``.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 15
    head_epochs: int = 1
    fine_tune_layers: int = -1
    train_bn: bool = False
    batch_size: int = 256
    optimizer: Optimizer = Optimizer.SGD
    lr: float = 0.2
    fine_tune_lr: float = 1e-4
    warmup_fraction: float = 0.15
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0
    ema_decay: float = 0.0
    progressive_size: int | None = None
    progressive_fraction: float = 0.5
    patience: int = 0
    class_weight: ClassWeight = ClassWeight.NONE
    mixed_precision: bool | str = False
    seed: int = 42
    distill: DistillConfig | None = None
    distribute: Distribute = Distribute.NONE
    time_budget_hours: float | None = None
    name: str = ""
    out: str = "export"

    def __post_init__(self) -> None:
        if self.epochs < 1 and not (get_spec(self.model.name).two_phase and self.head_epochs > 0):
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0 or self.fine_tune_lr <= 0:
            raise ConfigError("learning rates must be > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup_alpha < 0:
            raise ConfigError(f"mixup_alpha must be >= 0, got {self.mixup_alpha}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.mixup_alpha and self.distill is not None:
            raise ConfigError("mixup does not combine with distillation (the teacher's targets are not mixed); "
                              "drop --mixup or --teacher")
        if self.head_epochs < 0 or self.patience < 0:
            raise ConfigError("head_epochs and patience must be >= 0")
        if self.progressive_size is not None:
            if "img_size" not in get_spec(self.model.name).options:
                raise ConfigError(f"--progressive-size needs a model with --img-size (a transfer model), "
                                  f"not {self.model.name}")
            if not 32 <= self.progressive_size < self.model.img_size:
                raise ConfigError(f"--progressive-size must be >= 32 and below the model's --img-size "
                                  f"{self.model.img_size}, got {self.progressive_size}")
        if not 0 < self.progressive_fraction < 1:
            raise ConfigError(f"--progressive-fraction must be in (0, 1), got {self.progressive_fraction}")
        if self.model.bn_batch_stats and not self.train_bn:
            raise ConfigError("--bn-batch-stats needs --train-bn (only trainable BatchNorm layers use batch statistics)")
        if self.time_budget_hours is not None and not self.time_budget_hours > 0:
            raise ConfigError(f"time_budget_hours must be > 0, got {self.time_budget_hours}")
        object.__setattr__(self, "mixed_precision", resolve_mixed_precision(self.mixed_precision))
        try:
            object.__setattr__(self, "distribute", Distribute(self.distribute))
        except ValueError:
            raise ConfigError(f"distribute must be one of {', '.join(d.value for d in Distribute)}, "
                              f"got {self.distribute!r}") from None
        if self.time_budget_hours is not None and self.distribute is Distribute.MULTI_WORKER:
            # each worker would time its own epochs and could plan a different number: the collectives
            # of the one that stopped first would leave the others waiting for ever
            raise ConfigError("time_budget_hours does not work with distribute multi-worker (the workers would "
                              "each plan their own epochs); set --epochs instead")
        if self.patience and self.data.val_split == 0:
            raise ConfigError("patience (early stopping on validation accuracy) needs a validation split; "
                             "set val_split > 0 or patience 0")

    @property
    def run_name(self) -> str:
        """``name`` or ``<dataset>-<model>``."""
        if self.name:
            return self.name
        src = self.data.source.rstrip("/").split("/")[-1] or "data"
        return f"{src}-{self.model.name}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["optimizer"] = self.optimizer.value
        d["class_weight"] = self.class_weight.value
        d["distribute"] = self.distribute.value
        d["data"] = self.data.to_dict()
        d["distill"] = self.distill.to_dict() if self.distill else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d["model"])
        d["data"] = DataConfig.from_dict(d["data"])
        d["augment"] = AugmentConfig.from_dict(d["augment"])
        d["optimizer"] = Optimizer(d["optimizer"])
        d["class_weight"] = ClassWeight(d["class_weight"])
        d["distill"] = DistillConfig(**d["distill"]) if d.get("distill") else None
        return cls(**d)

    @classmethod
    def from_recipe(cls, model: ModelConfig, given: dict | None = None, **fields) -> TrainConfig:
        """The model spec's default recipe, overridden by the non-None values of ``given`` and by ``fields``.

        ``given`` holds options a user may or may not have set (None = use the recipe); ``fields``
        are always applied. Enum fields accept their string values.

        Raises:
            ConfigError: unknown model, unknown field or an invalid value.
        """
        values = {**get_spec(model.name).recipe, **{k: v for k, v in (given or {}).items() if v is not None},
                  **fields}
        if (values.get("distribute") in (Distribute.MULTI_WORKER, Distribute.MULTI_WORKER.value)
                and values.get("time_budget_hours") is not None
                and (given or {}).get("time_budget_hours") is None and "time_budget_hours" not in fields):
            values["time_budget_hours"] = None  # the recipe's budget; multi-worker training cannot re-plan
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)} - {"model"})
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
        try:
            if "optimizer" in values:
                values["optimizer"] = Optimizer(values["optimizer"])
            if "class_weight" in values:
                values["class_weight"] = ClassWeight(values["class_weight"])
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(model=model, **values)

    def with_(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)


#: ``/proc/cpuinfo`` flags of x86 CPUs whose oneDNN kernels compute bf16 natively (AVX512-BF16 on Zen 4
#: and Cooper Lake and later, AMX-BF16 on Sapphire Rapids and later).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_mixed_precision(value: bool | str) -> bool:
    """``mixed_precision`` as a bool: True/False as given; ``"auto"``: True iff this CPU has a flag in
    :data:`BF16_FLAGS` (``EDGECLF_CPU_FLAGS`` overrides what is read, as in :mod:`edgeclf._cpuinfo`).

    Why per CPU and per model (``cnn`` full CIFAR-10 epochs, batch 512, 2 cores, measured): on an AMD EPYC
    Zen 4 (AVX512-BF16) 375 against 222 images/s in float32 (docs/results.md, round 2); on an Intel Xeon with AMX
    357 against 172 images/s (``benchmarks/results/training-throughput/``); on an AVX2-only EPYC bf16 was
    ~5x *slower* (emulated). ``mobilenet_v2`` (depthwise convolutions) was not faster in bf16 on either
    bf16 CPU, so the transfer recipes keep float32.

    Raises:
        ConfigError: a value other than True, False or ``"auto"``.
    """
    if isinstance(value, bool):
        return value
    if value == "auto":
        return bool(cpu_flags() & BF16_FLAGS)
    raise ConfigError(f"mixed_precision must be true, false or 'auto', got {value!r}")


def load_config(model_dir: Path) -> TrainConfig:
    """Read ``MODEL_DIR/config.json`` (also a run checkpoint's ``config.json``).

    Raises:
        FileNotFoundError / ConfigError: missing or malformed config (message names the file).
    """
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {model_dir} an edgeclf model directory?)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: malformed config ({exc})") from None


_BUILTIN_SOURCES = ("cifar10", "fashion_mnist")  # the Keras-loaded datasets of edgeclf.data (no path)


def saved_data_config(model_dir: Path, cfg: TrainConfig, data: str | None = None) -> DataConfig:
    """The data a saved run names (``cfg.data`` from ``MODEL_DIR/config.json``), or ``data`` instead.

    A directory that config.json names must exist: a relative path there was relative to the
    working directory of the training run, which the error says, with where it came from.

    Raises:
        DataError: config.json names a directory that does not exist (and ``data`` is None); the
            message names the path, config.json, and for a relative path the directory it was
            resolved against.
    """
    from edgeclf.errors import DataError

    if data:
        return replace(cfg.data, source=data)
    src = cfg.data.source
    path = Path(src).expanduser()
    if src in _BUILTIN_SOURCES or path.is_dir():
        return cfg.data
    where = f"named in {Path(model_dir) / 'config.json'}"
    if not path.is_absolute():
        where += f" as a relative path, resolved against the current directory {Path.cwd()}"
    raise DataError(f"{src}: data directory not found ({where}); pass --data DIR")


def check_num_classes(model_file: Path, model_classes: int, source: str, class_names: list[str]) -> None:
    """Refuse data whose number of classes differs from the model's output width.

    Raises:
        DataError: naming the data ``source`` and its classes, and ``model_file`` and its class count.
    """
    from edgeclf.errors import DataError

    if len(class_names) != model_classes:
        shown = ", ".join(class_names[:10]) + (", ..." if len(class_names) > 10 else "")
        raise DataError(f"{source}: {len(class_names)} classes ({shown}) but the model {model_file} has "
                        f"{model_classes} output classes; use data with the model's classes")
