"""The run checkpoint ``OUT/.NAME.partial/``: what makes a training run resumable (``--resume``).

Every run keeps, beside its model directory ``OUT/NAME``::

    OUT/.NAME.partial/
      config.json          the resolved TrainConfig (``--resume`` takes it from here)
      state.json           finished epochs: history rows (epoch, phase, loss, accuracy, ...), finished
                           phases, best validation accuracy, training seconds, sessions, and
                           the epochs a time budget shortened a phase to (``planned_epochs``)
      best.weights.h5      the best weights so far (validation top-1; train top-1 without a val split)
      phase-<i>.weights.h5 the weights at the end of finished phase i (two-phase models)
      backup-<i>/          tf_keras BackupAndRestore of the running phase i: model + optimizer state
                           (momentum, ``iterations``, so the step-based learning-rate schedule
                           continues) + the epoch
      lock                 flock'ed while a process trains from this checkpoint

Everything is written after each finished epoch, with renames (state.json last but for the backup),
so Ctrl-C, a crash or SIGKILL leaves the state of the last finished epoch. A finished run deletes the
directory once its model directory is in place; an interrupted or crashed run keeps it (a run that
finished no epoch deletes it: there is nothing to resume).

BackupAndRestore (tf_keras) restores model, optimizer and epoch inside one ``fit`` call; edgeclf
adds what it does not cover: one backup per phase (each phase compiles a new optimizer), the
phase boundary, the history, the best weights and early stopping. ``state.json`` is written just
before the backup, so a SIGKILL between the two leaves state.json one epoch ahead; on resume the
history is cut back to the epoch the backup restores (:class:`EpochState`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

from edgeclf._io import ensure_dir, reported_as, write_json
from edgeclf._keras import keras
from edgeclf.errors import ConfigError
from edgeclf.train.config import TrainConfig, load_config
from edgeclf.train.ema import ema_weights

log = logging.getLogger(__name__)

STATE_VERSION = 1
_SUFFIX = ".partial"


def checkpoint_dir(model_dir: Path) -> Path:
    """``OUT/NAME`` -> ``OUT/.NAME.partial``."""
    model_dir = Path(model_dir)
    return model_dir.with_name(f".{model_dir.name}{_SUFFIX}")


def model_dir_of(checkpoint: Path) -> Path:
    """``OUT/.NAME.partial`` -> ``OUT/NAME``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name[1:-len(_SUFFIX)])


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory for ``--resume PATH``: PATH itself (``OUT/.NAME.partial``) or the
    checkpoint beside the model directory PATH (``OUT/NAME``, which need not exist yet; ``.`` or
    ``..`` name the directory they stand for).

    Raises:
        edgeclf.errors.ConfigError: no checkpoint there. The message starts with PATH as given and
            says what is wrong: no such file or directory, a file, a finished run, a directory
            that is no model directory, or a checkpoint directory without config.json.
    """
    p = Path(path).expanduser()
    if p.name in ("", "..") or str(path) in ("", "."):
        p = Path(os.path.abspath(p))
    if p.name.startswith(".") and p.name.endswith(_SUFFIX) and len(p.name) > len(_SUFFIX) + 1:
        if (p / "config.json").is_file():
            return p
        what = "not a directory" if p.exists() and not p.is_dir() else \
            "not a training checkpoint (no config.json in it)" if p.is_dir() else "no such checkpoint directory"
        raise ConfigError(f"{path}: {what}; nothing to resume")
    ckpt = p.with_name(f".{p.name}{_SUFFIX}") if p.name else p
    if p.name and (ckpt / "config.json").is_file():
        return ckpt
    if not p.exists():
        what = f"no such directory, and no checkpoint {ckpt} beside it"
    elif not p.is_dir():
        what = "not a directory (--resume takes a model directory OUT/NAME or its checkpoint OUT/.NAME.partial)"
    elif (p / "model.keras").is_file():
        what = f"this run finished (its checkpoint {ckpt} is deleted at the end of a run)"
    else:
        what = f"not an edgeclf model directory, and no checkpoint {ckpt} beside it"
    raise ConfigError(f"{path}: {what}; nothing to resume")


def _lock(path: Path):
    """An open file holding an exclusive flock on ``path`` (released when closed or the process dies)."""
    f = open(path, "a")  # noqa: SIM115 - kept open for the run
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError(f"{path.parent}: another edgeclf training run is using this checkpoint") from None
    return f


class RunCheckpoint:
    """An open ``OUT/.NAME.partial`` checkpoint (locked). Make one with :meth:`create` or :meth:`open`.

    Attributes:
        path: the checkpoint directory.
        model_dir: the model directory it belongs to (``OUT/NAME``).
        resumed: opened by :meth:`open` (a resume), not made by :meth:`create`.
        state: the contents of state.json: ``history`` (list of row dicts), ``phases_done`` (int),
            ``best_acc`` (float or None), ``best_epoch`` (int or None), ``train_seconds`` (float),
            ``sessions`` (int, 1 + number of resumes), ``planned_epochs`` (phase -> epochs, set when
            ``--time-budget`` shortened a phase; absent or empty otherwise), ``machines`` (one
            :func:`edgeclf._machine.machine_facts` dict per session, appended by the training loop).
    """

    def __init__(self, path: Path, state: dict, lock, created: tuple[Path, ...] = (), resumed: bool = False):
        self.path, self.state, self._lock, self.resumed = Path(path), state, lock, resumed
        self.model_dir = model_dir_of(self.path)
        self._created = created  # parent directories create() made, removed again by remove() if empty

    # -------------------------------------------------------------- opening

    @classmethod
    def create(cls, model_dir: Path, cfg: TrainConfig) -> RunCheckpoint:
        """Start the checkpoint of a new run of ``cfg`` beside ``model_dir``.

        A leftover checkpoint without a finished epoch is taken over.

        Raises:
            edgeclf.errors.ConfigError: the checkpoint holds an unfinished run with finished epochs
                (the message says how to resume or discard it), or another process uses it.
            OSError: it cannot be created.
        """
        path = checkpoint_dir(model_dir)
        created = tuple(p for p in (path.parent, *path.parent.parents) if not p.exists())
        with reported_as(model_dir, path):  # errors name the user's OUT/NAME, not the checkpoint
            ensure_dir(path)
        lock = _lock(path / "lock")
        try:
            done = len(_read_state(path).get("history", []))
            if done:
                raise ConfigError(f"{path}: holds an unfinished run ({done} epoch(s) done); continue it with "
                                  f"--resume {model_dir}, or delete {path} to start afresh")
            for p in path.iterdir():
                if p.name != "lock":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            write_json(path / "config.json", cfg.to_dict())
            ckpt = cls(path, {"version": STATE_VERSION, "history": [], "phases_done": 0, "best_acc": None,
                              "best_epoch": None, "train_seconds": 0.0, "sessions": 1}, lock, created)
            ckpt.save_state()
        except BaseException:
            lock.close()
            raise
        return ckpt

    @classmethod
    def open(cls, path: Path) -> tuple[RunCheckpoint, TrainConfig]:
        """Open an existing checkpoint to resume it: -> (checkpoint, its TrainConfig).

        Raises:
            edgeclf.errors.ConfigError: malformed config.json / state.json, a newer state version,
                or another process uses it.
            FileNotFoundError: no config.json.
        """
        path = Path(path)
        cfg = load_config(path)
        lock = _lock(path / "lock")
        try:
            state = _read_state(path) or {"version": STATE_VERSION, "history": [], "phases_done": 0,
                                          "best_acc": None, "best_epoch": None, "train_seconds": 0.0,
                                          "sessions": 0}
            state["sessions"] = int(state.get("sessions", 0)) + 1
        except BaseException:
            lock.close()
            raise
        return cls(path, state, lock, resumed=True), cfg

    # -------------------------------------------------------------- files

    @property
    def best_path(self) -> Path:
        return self.path / "best.weights.h5"

    def backup_dir(self, phase: int) -> Path:
        """BackupAndRestore directory of phase ``phase`` (0-based)."""
        return self.path / f"backup-{phase}"

    def phase_weights(self, phase: int) -> Path:
        """Weights at the end of finished phase ``phase`` (0-based)."""
        return self.path / f"phase-{phase}.weights.h5"

    @property
    def has_best(self) -> bool:
        return self.state["best_acc"] is not None and self.best_path.is_file()

    def save_state(self) -> None:
        """Write state.json atomically (the epoch's commit point)."""
        self.state["epochs_done"] = len(self.state["history"])
        self.state["phase"] = self.state["history"][-1]["phase"] if self.state["history"] else None
        write_json(self.path / "state.json", self.state)

    def save_weights(self, model, path: Path) -> None:
        """``model.save_weights`` to ``path`` (``*.weights.h5``: by layer structure, not variable order)
        through a temporary name, so a kill mid-write never leaves a truncated file."""
        tmp = path.with_name(f".{secrets.token_hex(4)}.weights.h5")
        try:
            model.save_weights(str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def finish_phase(self, model, phase: int) -> None:
        """Record phase ``phase`` as finished with ``model``'s weights; drop its backup."""
        self.save_weights(model, self.phase_weights(phase))
        self.state["phases_done"] = phase + 1
        self.save_state()
        shutil.rmtree(self.backup_dir(phase), ignore_errors=True)
        if phase > 0:
            self.phase_weights(phase - 1).unlink(missing_ok=True)

    def close(self) -> None:
        """Release the lock (the files stay)."""
        with contextlib.suppress(OSError):
            self._lock.close()

    def abandon(self) -> None:
        """After a failure: keep the checkpoint if it has finished epochs or was resumed (the user
        named it), otherwise delete it (a new run that finished nothing leaves nothing behind)."""
        if self.state["history"] or self.resumed:
            self.close()
        else:
            self.remove()

    def remove(self) -> None:
        """Delete the checkpoint directory and release the lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()
        for d in self._created:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()


def _read_state(path: Path) -> dict:
    f = path / "state.json"
    if not f.is_file():
        return {}
    try:
        state = json.loads(f.read_text())
        version = int(state.get("version", 1))
        if not isinstance(state.get("history"), list):
            raise ValueError("no history list")
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{f}: malformed checkpoint state ({exc})") from None
    if version > STATE_VERSION:
        raise ConfigError(f"{f}: state version {version} is newer than this edgeclf understands ({STATE_VERSION})")
    return state


def early_stop(rows: list[dict], patience: int) -> bool:
    """Whether a phase with history ``rows`` has gone ``patience`` (> 0) epochs without improving its
    best ``val_accuracy`` (``accuracy`` without a validation split), as EarlyStopping would stop."""
    accs = [r.get("val_accuracy", r.get("accuracy", -1.0)) for r in rows]
    return bool(patience and accs) and len(accs) - 1 - accs.index(max(accs)) >= patience


class EpochState(keras.callbacks.Callback):
    """Records each finished epoch of one phase into the checkpoint (before BackupAndRestore saves).

    At an epoch's end: appends the history row ``{"epoch", "phase", **logs}``, saves the best weights
    when the monitored accuracy (``val_accuracy``, else ``accuracy``) improves, stops the phase after
    ``patience`` epochs without improvement (as ``keras.callbacks.EarlyStopping``, mode max,
    ``min_delta`` 0, but derived from the saved history so it survives a resume), and writes
    state.json. At the first epoch after a restore it cuts the phase's history back to the epoch
    ``fit`` continues at.
    """

    def __init__(self, ckpt: RunCheckpoint, phase: str, patience: int = 0):
        super().__init__()
        self.ckpt, self.phase, self.patience = ckpt, phase, patience
        self.stopped = False
        self._started = time.perf_counter()
        self._seconds0 = float(ckpt.state.get("train_seconds", 0.0))
        self._first = True

    def _phase_rows(self) -> list[dict]:
        return [r for r in self.ckpt.state["history"] if r["phase"] == self.phase]

    def on_epoch_begin(self, epoch, logs=None):
        if self._first:
            self._first = False
            rows = self.ckpt.state["history"]
            extra = len(self._phase_rows()) - epoch
            if extra > 0:  # state.json was saved for an epoch whose backup was not: that epoch runs again
                log.warning("checkpoint: redoing %d epoch(s) of phase %s not in the backup", extra, self.phase)
                del rows[len(rows) - extra:]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        state = self.ckpt.state
        row = {"epoch": len(state["history"]) + 1, "phase": self.phase, **{k: float(v) for k, v in logs.items()}}
        state["history"].append(row)
        acc = float(logs.get("val_accuracy", logs.get("accuracy", -1.0)))
        if state["best_acc"] is None or acc > state["best_acc"]:
            with ema_weights(self.model):  # with --ema-decay the averaged weights are the best-epoch model
                self.ckpt.save_weights(self.model, self.ckpt.best_path)
            state["best_acc"], state["best_epoch"] = acc, row["epoch"]
        if self.patience and early_stop(self._phase_rows(), self.patience):
            self.stopped = True
            self.model.stop_training = True
            log.info("early stopping: no improvement of validation top-1 for %d epochs", self.patience)
        state["train_seconds"] = self._seconds0 + time.perf_counter() - self._started
        self.ckpt.save_state()
