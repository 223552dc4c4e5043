"""Typed configuration and result types of ``edgeclf bench`` (pure Python, no TensorFlow)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeclf.errors import ConfigError
from edgeclf.runtime.manifest import DEFAULT_ARTIFACTS, Format, Precision


class Status(str, enum.Enum):
    """Outcome of one table row. Only ``OK`` rows passed everything."""

    OK = "ok"
    NOT_EXPORTED = "not exported"            # expected (format, kind) absent from manifest.json
    FILE_MISSING = "file missing"            # listed in manifest.json, but the file is gone
    EXPORT_FAILED = "export failed"          # a conversion the bench runs itself (the baseline row) failed
    VALIDATION_FAILED = "validation failed"  # the export's own validation rejected it (measured anyway)
    LOAD_FAILED = "load failed"              # the engine cannot open the file
    RUN_FAILED = "run failed"                # opened, but inference crashed or timed out
    BELOW_MIN_ACCURACY = "below min accuracy"
    NO_GPU = "no GPU"                        # the GPU original row on a machine without a GPU: not measured


def default_expected() -> tuple[tuple[str, str], ...]:
    """(format, kind) rows a full benchmark expects: every default artifact plus a pruned int8 file per
    format, in table order, e.g. ``("tflite", "int8")``, ``("tflite", "pruned-int8")``."""
    out: list[tuple[str, str]] = []
    for fmt in dict.fromkeys(f for f, _ in DEFAULT_ARTIFACTS):
        out += [(fmt.value, p.value) for f, p in DEFAULT_ARTIFACTS if f is fmt]
        if (fmt, Precision.INT8) in DEFAULT_ARTIFACTS:
            out.append((fmt.value, f"pruned-{Precision.INT8.value}"))
    return tuple(out)


# Every column of bench.md / bench.csv, in order. Units are in the names.
COLUMNS = (
    "format", "precision", "file", "engine", "device", "threads", "status",
    "size_bytes", "size_gzip_bytes", "top1_acc", "acc_drop_pp", "top1_agreement",
    "latency_ms_p50", "latency_ms_p95", "batch_size", "throughput_ips", "speedup_vs_original",
    "peak_rss_mb", "detail",
)


@dataclass(frozen=True)
class TimingConfig:
    """How latency and throughput are measured (inside each worker process).

    Raises ConfigError on construction for iteration counts < 1 or ``max_seconds < min_seconds``.

    Attributes:
        warmup_iters: untimed calls before timing (at least this many ...).
        warmup_seconds: ... and for at least this long.
        min_iters: timed batch-1 calls: at least this many ...
        min_seconds: ... and for at least this long (whichever takes longer) ...
        max_seconds: ... but stop after this long even if ``min_iters`` is not reached (slow
            models such as Keras ``model.predict``); the row records the iteration count.
        throughput_min_iters, throughput_min_seconds: the same for the batch-N throughput loop.
    """

    warmup_iters: int = 20
    warmup_seconds: float = 0.5
    min_iters: int = 200
    min_seconds: float = 2.0
    max_seconds: float = 60.0
    throughput_min_iters: int = 10
    throughput_min_seconds: float = 2.0

    def __post_init__(self) -> None:
        if min(self.warmup_iters, self.min_iters, self.throughput_min_iters) < 1:
            raise ConfigError("warm-up and timed iteration counts must be >= 1")
        if self.max_seconds < self.min_seconds:
            raise ConfigError(f"max_seconds ({self.max_seconds}) must be >= min_seconds ({self.min_seconds})")

    @classmethod
    def quick(cls) -> TimingConfig:
        """A few repeats only: for tests and smoke runs, not for numbers anyone should quote."""
        return cls(warmup_iters=3, warmup_seconds=0.0, min_iters=20, min_seconds=0.05, max_seconds=5.0,
                   throughput_min_iters=2, throughput_min_seconds=0.0)


@dataclass(frozen=True)
class BenchConfig:
    """What ``run_bench`` measures and where it writes.

    Raises ConfigError on construction for threads/batch_size/test_samples < 1, min_accuracy < 0 or
    an ``expected`` format that is not a :class:`~edgeclf.runtime.manifest.Format` value.

    Attributes:
        out_dir: results directory (bench.md, bench.csv, bench.json, machine.json, *.png);
            None = ``benchmarks/results/<model name>``.
        work_dir: scratch files (test images as .npy, per-worker outputs, the reference
            ``baseline_default.tflite``); None = a temporary directory removed afterwards.
        data: test data source overriding the model's config.json (``cifar10`` or a directory).
        test_samples: stratified subset of at most N test images (None = the full test split).
        threads: engine CPU threads for every row (TF intra-op threads for the Keras rows).
        batch_size: images per call of the throughput measurement.
        min_accuracy: rows whose top1_acc is below this fail (status "below min accuracy").
        keras: also measure the float original (model.predict and tf.function rows on the CPU, and the
            tf.function row on the first GPU TensorFlow sees, or a "no GPU" row without one).
        baseline: also convert and measure the plain default-converter reference TFLite.
        expected: (format, kind) pairs that should exist; missing ones get a "not exported"
            row. kind is a precision ("fp32", "int8", ...) or "pruned-int8". Default:
            :func:`default_expected`.
        timing: the timing method (see :class:`TimingConfig`).
        worker_timeout_s: a worker running longer than this is killed (row "run failed").
        seed: seed of the test subset.
        verify: check every listed artifact's sha256 against manifest.json before measuring
            (:func:`edgeclf.runtime.loader.verify_artifact`); a mismatch refuses the whole run.
        tta: flip test-time augmentation in every row (:attr:`edgeclf.runtime.base.Classifier.tta`):
            top-1 from the mean of each image's and its mirror's probabilities; latency and
            throughput include both inferences (a batch of 2 per image, or 2 calls on a batch-1 model).
    """

    out_dir: Path | None = None
    work_dir: Path | None = None
    data: str | None = None
    test_samples: int | None = None
    threads: int = 1
    batch_size: int = 64
    min_accuracy: float | None = None
    keras: bool = True
    baseline: bool = True
    expected: tuple[tuple[str, str], ...] = field(default_factory=default_expected)
    timing: TimingConfig = field(default_factory=TimingConfig)
    worker_timeout_s: float = 3600.0
    seed: int = 0
    verify: bool = True
    tta: bool = False

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.test_samples is not None and self.test_samples < 1:
            raise ConfigError(f"test_samples must be >= 1, got {self.test_samples}")
        if self.min_accuracy is not None and self.min_accuracy < 0.0:
            raise ConfigError(f"min_accuracy is a top-1 fraction >= 0, got {self.min_accuracy}")
        formats = {f.value for f in Format}
        for fmt, _ in self.expected:
            if fmt not in formats:
                raise ConfigError(f"expected format {fmt!r} is not one of {', '.join(sorted(formats))}")


@dataclass
class BenchRow:
    """One row of the table; metric fields are None when not measured (the status says why)."""

    format: str
    precision: str
    file: str
    engine: str
    device: str = "CPU"
    threads: int | None = None
    status: Status = Status.OK
    size_bytes: int | None = None
    size_gzip_bytes: int | None = None
    top1_acc: float | None = None
    acc_drop_pp: float | None = None
    top1_agreement: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    batch_size: int | None = None
    throughput_ips: float | None = None
    speedup_vs_original: float | None = None
    peak_rss_mb: float | None = None
    detail: str = ""
    extra: dict = field(default_factory=dict)  # not a column: iteration counts, API overhead, ...

    def as_dict(self) -> dict:
        """Column name -> value (Status as its string) in :data:`COLUMNS` order."""
        d = {c: getattr(self, c) for c in COLUMNS}
        d["status"] = self.status.value
        return d


@dataclass
class BenchResult:
    """What ``run_bench`` returns: the rows, machine facts and the files written."""

    model_dir: Path
    rows: list[BenchRow]
    machine: dict
    out_dir: Path
    files: dict[str, Path]
    n_test: int
    labels: Any = None  # (N,) int test labels, in evaluation order
    predictions: dict[str, Any] = field(default_factory=dict)  # row key -> (N,) predicted classes

    @property
    def failed(self) -> list[BenchRow]:
        """Rows whose status is not ``ok``."""
        return [r for r in self.rows if r.status is not Status.OK]

    @property
    def below_min_accuracy(self) -> list[BenchRow]:
        return [r for r in self.rows if r.status is Status.BELOW_MIN_ACCURACY]
