"""``tf.distribute`` for training runs (``edgeclf train --distribute``): the strategy and this process's role.

* ``none``: TensorFlow's default strategy (one device).
* ``mirrored``: ``tf.distribute.MirroredStrategy`` — synchronous data parallelism over every GPU of
  this machine (the CPU when there is none).
* ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` — the same across the machines
  the ``TF_CONFIG`` environment variable lists (one process per machine; docs/distributed.md).

Batch size and learning rate: ``--batch-size`` is the *global* batch; each step every one of the
R replicas computes the gradient of ``batch_size / R`` images and the gradients are all-reduced, so
the optimisation is that of one device with the same batch size and needs no other learning rate.
edgeclf never rescales ``--lr``: to keep per-replica batches as large as on one device, multiply
``--batch-size`` and ``--lr`` by R yourself (linear scaling, Goyal et al. 2017, with the recipe's
warm-up).

Writers: only the chief (task ``chief``, or ``worker`` 0 when the cluster has no chief) writes the
model directory and the run checkpoint ``OUT/.NAME.partial``; every other worker runs the same
steps (collective ops need all of them) but writes into a temporary directory it deletes at the end.
``tf_keras.callbacks.BackupAndRestore`` backs the running phase up under the chief's checkpoint, which
must therefore be on a file system every worker sees (NFS, a shared volume): a restarted cluster
(the same command on every machine) restores model, optimizer and epoch from it and continues.

Sources: https://www.tensorflow.org/tutorials/distribute/multi_worker_with_keras ,
https://www.tensorflow.org/api_docs/python/tf/distribute/MultiWorkerMirroredStrategy
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeclf._keras import keras, tf
from edgeclf.errors import ConfigError
from edgeclf.train.config import Distribute

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Worker:
    """This process's part in a training run.

    Attributes:
        strategy: the ``tf.distribute.Strategy`` to build and fit the model under.
        kind: the :class:`~edgeclf.train.config.Distribute` choice.
        is_chief: writes the model directory and the run checkpoint.
        task: ``"chief"``, ``"worker 1"`` ... (for messages and per-worker cache directories).
        num_workers: processes in the cluster (1 unless ``multi-worker``).
    """

    strategy: object
    kind: Distribute
    is_chief: bool = True
    task: str = "chief"
    num_workers: int = 1

    @property
    def replicas(self) -> int:
        """Replicas in sync (devices over all workers); each computes ``batch_size / replicas`` images."""
        return int(self.strategy.num_replicas_in_sync)

    def cache_dir(self, cache: str | None) -> str | None:
        """``cache``, or ``cache/<task>`` with several workers (so workers on one machine never share
        a cache file)."""
        if not cache or self.num_workers == 1:
            return cache
        return str(Path(cache) / self.task.replace(" ", "-"))


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ConfigError("--distribute multi-worker needs the TF_CONFIG environment variable (the cluster's "
                          "workers and this process's task; see docs/distributed.md)")
    try:
        cfg = json.loads(raw)
        cluster, task = cfg["cluster"], cfg["task"]
        task_type, index = str(task["type"]), int(task["index"])
        workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"TF_CONFIG: not a valid cluster description ({exc}); expected "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') from None
    if task_type not in ("chief", "worker") or index < 0 or index >= len(cluster.get(task_type, [])):
        raise ConfigError(f"TF_CONFIG: task {task_type} {index} is not in the cluster {cluster}")
    return {"task_type": task_type, "index": index, "n": len(workers), "has_chief": bool(cluster.get("chief"))}


def make_worker(kind: Distribute, batch_size: int) -> Worker:
    """Create the strategy for ``kind`` — before any other TensorFlow op of the process, as
    ``MultiWorkerMirroredStrategy`` requires — and find this process's role.

    Args:
        kind: the choice.
        batch_size: the global batch; it must be divisible by the number of replicas.

    Raises:
        ConfigError: ``multi-worker`` without a valid ``TF_CONFIG``, or a batch size the replicas
            can't share evenly.
    """
    kind = Distribute(kind)
    if kind is Distribute.NONE:
        return Worker(tf.distribute.get_strategy(), kind)
    if kind is Distribute.MIRRORED:
        worker = Worker(tf.distribute.MirroredStrategy(), kind)
    else:
        t = _tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        chief = t["task_type"] == "chief" or (t["index"] == 0 and not t["has_chief"])
        worker = Worker(strategy, kind, chief, "chief" if t["task_type"] == "chief" else f"worker {t['index']}",
                        t["n"])
    if batch_size % worker.replicas:
        raise ConfigError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                          f"{worker.replicas} replicas of --distribute {kind.value}")
    log.info("distribute %s: %s of %d worker(s), %d replica(s) in sync, global batch %d (%d per replica)",
             kind.value, worker.task, worker.num_workers, worker.replicas, batch_size, batch_size // worker.replicas)
    return worker


def follow_chief(ckpt, chief_ckpt: Path) -> None:
    """Give a non-chief worker's temporary checkpoint ``ckpt`` the chief's finished state (history,
    finished phases, best and phase weights) from the shared ``chief_ckpt``, so after a restart every
    worker starts the same phase and takes the same early-stopping decisions."""
    state = chief_ckpt / "state.json"
    if not state.is_file():
        return
    for f in chief_ckpt.glob("*.weights.h5"):
        shutil.copy2(f, ckpt.path / f.name)
    ckpt.state.update(json.loads(state.read_text()))
    ckpt.save_state()


def is_distributed(model) -> bool:
    """Whether ``model`` was built under a non-default ``tf.distribute`` strategy."""
    return getattr(model, "_distribution_strategy", None) is not None


def plain_copy(model):
    """A copy of a distributed ``model`` outside any strategy (same layers, trainable flags and weights).

    Reading the values of a multi-worker model is a collective operation, so every worker must call
    this at the same point."""
    twin = keras.models.clone_model(model)
    for mine, theirs in zip(twin.weights, model.weights, strict=True):
        mine.assign(theirs.numpy())
    return twin


def load_weights(model, path: Path) -> None:
    """``model.load_weights(path)`` (a ``.weights.h5`` file), also for a model under a strategy (whose
    on-read synchronised variables, e.g. BatchNorm statistics, tf_keras can't assign from h5 directly)."""
    if not is_distributed(model):
        model.load_weights(str(path))
        return
    twin = keras.models.clone_model(model)
    twin.load_weights(str(path))
    for mine, theirs in zip(model.weights, twin.weights, strict=True):
        mine.assign(theirs.numpy())
