"""Exceptions a user can cause. The CLI turns each into one line and a non-zero exit.

Also the two helpers that turn a failed write (read-only folder, no permission, full disk) into an
`OutputError` naming the path and the reason, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


class VidattnError(Exception):
    """Base class for errors caused by input (files, boxes, configs), not by bugs."""


class VideoDecodeError(VidattnError):
    """A video could not be opened or read. The message names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(VidattnError):
    """A bad config file, key or value."""


class OutputError(VidattnError):
    """An output file or folder could not be written (read-only, no permission, disk full)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write {self.path}: {reason}")


@contextlib.contextmanager
def writing_to(path: str | os.PathLike) -> Iterator[None]:
    """Turn an `OSError` raised while writing outputs under `path` into an `OutputError`.

    The error names the file the OS names (else `path`). Wrap only code that writes: a failed read
    inside would be reported as an output error.
    """
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(exc.filename or path, exc.strerror or str(exc)) from None


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
        fd, probe = tempfile.mkstemp(prefix=".vidattn-write-test-", dir=path)
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from None
    os.close(fd)
    os.unlink(probe)
    return path
