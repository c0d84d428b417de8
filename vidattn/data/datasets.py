"""Labelled video datasets: annotation formats, a stable class map, and failure-tolerant samples.

Annotation formats (`load_annotations`, ``fmt="auto"`` detects them):

- ``folder``: ``root/<class>/*.mp4``, or ``root/{train,val}/<class>/...`` split folders;
- ``list``: "path label" lines (MMAction2 / Kinetics style; label an integer or a class name);
- ``csv``: a header with ``path,label`` and optional ``start,end`` (seconds);
- ``ucf101``: ``classInd.txt`` + ``trainlist0N.txt`` / ``testlist0N.txt``;
- ``hmdb51``: ``<class>_test_splitN.txt`` files (1 = train, 2 = test).

Indexing never decodes a file: records hold a path and a label, and a video is opened only when
a sample is drawn. A video that fails to decode is not replaced by another one (that silently
biases the data); `VideoDataset` returns a failure record that `collate_videos` drops and the
training loop writes to an errors manifest.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vidattn.data.decode import DEFAULT_TIMEOUT_S, VideoReader, open_video
from vidattn.data.loader import batch_buffer, collate_videos
from vidattn.data.sampling import ClipSampler, ClipTooShortError, _sample_rng, _SampleRng
from vidattn.data.transforms import spatial_views
from vidattn.errors import ConfigError, VidattnError, VideoDecodeError

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoRecord",
    "VideoDataset",
    "ReaderCache",
    "load_annotations",
    "scan_videos",
    "save_classes",
    "load_classes",
]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif", ".3gp", ".ts", ".ogv"}
)
# Samplers defined there take a `_SampleRng` as their generator (they only call its methods).
_SAMPLERS_MODULE = ClipSampler.__module__
_SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation", "test", "testing")}


@dataclass(frozen=True)
class VideoRecord:
    """One annotated video: its path, its class index and, optionally, the part of it that is labelled.

    `start_s` / `end_s` (seconds, from a CSV's ``start`` / ``end`` columns, e.g. Kinetics' trimmed
    segments) limit the frames clips are sampled from; None means the start / end of the file.
    """

    path: str
    label: int
    start_s: float | None = None
    end_s: float | None = None


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def scan_videos(root: str | os.PathLike) -> list[Path]:
    """All video files under `root`, recursively, in a stable (sorted) order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_video(f) and not f.startswith("."))
    return found


def save_classes(classes: Sequence[str], path: str | os.PathLike) -> None:
    """Write the class list (index -> name) as JSON."""
    Path(path).write_text(json.dumps(list(classes), indent=1) + "\n")


def load_classes(path: str | os.PathLike) -> list[str]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise ConfigError(f"{path}: expected a JSON list of class names")
    return data


# ------------------------------------------------------------------------------------------------
# Annotation parsers
# ------------------------------------------------------------------------------------------------
def _split_dir(root: Path, split: str) -> Path | None:
    for name in _SPLIT_NAMES.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    return None


def _from_folders(root: Path, classes: Sequence[str] | None) -> tuple[list[VideoRecord], list[str]]:
    class_dirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ConfigError(f"{root}: no class folders found (expected {root}/<class>/<video>)")
    classes = list(classes) if classes is not None else class_dirs
    index = {c: i for i, c in enumerate(classes)}
    records = []
    for name in class_dirs:
        if name not in index:
            raise ConfigError(f"{root}/{name}: class not in the class list {classes[:5]}...")
        records.extend(VideoRecord(str(p), index[name]) for p in scan_videos(root / name))
    return records, classes


def _resolve(root: Path, rel: str) -> str:
    p = Path(rel)
    return str(p if p.is_absolute() else root / p)


def _label_of(token: str, index: dict[str, int], ann: Path) -> int:
    if token in index:
        return index[token]
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    raise ConfigError(f"{ann}: unknown label {token!r}")


