"""Atomic file writes: the one way vidattn replaces an output file.

Every writer goes through a temporary file in the target's folder, which is fsynced, renamed over
the target and followed by an fsync of the folder, so a reader, a killed run or a power cut sees
either the old file or the whole new one, never a partial one. On failure the temporary file is
removed and the target is left as it was.

The temporary file is created with ``os.open(..., 0o666)`` rather than `tempfile.mkstemp` (which
forces 0600), so the finished file gets the mode the umask implies, like any file the user's
programs write (0644 under the usual umask 022).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from vidattn.errors import OutputError

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "ensure_output_dir",
    "temp_name_pattern",
    "writing_to",
]

_TMP = ".tmp"


def temp_name_pattern(path: str | os.PathLike, suffix: str = _TMP) -> str:
    """The glob pattern (relative to the target's folder) of the temporary files written for `path`.

    A killed writer can leave one behind; a caller that wants to clean them up globs for this.
    """
    return f".{Path(path).name}.*{suffix}"


def _create_temp(path: Path, suffix: str) -> tuple[int, Path]:
    """Create and open a new empty temporary file next to `path`; mode 0666 minus the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; folders cannot be opened for fsync on every platform."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename has happened all the same
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = _TMP) -> Iterator[Path]:
    """Give a temporary path next to `path` for a writer that opens files by name; commit it on success.

    For writers that take a path, not a file object (``pyarrow.parquet.ParquetWriter``, an FFmpeg
    muxer). The file exists (empty) when the block starts; the writer may truncate or replace it.
    When the block ends normally the file is fsynced and renamed over `path`; when it raises, the
    file is removed and `path` is untouched. Missing parent folders are created.

    Args:
        path: The final file.
        suffix: End of the temporary name; give one ending in the real extension (``".tmp.mp4"``)
            when the writer picks its format from the name.

    Yields:
        The temporary path to write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, suffix)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file next to `path` for writing; on success it replaces `path` atomically.

    For writers that take a file object (``torch.save``, ``csv.writer``). When the block raises, the
    temporary file is removed and `path` is untouched. Missing parent folders are created.

    Args:
        path: The final file.
        mode: ``"wb"`` or ``"w"`` (text).
        encoding: Text encoding for ``"w"`` (default UTF-8).
        newline: As for `open`; pass ``""`` for the csv module.

    Yields:
        The open file object.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, _TMP)
    try:
        text = mode == "w"
        with open(fd, mode, encoding=(encoding or "utf-8") if text else None, newline=newline if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically (see the module docstring)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Replace `path` with `text` atomically (see the module docstring)."""
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)


@contextlib.contextmanager
def writing_to(path: str | os.PathLike) -> Iterator[None]:
    """Turn an `OSError` raised while writing outputs under `path` into an `OutputError`.

    The error names the file the OS names (the target, for one of our temporary files; else `path`).
    Wrap only code that writes: a failed read inside would be reported as an output error.
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(_target_of(exc.filename) if exc.filename else path, exc.strerror or str(exc)) from None


def _target_of(filename: str | os.PathLike) -> Path:
    """The file a temporary name from `_create_temp` stands for (``.NAME.1a2b3c4d.tmp`` -> ``NAME``)."""
    p = Path(os.fsdecode(filename))
    m = re.fullmatch(r"\.(.+)\.[0-9a-f]{8}\.tmp(\..*)?", p.name)
    return p.with_name(m.group(1)) if m else p


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder `path` (with its parents) and check that a file can be created in it.

    Checked before any work starts, so a read-only or unwritable folder fails at once, not at the first save.

    Raises:
        OutputError: naming `path` and the reason.
    """
    path = Path(path)
    with writing_to(path):
        path.mkdir(parents=True, exist_ok=True)
    try:
        fd, probe = _create_temp(path / ".vidattn-write-test", _TMP)
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from None
    os.close(fd)
    os.unlink(probe)
    return path
