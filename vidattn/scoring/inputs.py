"""What `vidattn score` scores: files, directories, globs, list files and tar shards, deduplicated.

Every input resolves to `InputItem` records keyed by an absolute path. A tar member's key is
``/abs/shard.tar::member/name.mp4``. The same key given twice (a file named directly and found
again by a directory scan, or a list file repeating a line) is scored once.

Input kinds, decided per argument:

- an existing directory: scanned recursively for video files (`VIDEO_EXTENSIONS`) and tar shards;
- a tar archive (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.bz2``, ``.tar.xz``): its regular members
  with a video extension (WebDataset-style shards). The member list is read once here (headers
  only for plain tars); the members are later streamed and decoded from memory, never extracted;
- a list file (``.txt``, ``.lst``, ``.list``, or any path prefixed with ``@``): one input per line,
  ``#`` comments and blank lines skipped, relative paths taken from the list file's folder;
- a pattern with ``*``, ``?`` or ``[``: expanded with `glob` (``**`` recurses);
- a URL (``s3://``, ``gs://``, ``https://``): listed recursively through fsspec, keyed by the URL
  (`vidattn.scoring.remote`);
- anything else is a file, even when it does not exist or is a broken link: it still gets its
  one result row (an error saying why).

Sharding (`shard_of`) hashes the key of a work unit, a file or a whole tar, so a file's shard
does not change when others are added to the archive; a tar shard is never split across ranks.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vidattn.data.datasets import VIDEO_EXTENSIONS
from vidattn.errors import VidattnError
from vidattn.scoring.remote import expand_url, is_url

__all__ = [
    "InputItem",
    "ExpandedInputs",
    "TAR_SUFFIXES",
    "LIST_SUFFIXES",
    "expand_inputs",
    "is_tar",
    "member_key",
    "parse_shard",
    "resolve_shard",
    "shard_of",
    "stable_key",
]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
LIST_SUFFIXES = (".txt", ".lst", ".list")
MEMBER_SEP = "::"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputItem:
    """One video to score: its result key, where its bytes live, and the size/mtime seen.

    Attributes:
        key: the `path` primary key of its result row.
        path: the file on disk (for a tar member: the tar).
        member: the member name inside the tar, or None for a plain file.
        size: bytes (of the file or member), None when it cannot be stat'ed.
        mtime: modification time in seconds (file or member), None when unknown.
        error: a reason known before decoding (e.g. a tar member that is a link); the row is an error.
    """

    key: str
    path: str
    member: str | None = None
    size: int | None = None
    mtime: float | None = None
    error: str | None = None

    @property
    def missing(self) -> bool:
        """Nothing is at the path, not even a broken link (a typo in an input, a file deleted since listing)."""
        return self.member is None and self.size is None and self.error is None

    @property
    def unit(self) -> str:
        """The work unit: the file itself, or the tar that holds the member."""
        return self.path if self.member is not None else self.key


@dataclass
class ExpandedInputs:
    """The deduplicated items, plus warnings (patterns that matched nothing, duplicates dropped)."""

    items: list[InputItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # patterns that matched nothing
    duplicates: int = 0


def stable_key(path: str | os.PathLike) -> str:
    """Absolute, normalised path as text that SQLite can store (undecodable bytes backslash-escaped)."""
    text = os.path.abspath(os.fspath(path))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not valid UTF-8 (surrogate-escaped by Python)
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


def member_key(tar_path: str | os.PathLike, member: str) -> str:
    return f"{stable_key(tar_path)}{MEMBER_SEP}{member}"


def is_tar(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


def _is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise VidattnError(f"shard {text!r} is not i/n (e.g. 0/4)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise VidattnError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def resolve_shard(shard: tuple[int, int] | None, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The explicit ``--shard``, else torchrun's RANK / WORLD_SIZE, else Slurm's task and array ids, else ``(0, 1)``.

    Slurm: ``srun -n N`` gives SLURM_PROCID / SLURM_NTASKS; an ``sbatch --array`` job gives
    SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_COUNT; both together make
    ``array_index * ntasks + procid`` of ``count * ntasks``. torchrun wins over Slurm: torchrun started
    inside a Slurm job sets its own ranks.
    """
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if shard is not None:
        if world > 1:
            raise VidattnError("--shard given under torchrun (WORLD_SIZE > 1): use one or the other")
        return shard
    if world > 1:
        return int(env.get("RANK", "0")), world
    tasks = int(env.get("SLURM_NTASKS", "1") or 1)
    procid = int(env.get("SLURM_PROCID", "0") or 0) if tasks > 1 else 0
    count = int(env.get("SLURM_ARRAY_TASK_COUNT", "1") or 1)
    array = int(env.get("SLURM_ARRAY_TASK_ID", "0") or 0) - int(env.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
    if tasks > 1 or count > 1:
        return parse_shard(f"{(array if count > 1 else 0) * tasks + procid}/{count * tasks}")
    return 0, 1


def shard_of(unit: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) a work unit belongs to: a stable hash of its key, not of its position."""
    if num_shards <= 1:
        return 0
    digest = hashlib.blake2b(unit.encode("utf-8", "backslashreplace"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def _stat(path: str) -> tuple[int | None, float | None]:
    """Size and mtime of `path`, or of the link itself when it is broken (so reruns see it unchanged)."""
    for fn in (os.stat, os.lstat):
        try:
            st = fn(path)
        except OSError:
            continue
        return (st.st_size if stat.S_ISREG(st.st_mode) or fn is os.lstat else 0), st.st_mtime
    return None, None


def _file_item(path: str) -> InputItem:
    size, mtime = _stat(path)
    return InputItem(key=stable_key(path), path=os.path.abspath(path), size=size, mtime=mtime)


def _walk(root: str) -> Iterable[str]:
    """Video files and tar shards under `root`, sorted, following links without looping."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
            ident = (st.st_dev, st.st_ino)
        except OSError:
            ident = None
        if ident is not None:
            if ident in seen:  # a symlink cycle
                dirnames[:] = []
                continue
            seen.add(ident)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if _is_video_name(name) or is_tar(name):
                yield os.path.join(dirpath, name)


def _tar_items(path: str) -> list[InputItem]:
    """One item per video member of a tar (headers only), plus an error item if the tar is unreadable."""
    items: list[InputItem] = []
    tar_abs = os.path.abspath(path)
    try:
        with tarfile.open(path, "r:*") as tf:
            for info in tf:
                if not _is_video_name(info.name) or info.isdir():
                    continue
                key = member_key(path, info.name)
                error = None if info.isfile() else "tar member is a link or special file, not a video file"
                items.append(InputItem(key, tar_abs, info.name, info.size, float(info.mtime), error))
    except (tarfile.TarError, OSError, EOFError) as exc:
        reason = f"cannot read tar archive: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        if items:
            reason += f" (after {len(items)} video members)"
        size, mtime = _stat(path)
        items.append(InputItem(stable_key(path), tar_abs, None, size, mtime, reason))
    return items


def _expand_one(arg: str, out: list[InputItem], result: ExpandedInputs, *, allow_lists: bool = True) -> None:
    if is_url(arg):  # s3://, gs://, https://: listed through fsspec (`vidattn.scoring.remote`)
        out.extend(expand_url(arg, result.warnings))
        return
    if allow_lists and arg.startswith("@"):
        _expand_list(arg[1:], out, result)
        return
    if os.path.isdir(arg):
        for path in _walk(arg):
            out.extend(_tar_items(path) if is_tar(path) else [_file_item(path)])
        return
    if os.path.isfile(arg) and is_tar(arg):
        out.extend(_tar_items(arg))
        return
    if allow_lists and os.path.isfile(arg) and arg.lower().endswith(LIST_SUFFIXES):
        _expand_list(arg, out, result)
        return
    if not os.path.lexists(arg) and _GLOB_CHARS & set(arg):
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            result.warnings.append(f"{arg}: pattern matched no files")
            result.unmatched.append(arg)
        for match in matches:
            _expand_one(match, out, result, allow_lists=False)
        return
    out.append(_file_item(arg))  # a file, or something missing that still earns its error row


def _expand_list(list_path: str, out: list[InputItem], result: ExpandedInputs) -> None:
    try:
        text = Path(list_path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise VidattnError(f"list file {list_path}: {exc.strerror or exc}") from None
    base = os.path.dirname(os.path.abspath(list_path))
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = line if os.path.isabs(line) or is_url(line) else os.path.join(base, line)
        _expand_one(path, out, result, allow_lists=False)  # no nested lists: no cycles


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> ExpandedInputs:
    """Resolve command-line inputs to unique `InputItem`s, in input order (first occurrence wins).

    Raises:
        VidattnError: a list file cannot be read.
    """
    result = ExpandedInputs()
    raw: list[InputItem] = []
    for arg in inputs:
        _expand_one(os.fspath(arg), raw, result)
    seen: set[str] = set()
    for item in raw:
        if item.key in seen:
            result.duplicates += 1
            continue
        seen.add(item.key)
        result.items.append(item)
    return result
