"""File writes: atomic, with the user's umask, and errors that name the user's path.

Everything edgeclf writes goes to a temporary name beside the target and is renamed onto it, so a
failed or interrupted write never leaves a half-written artifact. Files end with mode
``0o666 & ~umask`` and directories with ``0o777 & ~umask``, as ``open()`` and ``mkdir`` make them
(``tempfile.mkstemp``/``mkdtemp`` would give 0600/0700, unreadable for other users or a web server).
An ``OSError`` about a temporary name (read-only directory, disk full, failed rename) is re-raised
as the same error (errno, strerror) about the user's path, chained to the original.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from edgeclf.errors import one_line

_NAME_ATTEMPTS = 100


def _non_directory_ancestor(path: Path) -> Path | None:
    """The nearest existing ``path`` or ancestor of it if that is not a directory, else None."""
    for p in (path, *path.parents):
        try:
            mode = p.stat().st_mode
        except OSError:  # missing, or below a regular file (ENOTDIR): look further up
            continue
        return None if stat.S_ISDIR(mode) else p
    return None


def _not_a_directory(target: Path, directory: Path, cause: OSError) -> OSError:
    """The error for ``target`` whose ``directory`` (or a parent of it) exists as a non-directory.

    ``cause`` itself if no such blocking file is found (e.g. it was a race)."""
    blocker = _non_directory_ancestor(directory)
    if blocker is None:
        return cause
    if blocker == target:
        reason = "exists and is not a directory"
    else:
        reason = f"{blocker} is a file, not a directory" if blocker.is_file() else f"{blocker} is not a directory"
    return NotADirectoryError(errno.ENOTDIR, reason, str(target))


def _make_dirs(directory: Path, target: Path) -> None:
    """``directory.mkdir(parents=True, exist_ok=True)``; a blocking non-directory is reported for ``target``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        new = _not_a_directory(target, directory, exc)
        if new is exc:
            raise
        raise new from exc


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create directory ``path`` and missing parents (mode ``0o777 & ~umask``); return it as a Path.

    Raises:
        NotADirectoryError: ``path`` or a parent exists and is not a directory; ``filename`` is
            ``path``, the message names the blocking file.
        OSError: it cannot be created otherwise (e.g. PermissionError naming the directory).
    """
    path = Path(path)
    _make_dirs(path, path)
    return path


def _retarget(exc: OSError, tmp: Path | None, final: Path) -> OSError | None:
    """``exc`` as an error about ``final`` if it is about ``tmp`` (or a path inside it) or names no
    file at all; None if it is about some other file (then it must propagate unchanged)."""

    def mapped(name: object) -> Path | None:
        if tmp is None or not isinstance(name, (str, bytes, os.PathLike)):
            return None
        p, t = Path(os.path.abspath(os.fsdecode(name))), Path(os.path.abspath(tmp))
        if p == t:
            return final
        return final / p.relative_to(t) if t in p.parents else None

    target = mapped(exc.filename) or mapped(exc.filename2)
    if target is None:
        if exc.filename is not None or exc.filename2 is not None:
            return None
        target = final
    reason = exc.strerror or one_line(exc)
    if tmp is not None:
        reason = reason.replace(str(tmp), str(final))
    return OSError(exc.errno, reason, str(target))  # OSError(errno, ...) picks the subclass (PermissionError, ...)


@contextlib.contextmanager
def reported_as(final: str | os.PathLike, tmp: str | os.PathLike) -> Iterator[None]:
    """Re-raise an OSError about ``tmp`` (or a path inside it, or naming no file) as one about ``final``.

    For code that fills a temporary file or directory which is renamed to ``final`` afterwards, so
    a user never sees the temporary name: ``.m.partial-1a2b/model.keras`` -> ``m/model.keras``.
    Same errno and strerror, chained to the original; errors about other files pass unchanged.
    """
    try:
        yield
    except OSError as exc:
        new = _retarget(exc, Path(tmp), Path(final))
        if new is None:
            raise
        raise new from exc


def _create_temp_file(path: Path) -> tuple[Path, int]:
    """Create an empty ``.<stem>.<random>.tmp<suffix>`` beside ``path``: -> (its path, its mode bits).

    Created with ``os.open(..., 0o666)``, so the mode is what the umask allows. OSError names ``path``.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_NAME_ATTEMPTS):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or one_line(exc), str(path)) from exc
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(errno.EEXIST, "no free temporary name beside it", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file exists (empty) and keeps ``path``'s suffix (some writers, e.g. Keras,
    dispatch on it). ``path``'s parent directories are created. The final file has mode
    ``0o666 & ~umask`` even if the writer replaced the temporary file. On any exception (including
    KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was.

    Raises:
        NotADirectoryError: a parent of ``path`` is a regular file (the message names it).
        OSError: creating, writing (e.g. EFBIG/ENOSPC) or renaming the temporary file failed; re-raised
            with the same errno/strerror and ``filename`` = ``path`` (never the temporary name).
            OSErrors about other files raised in the block propagate unchanged.
    """
    path = Path(path)
    _make_dirs(path.parent, path)
    tmp: Path | None = None
    try:
        tmp, mode = _create_temp_file(path)
        yield tmp
        if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        new = _retarget(exc, tmp, path)
        if new is None:
            raise
        raise new from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def make_temp_dir(final: str | os.PathLike, tag: str = "partial") -> Path:
    """Create an empty directory ``.<name>.<tag>-<random>`` beside ``final`` to fill and then rename to it.

    Parent directories are created. The mode is ``0o777 & ~umask`` (not mkdtemp's 0700), so the
    directory is what the user expects once renamed. Wrap writes into it in :func:`reported_as`.

    Raises:
        NotADirectoryError: a parent of ``final`` is a regular file (the message names it).
        OSError: it cannot be created (e.g. read-only parent); ``filename`` is ``final``.
    """
    final = Path(final)
    _make_dirs(final.parent, final)
    for _ in range(_NAME_ATTEMPTS):
        work = final.with_name(f".{final.name}.{tag}-{secrets.token_hex(4)}")
        try:
            os.mkdir(work, 0o777)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or one_line(exc), str(final)) from exc
        return work
    raise FileExistsError(errno.EEXIST, "no free temporary name beside it", str(final))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (mode ``0o666 & ~umask``) and return the path.

    Raises:
        OSError: naming ``path`` (see :func:`atomic_path`).
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path. Raises OSError naming ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically and return the path. Raises OSError naming ``path``."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gzip_size(path: str | os.PathLike) -> int:
    """Size in bytes of the file gzipped at level 9 (what a download or OTA update costs)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


def replace_dir(src: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the filled directory ``src`` to ``final``, replacing an existing ``final``.

    The old ``final`` is first renamed aside and deleted only after ``src`` is in place; if the
    second rename fails the old directory is put back, so a failure never loses both.

    Raises:
        OSError: a rename failed (``filename`` is ``final``).
    """
    src, final = Path(src), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        with reported_as(final, old):
            os.replace(final, old)
    try:
        with reported_as(final, src):
            os.replace(src, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    return final
