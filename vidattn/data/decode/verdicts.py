"""Whether decord (or torchcodec) is exact on a file, kept in memory and on disk: a dataset pays the check once.

`policy.decord_is_exact` compares decord's random access with PyAV's exact decode on files outside the
containers decord always indexes exactly (~65 ms the first time a process opens such a file). The
verdict is kept per (absolute path, size, mtime, backend and its version): in this process, and as one small
file per verdict under ``$VIDATTN_CACHE_DIR/decord-verdicts`` (default ``$XDG_CACHE_HOME/vidattn`` or
``~/.cache/vidattn``; an empty ``VIDATTN_CACHE_DIR`` keeps verdicts in memory only). One file per
verdict, written to a temporary name and renamed, so DataLoader workers and several machines on a
shared disk can write at once without a lock. A cache that cannot be written is skipped silently.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

# Bump when the check changes, so that verdicts from the old check are not trusted.
_CHECK_VERSION = 1
# (path, size, mtime, backend version, check version) -> whether that backend's random access is exact there.
_DECORD_VERDICTS: dict[tuple, bool] = {}


def cache_dir() -> Path | None:
    """Where verdicts are kept on disk, or None when disabled (``VIDATTN_CACHE_DIR=""``)."""
    env = os.environ.get("VIDATTN_CACHE_DIR")
    if env is not None:
        return Path(env) / "decord-verdicts" if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidattn" / "decord-verdicts"


@functools.cache
def _backend_version(backend: str) -> str:
    from importlib import metadata

    for name in ("decord2", "decord") if backend == "decord" else (backend,):
        try:
            return f"{name}-{metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _key(path: str | os.PathLike, backend: str) -> tuple:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns, _backend_version(backend), _CHECK_VERSION)


def _disk_path(key: tuple) -> Path | None:
    folder = cache_dir()
    return None if folder is None else folder / hashlib.sha256(repr(key).encode()).hexdigest()[:40]


def lookup(path: str | os.PathLike, backend: str = "decord") -> bool | None:
    """`backend`'s verdict for this file as it is now (same size and mtime), or None if it was never checked."""
    key = _key(path, backend)
    if key in _DECORD_VERDICTS:
        return _DECORD_VERDICTS[key]
    disk = _disk_path(key)
    try:
        text = disk.read_text() if disk is not None else ""
    except OSError:
        return None
    if text not in ("0", "1"):
        return None
    _DECORD_VERDICTS[key] = text == "1"
    return _DECORD_VERDICTS[key]


def store(path: str | os.PathLike, exact: bool, backend: str = "decord") -> None:
    """Remember `backend`'s verdict for this file, in memory and (when it can be written) on disk."""
    key = _key(path, backend)
    if len(_DECORD_VERDICTS) >= 100_000:
        _DECORD_VERDICTS.clear()
    _DECORD_VERDICTS[key] = exact
    disk = _disk_path(key)
    if disk is None:
        return
    tmp = disk.with_name(f".{disk.name}.{os.getpid()}.tmp")
    try:
        disk.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("1" if exact else "0")
        os.replace(tmp, disk)
    except OSError:  # read-only home, full disk: the check simply runs again in the next process
        tmp.unlink(missing_ok=True)
