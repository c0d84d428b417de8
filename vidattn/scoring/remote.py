"""Object storage and URLs as `vidattn score` inputs: ``s3://``, ``gs://``, ``https://`` through fsspec.

A URL argument is listed recursively (a bucket prefix, or one object); every video object and every
tar shard becomes `InputItem` records whose key (the row's ``path``) is the URL itself, e.g.
``s3://bucket/clips/a.mp4`` or ``s3://bucket/shards/000.tar::member/b.mp4``.

``size`` and ``mtime`` come from the object's metadata, so resume works on buckets as on disks. A store
that has no modification time but an ETag (or an MD5 / generation) gets a stable number derived from
it instead, so a replaced object is scored again and an unchanged one is skipped.

Objects are never downloaded whole-archive: a video object is read into memory when it is at most
`MEMORY_LIMIT` bytes, otherwise spooled to a temporary file that is deleted right after its row is
made; a tar shard is streamed (``tarfile`` mode ``r|*``) from a buffered remote file, members decoded
from memory as for local tars. Credentials and endpoints come from the usual environment of each
fsspec backend (``AWS_*`` incl. ``AWS_ENDPOINT_URL`` for s3fs, ``GOOGLE_APPLICATION_CREDENTIALS`` for
gcsfs, or ``FSSPEC_<PROTOCOL>_<OPTION>``). fsspec and the backend are imported only when a URL is given:
``pip install "vidattn[cloud]"``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, Any

from vidattn.errors import VidattnError

__all__ = [
    "MEMORY_LIMIT",
    "URL_SCHEMES",
    "is_url",
    "expand_url",
    "object_stamp",
    "fetch_source",
    "open_stream",
]

#: Schemes treated as remote inputs (anything fsspec knows with a backend installed).
URL_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "http", "https")
#: Video objects up to this size are decoded from memory; larger ones go through a temporary spool file.
MEMORY_LIMIT = int(os.environ.get("VIDATTN_REMOTE_MEMORY_LIMIT", 256 << 20))
_SCHEME_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_BACKENDS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_FS_LOCK = threading.Lock()


def is_url(text: str | os.PathLike) -> bool:
    """True for ``scheme://...`` with a scheme in `URL_SCHEMES` (local paths and ``file://`` are not URLs here)."""
    m = _SCHEME_RE.match(os.fspath(text)) if isinstance(text, (str, os.PathLike)) else None
    return bool(m) and m.group(1).lower() in URL_SCHEMES


def _filesystem(url: str) -> tuple[Any, str]:
    """fsspec filesystem and in-filesystem path for `url`; one clear error when the backend is missing."""
    scheme = _SCHEME_RE.match(url).group(1).lower()
    try:
        import fsspec
    except ImportError:
        raise VidattnError(f'{url}: URL inputs need fsspec: pip install "vidattn[cloud]"') from None
    try:
        with _FS_LOCK:  # fsspec caches instances; creating one is not thread-safe for all backends
            return fsspec.core.url_to_fs(url)
    except ImportError:
        backend = _BACKENDS.get(scheme, "the fsspec backend for it")
        raise VidattnError(f'{url}: needs {backend}: pip install "vidattn[cloud]"') from None
    except (ValueError, OSError) as exc:
        raise VidattnError(f"{url}: {' '.join(str(exc).split())[:200]}") from None


def _to_epoch(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, str):
        try:
            return _to_epoch(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            try:
                from email.utils import parsedate_to_datetime

                return _to_epoch(parsedate_to_datetime(value))
            except (TypeError, ValueError):
                return None
    return None


def object_stamp(info: dict[str, Any]) -> float | None:
    """The object's "mtime" for resume: its modification time, else a stable number from its ETag.

    The ETag form is ``-(first 6 bytes of blake2b(etag)) `` as a negative float (exact in a double),
    so it can never be mistaken for a real time.
    """
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "Last-Modified", "last-modified"):
        if info.get(key) is not None:
            stamp = _to_epoch(info[key])
            if stamp is not None:
                return stamp
    for key in ("ETag", "etag", "md5Hash", "generation", "content_md5"):
        if info.get(key):
            digest = hashlib.blake2b(str(info[key]).encode(), digest_size=6).digest()
            return -float(int.from_bytes(digest, "big"))
    return None


