"""Exceptions a user can cause. The CLI turns each into one line and a non-zero exit."""

from __future__ import annotations


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
    """An output file or folder could not be written (read-only, no permission, disk full).

    Raised through `vidattn._io.ensure_output_dir` and `vidattn._io.writing_to`.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot write {self.path}: {reason}")
