"""Save and load a model directory's float model (``model.keras``, tf_keras)."""

from __future__ import annotations

import contextlib
import functools
import io
import shutil
import threading
from pathlib import Path

from edgeclf.errors import ModelLoadError, one_line


def save_keras_model(model, path: Path) -> None:
    """Write ``model`` to ``path`` (a ``.keras`` archive) without its optimizer state.

    The layers are saved through a new functional ``keras.Model`` over the same inputs and outputs
    (same name, layers and weights, no optimizer attached): ``model.keras`` is for inference and
    export, and ``--resume`` restores the optimizer from its own checkpoint. The Adam moments were
    two thirds of a trained mobilenet_v2's 27.6 MB archive (round 2, session 9).

    Args:
        model: a functional tf_keras model (every edgeclf builder makes one).
        path: the archive to write; its parent directory must exist.
    """
    from edgeclf._keras import keras

    keras.Model(model.inputs, model.outputs, name=model.name).save(path)


def load_keras_model(model_dir: Path):
    """Load ``MODEL_DIR/model.keras`` (tf_keras, without its optimizer).

    ``keras.models.load_model(path, compile=False)``, with the archive's ``model.weights.h5`` read
    into memory in one pass before h5py sees it (:func:`_h5_weights_in_memory`); the model, its
    weights and every error are those of the plain call.

    Returns:
        keras.Model: float32 (N, H, W, C) pixels in [0, 255] -> float32 (N, num_classes) probabilities.

    Raises:
        FileNotFoundError: no model.keras. ModelLoadError: the file is not a loadable Keras model.
    """
    from edgeclf._keras import keras

    path = Path(model_dir) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {model_dir} an edgeclf model directory?)")
    try:
        with _h5_weights_in_memory():
            return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelLoadError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {one_line(exc)})") from None


_CHUNK = 16 << 20  # bytes per read while copying the weights member into memory


class _MembersInMemory:
    """The read side of a ``zipfile.ZipFile`` as tf_keras's ``H5IOStore`` uses it in mode "r": only
    ``open(name, "r")``, answered with an ``io.BytesIO`` holding the whole member.

    The member is read once, front to back, in 16 MB chunks (so memory holds one copy of it plus a
    chunk; ``ZipFile.read`` would hold three to four transient copies); reading to its end makes
    zipfile check its CRC."""

    def __init__(self, archive):
        self._archive = archive

    def open(self, name, mode="r"):
        if mode != "r":  # pragma: no cover - H5IOStore opens the archive member for reading only
            raise ValueError(f"{name}: the in-memory weights member is read-only")
        buf = io.BytesIO()
        with self._archive.open(name, "r") as member:
            shutil.copyfileobj(member, buf, _CHUNK)
        buf.seek(0)
        return buf


_lock = threading.Lock()
_active = 0  # loads inside _h5_weights_in_memory (the patch stays while any is running)
_original_store = None  # saving_lib.H5IOStore while patched


@functools.cache  # one subclass per base class, made on first use
def _in_memory_store(base: type) -> type:
    """``base`` (tf_keras's ``H5IOStore``) whose read-mode archive member is a BytesIO (else unchanged)."""
    class InMemoryH5IOStore(base):
        def __init__(self, root_path, archive=None, mode="r"):
            if archive is not None and mode == "r":
                archive = _MembersInMemory(archive)
            super().__init__(root_path, archive=archive, mode=mode)

    return InMemoryH5IOStore


@contextlib.contextmanager
def _h5_weights_in_memory():
    """Inside the block, tf_keras's ``.keras`` loader gives h5py a BytesIO, not a zip member stream.

    Why: ``tf_keras.src.saving.saving_lib.load_model`` opens the archive as
    ``zipfile.ZipFile(tf.io.gfile.GFile(path))``, and its ``H5IOStore(..., archive=zf, mode="r")``
    hands ``zf.open("model.weights.h5")`` -- a ``zipfile.ZipExtFile`` -- to ``h5py.File``. h5py
    reads the HDF5 metadata and datasets with many backward seeks; on Python 3.11 every backward
    seek of a ZipExtFile rewinds to the member's start and reads forward again to the target
    (``ZipExtFile.seek``; only 3.12+ seeks a STORED member directly), each read going through
    TensorFlow's file API: the time grows with the number of variables times the member's size.

    How: ``saving_lib.H5IOStore`` (looked up as a module global by ``load_model``) is replaced by a
    subclass that, for a read-mode store inside an archive, passes ``H5IOStore`` an archive
    stand-in whose ``open`` returns the member copied into an ``io.BytesIO``
    (:class:`_MembersInMemory`). Nothing else changes: the same config, deserialisation, custom
    objects, variable matching and error types; save (mode "w") and ``.weights.h5`` files on
    disk go through the original code. The whole weights member (weights and the saved optimizer
    slots) is held in memory during the load, and its zip CRC is now always checked (a mismatch
    is a ModelLoadError like any other bad file). If tf_keras has no
    ``src.saving.saving_lib.H5IOStore`` (another version), the block does nothing.

    The replacement is process-wide while any such block runs (reference-counted, so loads in
    several threads overlap safely); a tf_keras load in another thread meanwhile takes the
    same in-memory path, which gives the same result.

    Measured 2026-12-01 (``benchmarks/load_keras_model.py time DIR plain|fast``: one fresh process
    per load, the ``load_model`` call alone, TensorFlow already imported; 2-vCPU AMD EPYC Zen 4 with
    avx512_vnni, Python 3.11.7, TensorFlow 2.21, tf_keras). Run under ``nice -n 19`` while another
    engineer's benchmarks kept the load average at 2-4, so the wall times are indicative only and
    vary widely; the CPU seconds (user + sys, last run) vary less:

    * tiny ``resnet50`` (registry tiny config, 32 px, no ImageNet weights, 10 classes, saved after
      one Adam step; model.keras 283 MB, 23.6 M parameters + Adam slots): plain 132 / 199 / 385 /
      770 s wall (107.6 s CPU), in memory 2.4 / 7.7 / 14.1 / 23.2 s wall (3.4 s CPU). Peak RSS
      1130 MB instead of 770-790 MB (559 MB before the load): the member held in memory;
    * the CIFAR-10 ``mobilenet_v2`` of run r2s3 (model.keras 27 MB): plain 10.1 / 14.9 / 29.4 /
      49.5 s wall (9.6 s CPU), in memory 1.4 / 1.9 / 2.0 / 6.4 s wall (1.9 s CPU); peak RSS the
      same (656-659 MB).

    Both models: all weights (322 and 262 arrays) and the predictions on 4 random images were
    identical between the two loads (``np.array_equal``; ``load_keras_model.py compare``).
    """
    from edgeclf._keras import keras

    global _active, _original_store
    saving_lib = getattr(getattr(getattr(keras, "src", None), "saving", None), "saving_lib", None)
    base = getattr(saving_lib, "H5IOStore", None)
    if not isinstance(base, type):  # pragma: no cover - another tf_keras layout: load the plain way
        yield
        return
    with _lock:
        if _active == 0:
            _original_store = base
            saving_lib.H5IOStore = _in_memory_store(base)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                saving_lib.H5IOStore = _original_store
                _original_store = None