def _from_list(ann: Path, root: Path, classes: Sequence[str] | None) -> tuple[list[VideoRecord], list[str]]:
    rows = []
    for lineno, line in enumerate(ann.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ConfigError(f"{ann}:{lineno}: expected 'path label', got {line!r}")
        rows.append(parts)
    names = sorted({lab for _, lab in rows if not re.fullmatch(r"-?\d+", lab)})
    classes = list(classes) if classes is not None else (names or [str(i) for i in _int_range(rows)])
    index = {c: i for i, c in enumerate(classes)}
    return [VideoRecord(_resolve(root, p), _label_of(lab, index, ann)) for p, lab in rows], classes


def _int_range(rows: list[list[str]]) -> range:
    ints = [int(lab) for _, lab in rows]
    return range(max(ints) + 1 if ints else 0)


def _from_csv(ann: Path, root: Path, classes: Sequence[str] | None) -> tuple[list[VideoRecord], list[str]]:
    with ann.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise ConfigError(f"{ann}: CSV needs a header with at least 'path,label', got {reader.fieldnames}")
        rows = list(reader)
    names = sorted({r["label"] for r in rows if not re.fullmatch(r"-?\d+", r["label"])})
    classes = list(classes) if classes is not None else (names or [str(i) for i in range(_max_int(rows) + 1)])
    index = {c: i for i, c in enumerate(classes)}

    def seconds(v: str | None) -> float | None:
        return float(v) if v not in (None, "") else None

    return [
        VideoRecord(
            _resolve(root, r["path"]), _label_of(r["label"], index, ann), seconds(r.get("start")), seconds(r.get("end"))
        )
        for r in rows
    ], classes


def _max_int(rows: list[dict[str, str]]) -> int:
    return max((int(r["label"]) for r in rows), default=-1)


def _find(root: Path, name: str) -> Path | None:
    for cand in (root / name, root / "ucfTrainTestlist" / name, root / "splits" / name, root / "annotations" / name):
        if cand.is_file():
            return cand
    return None


def _from_ucf101(root: Path, split: str, split_id: int) -> tuple[list[VideoRecord], list[str]]:
    class_ind = _find(root, "classInd.txt")
    if class_ind is None:
        raise ConfigError(f"{root}: classInd.txt not found (looked in ., ucfTrainTestlist/, splits/, annotations/)")
    classes = [line.split()[1] for line in class_ind.read_text().splitlines() if line.strip()]
    index = {c: i for i, c in enumerate(classes)}
    list_name = f"{'trainlist' if split == 'train' else 'testlist'}{split_id:02d}.txt"
    ann = _find(root, list_name)
    if ann is None:
        raise ConfigError(f"{root}: {list_name} not found")
    video_root = (
        root / "videos" if (root / "videos").is_dir() else root / "UCF-101" if (root / "UCF-101").is_dir() else root
    )
    records = []
    for line in ann.read_text().splitlines():
        if not line.strip():
            continue
        rel = line.split()[0]
        name = rel.split("/")[0]
        if name not in index:
            raise ConfigError(f"{ann}: class {name!r} not in classInd.txt")
        records.append(VideoRecord(str(video_root / rel), index[name]))
    return records, classes


def _from_hmdb51(root: Path, split: str, split_id: int) -> tuple[list[VideoRecord], list[str]]:
    split_files = sorted(root.rglob(f"*_test_split{split_id}.txt"))
    if not split_files:
        raise ConfigError(f"{root}: no *_test_split{split_id}.txt files found")
    classes = sorted(f.name[: -len(f"_test_split{split_id}.txt")] for f in split_files)
    index = {c: i for i, c in enumerate(classes)}
    want = "1" if split == "train" else "2"
    video_root = root / "videos" if (root / "videos").is_dir() else root
    records = []
    for f in split_files:
        name = f.name[: -len(f"_test_split{split_id}.txt")]
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == want:
                records.append(VideoRecord(str(video_root / name / parts[0]), index[name]))
    return records, classes


def detect_format(root: Path, ann_file: Path | None) -> str:
    """Guess the annotation format from an annotation file's name or the root's contents."""
    if ann_file is not None:
        return "csv" if ann_file.suffix.lower() == ".csv" else "list"
    if _find(root, "classInd.txt") is not None:
        return "ucf101"
    if next(root.rglob("*_test_split1.txt"), None) is not None:
        return "hmdb51"
    return "folder"


def load_annotations(
    root: str | os.PathLike,
    split: str = "train",
    *,
    fmt: str = "auto",
    ann_file: str | os.PathLike | None = None,
    split_id: int = 1,
    classes: Sequence[str] | None = None,
) -> tuple[list[VideoRecord], list[str]]:
    """Read a dataset's annotations for one split.

    Args:
        root: dataset root (videos are resolved relative to it).
        split: "train" or "val" ("test" is accepted as "val").
        fmt: "auto", "folder", "list", "csv", "ucf101" or "hmdb51".
        ann_file: the list/CSV file for `split` (list and csv formats).
        split_id: which official split (1-3) for ucf101/hmdb51.
        classes: an existing class list to keep indices stable (e.g. the training split's).

    Returns:
        The records and the class list (index -> name).
    """
    root = Path(root)
    if not root.exists():
        raise ConfigError(f"data root {root} does not exist")
    split = "val" if split == "test" else split
    ann = Path(ann_file) if ann_file else None
    if ann is not None and not ann.is_absolute() and not ann.exists():
        ann = root / ann
    if ann is not None and not ann.is_file():
        raise ConfigError(f"annotation file {ann} does not exist")
    fmt = detect_format(root, ann) if fmt == "auto" else fmt
    if fmt == "folder":
        base = _split_dir(root, split)
        if base is None and _split_dir(root, "train") is not None:
            raise ConfigError(f"{root}: has split folders but none for split {split!r}")
        records, found = _from_folders(base or root, classes)
    elif fmt in ("list", "csv"):
        if ann is None:
            raise ConfigError(f"format {fmt!r} needs an annotation file (data.train_ann / data.val_ann)")
        records, found = (_from_csv if fmt == "csv" else _from_list)(ann, root, classes)
    elif fmt == "ucf101":
        records, found = _from_ucf101(root, split, split_id)
    elif fmt == "hmdb51":
        records, found = _from_hmdb51(root, split, split_id)
    else:
        raise ConfigError(f"unknown annotation format {fmt!r}; choose auto, folder, list, csv, ucf101 or hmdb51")
    if classes is not None and list(found) != list(classes):
        raise ConfigError(f"{root} ({split}): class list differs from the training split's")
    bad = [r for r in records if not 0 <= r.label < len(found)]
    if bad:
        raise ConfigError(f"{bad[0].path}: label {bad[0].label} out of range for {len(found)} classes")
    return records, list(found)


# ------------------------------------------------------------------------------------------------
# Samples
# ------------------------------------------------------------------------------------------------
# Readers a forked DataLoader worker inherited from its parent. Their decoder threads did not survive
# the fork, so using them hangs and even freeing them can crash (decord joins its dead threads): the
# child keeps them here, untouched, for its lifetime.
_INHERITED_READERS: list[OrderedDict] = []


class ReaderCache:
    """A small LRU of open readers, one cache per DataLoader worker (each worker has its own copy).

    A cache used in the main process (say, ``dataset[0]`` to look at a sample) and then forked into
    workers starts empty in each worker.
    """

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._readers: OrderedDict[tuple, VideoReader] = OrderedDict()
        self._pid = os.getpid()

    def _own_process(self) -> None:
        if self._pid != os.getpid():
            _INHERITED_READERS.append(self._readers)
            self._readers = OrderedDict()
            self._pid = os.getpid()

    def get(self, path: str, **kwargs: Any) -> VideoReader:
        self._own_process()
        key = (path, tuple(sorted(kwargs.items())))
        if self._readers and next(reversed(self._readers)) == key:  # the most recent already: nothing to pause
            return self._readers[key]
        previous = next(reversed(self._readers.values()), None)
        reader = self._readers.pop(key, None)
        if previous is not None and previous is not reader:
            # Its turn is over: no decoding ahead for nobody while it waits. A failure here belongs to that
            # file, not this one; its next read reports it.
            with contextlib.suppress(VideoDecodeError):
                previous.pause()
        if reader is None:
            reader = open_video(path, **kwargs)
            while len(self._readers) >= self.capacity:
                self._readers.popitem(last=False)[1].close()
        self._readers[key] = reader
        return reader

    def drop(self, path: str) -> None:
        self._own_process()
        for key in [k for k in self._readers if k[0] == path]:
            self._readers.pop(key).close()

    def clear(self) -> None:
        self._own_process()
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def __getstate__(self) -> dict:
        # Open readers do not pickle; a worker starts with an empty cache.
        return {"capacity": self.capacity, "_readers": OrderedDict(), "_pid": -1}


@dataclass(frozen=True)
class _Decoded:
    """A whole video held in memory by `VideoDataset`'s decoded-video cache."""

    frames: torch.Tensor  # uint8 (N, H, W, C) at decode size
    fps: float


def _flat(rows: list[list[int]]) -> list[int]:
    """A sample's frame indices, clip after clip."""
    return rows[0] if len(rows) == 1 else [i for row in rows for i in row]


@dataclass(slots=True)
class _Job:
    """One sample's read, planned before any frame decodes (`VideoDataset._prepare`).

    `crop` is the square the reader copies out of each frame, (left, top, width, height), and `shape` the
    sample's video shape then; both None where the frames are cropped after decoding (three crops, padding,
    a per-sample transform, the decoded-video cache).
    """

    index: int
    record: VideoRecord
    source: VideoReader | _Decoded
    indices: list[list[int]]  # (V', T) frame indices (lists: an array per sample cost tens of us after a decode)
    rng: np.random.Generator | _SampleRng  # the latter: until something else than `integers` is drawn
    crop: tuple[int, int, int, int] | None
    shape: tuple[int, ...] | None


class VideoDataset(Dataset):
    """Clips from annotated videos, as uint8 tensors ready for batched device transforms.

    A sample is a dict with ``video`` (uint8 ``(V, T, S, S, C)``: V spatial views of T frames at
    square size S), ``label``, ``path``, ``frame_indices`` (``(V', T)``, one row per temporal
    clip) and ``index``. A sample that fails holds ``error`` instead of ``video``.

    Args:
        records: the videos and labels (`load_annotations`).
        classes: class names, index -> name.
        sampler: picks frame indices from a video's length.
        size: frames are decoded with their short side at `size`, then cropped square.
        crop: "random" (train), "center" or "three" (three crops along the long side, test).
        seed: base seed; a sample's randomness depends on (seed, epoch, index) only.
        backend: decoder backend for `open_video`.
        timeout_s: per-call decode time limit.
        cache_size: open readers kept per worker.
        transform: optional per-sample function on the uint8 video (batched device transforms are preferred).
        cache_mb: decoded videos (at decode size, all frames) kept in memory per process, first come first
            served until the budget is spent; 0 turns it off. For small datasets, where opening a file and
            converting its frames costs more than the model's step, every epoch after the first decodes nothing.
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        classes: Sequence[str],
        sampler: ClipSampler,
        *,
        size: int = 128,
        crop: str = "random",
        seed: int = 0,
        backend: str = "auto",
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        cache_size: int = 8,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_mb: float = 0.0,
    ) -> None:
        if crop not in ("random", "center", "three"):
            raise ValueError(f"crop must be random, center or three, got {crop!r}")
        self.records = list(records)
        self.classes = list(classes)
        self.sampler = sampler
        self.size, self.crop, self.seed, self.backend, self.timeout_s = size, crop, seed, backend, timeout_s
        self.transform = transform
        self.epoch = 0
        self._cache = ReaderCache(cache_size)
        self._decoded: dict[str, _Decoded] = {}
        self._decoded_budget = int(cache_mb * 2**20)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Change the random stream (call before each epoch; DataLoader workers see it if not persistent)."""
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        # `EpochSampler` passes (epoch, index) so persistent workers follow the epoch without restarting.
        job = self._prepare(key)
        return job if isinstance(job, dict) else self._finish(job)

    def __getitems__(self, keys: Sequence[int | tuple[int, int]]) -> list[dict[str, Any]]:
        """The samples of one batch, each clip decoded straight into its slot of one batch tensor.

        The DataLoader calls this instead of `__getitem__` per key; `collate_videos` then finds the clips
        already stacked and copies nothing (in a worker the batch is in shared memory, as collate would put
        it). Without this, each clip was copied out of the decoder, then its crop again into the batch: on
        320x240 clips that was a quarter of the loader's time. Failed samples leave their slot unused.
        """
        entries, batch = self._read_batch(keys)
        return [self._sample(e, batch[k]) if isinstance(e, _Job) else e for k, e in enumerate(entries)]

    def _collated(self, keys: Sequence[int | tuple[int, int]]) -> dict[str, Any]:
        """``collate_videos(self.__getitems__(keys))``, the same batch, made without a sample dict or a torch call
        per clip where every clip went into the batch (the main process's loader, `build_loader` with no workers,
        asks for this). Right after a clip's decode every cold library call is slow (a torch call took 33-98 us,
        median, timed after each 320x240 clip's decode), and the samples and their collate made several per clip (a view
        of the batch, an index tensor, the collate's shape, dtype and storage checks) and more per batch."""
        if type(self).__getitems__ is not VideoDataset.__getitems__:  # a subclass's samples: as it makes them
            return collate_videos(self.__getitems__(keys))
        entries, batch = self._read_batch(keys)
        if batch is None or not all(isinstance(e, _Job) for e in entries):  # failures, clips outside the batch
            return collate_videos(
                [self._sample(e, batch[k]) if isinstance(e, _Job) else e for k, e in enumerate(entries)]
            )
        return {
            "video": batch,
            "label": torch.from_numpy(np.array([e.record.label for e in entries], dtype=np.int64)),
            "path": [e.record.path for e in entries],
            "frame_indices": torch.from_numpy(np.array([e.indices for e in entries], dtype=np.int64)),
            "index": torch.from_numpy(np.array([e.index for e in entries], dtype=np.int64)),
            "errors": [],
        }

    def _read_batch(
        self, keys: Sequence[int | tuple[int, int]]
    ) -> tuple[list[_Job | dict[str, Any]], torch.Tensor | None]:
        """Every key's sample, in order: a `_Job` whose clip was decoded into its slot of the batch (the same index
        in the returned tensor), or the sample's dict (a failure, or a clip not cropped by the reader)."""
        entries: list[_Job | dict[str, Any]] = []
        batch = slots = shape = None  # the batch tensor; its memory as (B, V' * T, S, S, C) numpy; a sample's shape
        for k, key in enumerate(keys):
            # One sample at a time, opened and decoded before the next is opened: a batch may hold more
            # files than the reader cache keeps open.
            job = self._prepare(key)
            if isinstance(job, dict):
                entries.append(job)
                continue
            if batch is None and job.shape is not None:
                shape = job.shape
                batch = batch_buffer((len(keys), *shape), torch.uint8)
                slots = batch.numpy().reshape(len(keys), -1, *shape[2:])
            if job.shape != shape or shape is None:
                entries.append(self._finish(job))
                continue
            try:
                # Through numpy views (a torch view or conversion per sample costs more): the crop of the clip's
                # frames written straight into its slot.
                job.source._read_clip(_flat(job.indices), job.crop, slots[k])
            except (VidattnError, OSError, RuntimeError, ValueError) as exc:
                entries.append(self._failure(job.record, job.index, exc))
                continue
            entries.append(job)
        return entries, batch

    def _failure(self, record: VideoRecord, index: int, exc: Exception) -> dict[str, Any]:
        self._cache.drop(record.path)
        reason = str(exc)
        if reason.startswith(record.path + ": "):
            reason = reason[len(record.path) + 2 :]
        return {"error": reason or type(exc).__name__, "path": record.path, "label": record.label, "index": index}

    def _prepare(self, key: int | tuple[int, int]) -> _Job | dict[str, Any]:
        """What one sample reads (its file, frames and crop), or its failure record; decodes no frame
        unless the whole video goes into the decoded-video cache."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        record = self.records[index]
        rng = _sample_rng(self.seed, epoch, index)  # make_rng's stream
        if type(self.sampler).__module__ != _SAMPLERS_MODULE:
            rng = rng.generator()  # another sampler may want a real Generator; vidattn's only call its methods
        try:
            return self._plan(index, record, rng)
        except (VidattnError, OSError, RuntimeError, ValueError) as exc:
            return self._failure(record, index, exc)

    def _finish(self, job: _Job) -> dict[str, Any]:
        """Decode `job`'s clip and make the sample."""
        try:
            return self._load(job)
        except (VidattnError, OSError, RuntimeError, ValueError) as exc:
            return self._failure(job.record, job.index, exc)

    def _plan(self, index: int, record: VideoRecord, rng: np.random.Generator) -> _Job:
        decoded = self._decoded.get(record.path)
        reader = None
        if decoded is None:
            reader = self._cache.get(record.path, backend=self.backend, size=self.size, timeout_s=self.timeout_s)
            decoded = self._decode_whole(record.path, reader)
        num_frames, fps = (reader.num_frames, reader.fps) if decoded is None else (len(decoded.frames), decoded.fps)
        first, last = self._trim(num_frames, fps, record)
        try:
            clips = self.sampler(last - first, rng)
        except ClipTooShortError as exc:
            raise VidattnError(str(exc)) from None
        indices = [[int(i) + first for i in c.frame_indices] for c in clips]  # `first`: a trimmed record
        crop = None
        if decoded is None and self.crop != "three" and self.transform is None:
            w, h = reader.width, reader.height
            if w >= self.size and h >= self.size:
                # The crop `spatial_views` would take (the same draws from `rng`), handed to the reader: it copies
                # only those pixels out of each decoded frame.
                if self.crop == "center":
                    top, left = (h - self.size) // 2, (w - self.size) // 2
                else:
                    top, left = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
                crop = (left, top, self.size, self.size)
        shape = None if crop is None else (len(indices), len(indices[0]), self.size, self.size, 3)
        return _Job(index, record, reader if decoded is None else decoded, indices, rng, crop, shape)

    def _load(self, job: _Job) -> dict[str, Any]:
        flat, clips = _flat(job.indices), len(job.indices)
        if job.crop is not None:
            frames = job.source.get_frames(flat, crop=job.crop, numpy=True)
            return self._sample(job, torch.from_numpy(frames.reshape(clips, -1, *frames.shape[1:])))
        if isinstance(job.source, _Decoded):
            frames = job.source.frames[torch.tensor(flat, dtype=torch.long)]  # (V'*T, H, W, C)
        else:
            frames = job.source.get_frames(flat)
        frames = frames.view(clips, -1, *frames.shape[1:])  # (V', T, H, W, C)
        # Views, not copies: collate_videos stacks them into the batch, the one copy they need.
        rng = job.rng.generator() if isinstance(job.rng, _SampleRng) else job.rng
        video = spatial_views(frames, self.size, self.crop, rng, copy=False)  # (V' * views, T, S, S, C)
        if self.transform is not None:
            video = self.transform(video)
        return self._sample(job, video)

    @staticmethod
    def _sample(job: _Job, video: torch.Tensor) -> dict[str, Any]:
        return {
            "video": video,
            "label": job.record.label,
            "path": job.record.path,
            "frame_indices": torch.tensor(job.indices, dtype=torch.long),
            "index": job.index,
        }

    def _decode_whole(self, path: str, reader: VideoReader) -> _Decoded | None:
        """Decode all of `path` into the in-memory cache if it fits the budget; None when it does not."""
        nbytes = reader.num_frames * reader.height * reader.width * 3
        if nbytes > self._decoded_budget:
            return None
        claimed = reader.num_frames
        try:
            frames = reader.get_frames(range(claimed))
        except VideoDecodeError:
            if not 0 < reader.num_frames < claimed:
                raise
            frames = reader.get_frames(range(reader.num_frames))  # a truncated file: count corrected, retry once
        self._decoded[path] = decoded = _Decoded(frames, reader.fps)
        self._decoded_budget -= frames.numel()
        self._cache.drop(path)  # the reader is not needed any more
        return decoded

    @staticmethod
    def _trim(num_frames: int, fps: float, record: VideoRecord) -> tuple[int, int]:
        first, last = 0, num_frames
        if record.start_s is not None and fps > 0:
            first = min(int(record.start_s * fps), num_frames - 1)
        if record.end_s is not None and fps > 0:
            last = max(first + 1, min(int(np.ceil(record.end_s * fps)), num_frames))
        return first, last
