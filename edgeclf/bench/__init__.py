"""``edgeclf bench``: accuracy, size, latency and memory of every exported format vs the float original.

    >>> from edgeclf.bench import BenchConfig, run_bench
    >>> result = run_bench("export/cifar10-cnn", BenchConfig(threads=1))
    >>> [(r.format, r.precision, r.status.value, r.latency_ms_p50) for r in result.rows]

Modules: ``config`` (BenchConfig, TimingConfig, BenchRow, Status, COLUMNS), ``runner``
(run_bench), ``worker`` / ``_keras_worker`` (one measurement per fresh process; what both share is
in ``_worker_base``), ``timing``, ``testdata``, ``machine``, ``report`` (Markdown/CSV/JSON), ``predictions``
(per-image top-1 of every row, predictions.npz), ``plots``.
Importing this package does not import TensorFlow.
"""

from edgeclf.bench.config import COLUMNS, BenchConfig, BenchResult, BenchRow, Status, TimingConfig
from edgeclf.bench.runner import run_bench

__all__ = ["COLUMNS", "BenchConfig", "BenchResult", "BenchRow", "Status", "TimingConfig", "run_bench"]
