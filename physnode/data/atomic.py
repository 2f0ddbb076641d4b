"""All-or-nothing file output.

``atomic_write`` hands out a hidden temporary name next to the target. The target appears,
complete, only when the ``with`` block finishes; an exception or Ctrl-C (``KeyboardInterrupt``)
inside the block deletes the temporary file and leaves whatever was at the target untouched.
Readers therefore never see a half-written trajectory, and an interrupted run never destroys the
previous result.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from physnode.errors import DataError, FileExistsOutputError, InvalidInputError

__all__ = ["atomic_write"]

_MAX_NAME_TRIES = 100


def _refuse_existing(path: Path) -> None:
    raise FileExistsOutputError(
        f"{path}: the output file exists already; pass overwrite=True "
        "(CLI: --overwrite) to replace it"
    )


def _reserve_temp(path: Path) -> Path:
    """Create an empty, uniquely named hidden file next to ``path`` and return its name.

    ``O_EXCL`` makes the name ours alone; mode 0o666 lets the umask decide the permissions, so the
    final file gets the same permissions as a file written directly (``mkstemp`` would give 0o600).
    """
    for _ in range(_MAX_NAME_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise DataError(f"{path}: could not create a temporary file next to it")  # pragma: no cover


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable. Best effort: not every OS or filesystem allows it."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _check_target(path: Path, overwrite: bool) -> Path:
    """The directory that will hold ``path``, after refusing a target that cannot be written."""
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a directory; give a file name for the output")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InvalidInputError(
            f"{path}: the directory {directory} does not exist; create it first"
        )
    if path.exists() and not overwrite:
        _refuse_existing(path)
    return directory


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Flush the complete temporary file to disk and rename it over ``path``."""
    if not tmp.exists():
        raise DataError(f"{path}: nothing was written (the temporary file {tmp} vanished)")
    _fsync_file(tmp)
    if path.exists() and not overwrite:
        _refuse_existing(path)  # another process created it meanwhile
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Write a file all-or-nothing.

    Usage::

        with atomic_write("run.h5", overwrite=False) as tmp:
            with h5py.File(tmp, "w") as f:
                ...

    Args:
        path: the final output file. Its directory must exist.
        overwrite: replace an existing ``path``. Without it an existing file is refused before the
            block runs, with :class:`~physnode.errors.FileExistsOutputError`.

    Yields:
        A temporary path in the same directory as ``path`` (hidden name
        ``.<name>.<random>.tmp``), created empty. Write the complete file there; it may be
        truncated and rewritten freely. When the block completes, the temporary file is flushed to
        disk (``fsync``) and renamed over ``path`` with :func:`os.replace`, which is atomic on
        POSIX and Windows when both names lie on one filesystem.

    On any exception raised inside the block, ``KeyboardInterrupt`` included, the temporary file is
    removed, the exception propagates and nothing at ``path`` changes.

    Raises:
        FileExistsOutputError: ``path`` exists and ``overwrite`` is False (checked before the block
            and again just before the rename, in case another process created it meanwhile).
        InvalidInputError: the directory of ``path`` does not exist, or ``path`` is a directory.
        DataError: the block removed the temporary file instead of writing it.
    """
    path = Path(path)
    directory = _check_target(path, overwrite)
    tmp = _reserve_temp(path)
    try:
        yield tmp
        _publish(tmp, path, overwrite)
    except BaseException:
        # Also on KeyboardInterrupt/SystemExit: never leave a partial file behind.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)