def _video_or_tar(name: str) -> tuple[bool, bool]:
    from vidattn.data.datasets import VIDEO_EXTENSIONS
    from vidattn.scoring.inputs import is_tar

    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS, is_tar(name)


def expand_url(url: str, warnings: list[str]) -> list[Any]:
    """`InputItem`s for a URL: every video object and tar member under it (sorted), or the one object.

    A prefix that lists nothing becomes a warning; one object that cannot be read still gets its
    error row (like a missing local file).

    Raises:
        VidattnError: no fsspec backend for the scheme, or the listing itself fails (no such bucket,
            no credentials): a run must not silently score nothing.
    """
    from vidattn.scoring.inputs import InputItem

    fs, path = _filesystem(url)
    try:
        single = not fs.isdir(path)
        if not single:
            listing = fs.find(path, detail=True)
            infos = [listing[name] | {"name": name} for name in sorted(listing)]
            if not infos:
                warnings.append(f"{url}: prefix lists no objects")
        else:
            infos = [fs.info(path)]
    except FileNotFoundError:
        return [InputItem(url, url, error="no such object")]
    except (OSError, ValueError, PermissionError) as exc:
        raise VidattnError(f"{url}: cannot list ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    items: list[InputItem] = []
    for info in infos:
        name = info.get("name") or path
        if info.get("type") == "directory":
            continue
        is_video, tar = _video_or_tar(name)
        key = url if single else fs.unstrip_protocol(name)
        if tar:
            items.extend(_tar_items(fs, name, key, info))
        elif is_video or single:
            items.append(InputItem(key, key, None, info.get("size"), object_stamp(info)))
    return items


def _tar_items(fs: Any, name: str, key: str, info: dict[str, Any]) -> list[Any]:
    """Members of a remote tar from its headers (plain tars seek past member data; compressed ones stream)."""
    import tarfile

    from vidattn.scoring.inputs import MEMBER_SEP, InputItem

    items = []
    try:
        # Small blocks: a plain tar is read header by header with seeks, not fetched whole.
        with fs.open(name, "rb", block_size=1 << 16) as f, tarfile.open(fileobj=f, mode="r:*") as tf:
            for member in tf:
                if member.isdir() or not _video_or_tar(member.name)[0]:
                    continue
                error = None if member.isfile() else "tar member is a link or special file, not a video file"
                mkey = f"{key}{MEMBER_SEP}{member.name}"
                items.append(InputItem(mkey, key, member.name, member.size, float(member.mtime), error))
    except (tarfile.TarError, OSError, EOFError) as exc:
        reason = f"cannot read tar archive: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        items.append(InputItem(key, key, None, info.get("size"), object_stamp(info), reason))
    return items


@contextlib.contextmanager
def fetch_source(url: str, size: int | None = None) -> Iterator[bytes | str]:
    """The object's bytes (at most `MEMORY_LIMIT`), or the path of a temporary spool file deleted on exit."""
    fs, path = _filesystem(url)
    if size is not None and size <= MEMORY_LIMIT:
        yield fs.cat_file(path)
        return
    fd, spool = tempfile.mkstemp(prefix="vidattn-spool-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as out, fs.open(path, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        yield spool
    finally:
        with contextlib.suppress(OSError):
            os.unlink(spool)


def open_stream(url: str) -> IO[bytes]:
    """A buffered, forward-read file object of the object (for streaming a tar shard)."""
    fs, path = _filesystem(url)
    return fs.open(path, "rb", block_size=8 << 20, cache_type="readahead")
