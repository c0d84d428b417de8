"""Per-video work of `vidattn score`, run in DataLoader workers: decode, check, sample, key frames.

`ScoreDataset` is an iterable dataset over work units (a file, or a tar shard with the members
still to score). Workers take units from a shared counter, so a long tar or a slow 4K file does not
leave the other workers idle. Each yields one record per video: the result-row fields, plus the
model input (uint8 ``(V, T, S, S, C)``, V uniform views) when a checkpoint is used. A video that fails
yields an error record instead; nothing a file contains can stop the iteration.

Tar members are streamed with `tarfile` in stream mode (``r|*``) and decoded from memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import multiprocessing as mp
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from vidattn.data.decode import VideoReader, open_video
from vidattn.data.sampling import sampler_for
from vidattn.data.transforms import spatial_views
from vidattn.errors import VideoDecodeError
from vidattn.scoring.inputs import InputItem
from vidattn.scoring.remote import fetch_source, is_url, open_stream

__all__ = [
    "DecodeSpec",
    "WorkUnit",
    "ScoreDataset",
    "score_source",
    "make_units",
    "error_record",
    "resolve_keyframe_fn",
    "KeyframeFn",
    "model_input",
]

_MAX_WORKERS = 256


#: ``fn(source, reader, k) -> [{"rank", "frame_index", "time_s", "score"}, ...]``: the key-frame seam.
#: `source` is the path or the tar member's bytes, `reader` the open native-size reader of it.
KeyframeFn = Callable[[Any, VideoReader, int], list[dict[str, Any]]]


@dataclass(frozen=True)
class DecodeSpec:
    """What each worker does with a video.

    Attributes:
        backend: decoder backend for `open_video`.
        timeout_s: per decode call; a stuck decoder becomes an error row, not a hang.
        num_threads: decoder threads per video (parallelism comes from workers, one video each).
        check_frames: without a model, decode this many frames spread over the video (first and last
            included) so truncated/corrupt files are caught, not catalogued as fine.
        clip_len, stride, num_clips: the model's clip and the number of test views (clip_len None: no model).
        sampler, snippet: how the model's views cover the video (its training config's ``data`` values).
        size: decode with the short side at `size`, then centre-crop a square (as evaluation does).
        keyframes_k: key frames per video (None: none).
        keyframes_checkpoint: with `keyframes_k`, the checkpoint whose model scores the key frames (its evidence
            over the whole video, as `vidattn keyframes --checkpoint`); None: the training-free scorer.
    """

    backend: str = "auto"
    timeout_s: float | None = 60.0
    num_threads: int = 1
    check_frames: int = 4
    clip_len: int | None = None
    stride: int = 1
    num_clips: int = 3
    size: int = 128
    keyframes_k: int | None = None
    keyframes_checkpoint: str | None = None
    sampler: str = "random"  # the model's data.sampler (see `model_views`)
    snippet: int = 1  # the model's data.snippet

    def for_model(self, data: Any, num_clips: int) -> DecodeSpec:
        """This spec reading videos as a checkpoint's model was evaluated: `data` is its config's ``data``."""
        return dataclasses.replace(
            self,
            clip_len=data.clip_len,
            stride=data.stride,
            num_clips=num_clips,
            size=data.size,
            sampler=data.sampler,
            snippet=data.snippet,
        )


@dataclass
class WorkUnit:
    """A file, or a tar and the keys of its members still to score (streamed once, in order)."""

    path: str
    items: list[InputItem] = field(default_factory=list)

    @property
    def is_tar(self) -> bool:
        return self.items[0].member is not None


def make_units(items: Sequence[InputItem]) -> list[WorkUnit]:
    """Group items into work units: one per file, one per tar (its pending members together)."""
    units: dict[str, WorkUnit] = {}
    for item in items:
        unit = units.setdefault(item.unit if item.member is not None else item.key, WorkUnit(item.path))
        unit.items.append(item)
    return list(units.values())


# ------------------------------------------------------------------------------------------------
# One video
# ------------------------------------------------------------------------------------------------
def _check_frame_indices(num_frames: int, count: int) -> list[int]:
    if num_frames <= 0 or count <= 0:
        return []
    return sorted({round(k * (num_frames - 1) / max(count - 1, 1)) for k in range(count)})


def model_views(spec: DecodeSpec, num_frames: int) -> list:
    """The frames the model reads from a video: its test views, as `vidattn eval` takes them (whole-video
    coverage for models trained with ``data.sampler`` auto or segment, uniform dense clips for ``random``)."""
    sampler = sampler_for(
        spec.sampler,
        clip_len=spec.clip_len,
        stride=spec.stride,
        train=False,
        num_clips=spec.num_clips,
        snippet=spec.snippet,
        short="loop",
    )
    return sampler(num_frames)


def model_input(source: Any, reader: VideoReader, spec: DecodeSpec) -> torch.Tensor:
    """Uniform views of the video as uint8 ``(V, T, S, S, C)``, decoded at the model's size."""
    clips = model_views(spec, reader.num_frames)
    indices = [i for clip in clips for i in clip.frame_indices]
    backends = [spec.backend] if spec.backend != "auto" else ["auto", "pyav"]
    frames, error = None, None
    for backend in backends:
        try:
            with open_video(
                source, backend=backend, size=spec.size, num_threads=spec.num_threads, timeout_s=spec.timeout_s
            ) as small:
                frames = small.get_frames(indices)  # (V*T, H, W, C)
            break
        except VideoDecodeError as exc:
            # decord2 fails on some resize targets (e.g. short side 72 of a square or rotated video)
            # where PyAV succeeds; a truncated file fails on both, so keep the first reason and stop.
            error = error or exc
            if "frames decode" in exc.reason:
                break
    if frames is None:
        raise error
    frames = frames.view(len(clips), -1, *frames.shape[1:])  # (V, T, H, W, C)
    return spatial_views(frames, spec.size, "center", np.random.default_rng(0))


def score_source(
    source: str | bytes, item: InputItem, spec: DecodeSpec, keyframe_fn: KeyframeFn | None = None
) -> dict[str, Any]:
    """Score one video (a path, or a tar member's bytes). Never raises for a bad file.

    Returns:
        A record: result-row fields (`path`, `status`, `error`, metadata, `keyframes_json`, ...),
        ``video`` (model input or None) and ``elapsed_s`` (decode seconds).
    """
    t0 = time.perf_counter()
    row: dict[str, Any] = {
        "path": item.key,
        "size": item.size,
        "mtime": item.mtime,
        "keyframes_k": spec.keyframes_k,
        "status": "ok",
        "error": None,
        "video": None,
    }
    reader: VideoReader | None = None
    stack = contextlib.ExitStack()
    try:
        if item.error:
            raise VideoDecodeError(item.key, item.error)
        if isinstance(source, str) and is_url(source):  # an object: its bytes, or a spool file for a big one
            source = stack.enter_context(fetch_source(source, item.size))
        if isinstance(source, str):
            _check_regular_file(source)
        reader = open_video(source, backend=spec.backend, num_threads=spec.num_threads, timeout_s=spec.timeout_s)
        row.update(_metadata(reader))
        if spec.clip_len is not None:
            row["video"] = model_input(source, reader, spec)
        else:
            reader.get_frames(_check_frame_indices(reader.num_frames, spec.check_frames))
        if spec.keyframes_k:
            if keyframe_fn is None:
                raise ValueError("keyframes_k is set but no key-frame scorer was given")
            row["keyframes_json"] = json.dumps(keyframe_fn(source, reader, spec.keyframes_k), ensure_ascii=False)
    except VideoDecodeError as exc:
        row.update(status="error", error=exc.reason, video=None)
    except Exception as exc:  # a decoder or a bug must cost one row, never the archive run
        row.update(status="error", error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}", video=None)
    finally:
        if reader is not None:
            if row["status"] == "error":  # the reader may have corrected the frame count while failing
                row.update(_metadata(reader))
            reader.close()
        stack.close()
    row["elapsed_s"] = round(time.perf_counter() - t0, 6)
    return row


def _check_regular_file(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # missing / broken link: open_video gives the precise reason
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise VideoDecodeError(path, f"not a regular file ({kind})")


def _metadata(reader: VideoReader) -> dict[str, Any]:
    return {
        "container": reader.container or None,
        "codec": reader.codec or None,
        "width": reader.width,
        "height": reader.height,
        "num_frames": reader.num_frames,
        "fps": round(reader.fps, 3),
        "duration_s": round(reader.duration_s, 3),
        "rotation": reader.rotation,
        "backend": reader.backend,
    }


# ------------------------------------------------------------------------------------------------
# The dataset
# ------------------------------------------------------------------------------------------------
class ScoreDataset(IterableDataset):
    """Records for every item of every unit; workers share a counter to take the next unit.

    Args:
        units: work units (`make_units`).
        spec: per-video work.
        keyframe_fn: key-frame scorer (the seam), needed when ``spec.keyframes_k`` is set.
    """

    def __init__(self, units: Sequence[WorkUnit], spec: DecodeSpec, keyframe_fn: KeyframeFn | None = None) -> None:
        if spec.keyframes_k and keyframe_fn is None:
            raise ValueError("spec.keyframes_k is set but no keyframe_fn was given")
        self.units = list(units)
        self.spec = spec
        self.keyframe_fn = keyframe_fn
        # Shared across forked workers: the next unit to take, and per worker (pid, unit + 1, member)
        # of what it is decoding now, so the main process can name the file that killed a worker.
        self._next = mp.Value("q", 0)
        self._current = mp.Array("q", 3 * _MAX_WORKERS)

    def in_flight(self, worker_id: int) -> InputItem | None:
        """The item worker `worker_id` was decoding (for crash reports), or None."""
        if worker_id >= _MAX_WORKERS:
            return None
        unit, member = self._current[3 * worker_id + 1], self._current[3 * worker_id + 2]
        if unit <= 0:
            return None
        items = self.units[unit - 1].items
        return items[member] if 0 <= member < len(items) else None

    def worker_pid(self, worker_id: int) -> int | None:
        return self._current[3 * worker_id] or None if worker_id < _MAX_WORKERS else None

    def _take(self) -> int | None:
        with self._next.get_lock():
            index = self._next.value
            if index >= len(self.units):
                return None
            self._next.value = index + 1
        return index

    def _mark(self, worker_id: int, unit: int, member: int) -> None:
        if worker_id < _MAX_WORKERS:
            self._current[3 * worker_id] = os.getpid()
            self._current[3 * worker_id + 1] = unit + 1
            self._current[3 * worker_id + 2] = member

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker_id = info.id if info is not None else 0
        while (index := self._take()) is not None:
            unit = self.units[index]
            if unit.is_tar:
                yield from self._iter_tar(unit, index, worker_id)
            else:
                self._mark(worker_id, index, 0)
                yield score_source(unit.path, unit.items[0], self.spec, self.keyframe_fn)
        self._mark(worker_id, -1, 0)

    def _iter_tar(self, unit: WorkUnit, index: int, worker_id: int) -> Iterator[dict[str, Any]]:
        """Stream the tar once; decode wanted members from memory; every wanted member yields one record."""
        wanted = {item.member: pos for pos, item in enumerate(unit.items)}
        done: set[str] = set()
        reason = "member not found in the tar archive"
        try:
            with contextlib.ExitStack() as stack:
                # A tar in a bucket streams from a buffered remote file, like a local one from disk.
                fileobj = stack.enter_context(open_stream(unit.path)) if is_url(unit.path) else None
                tf = stack.enter_context(tarfile.open(unit.path if fileobj is None else None, "r|*", fileobj))
                for info in tf:
                    pos = wanted.get(info.name)
                    if pos is None or info.name in done:
                        continue
                    item = unit.items[pos]
                    self._mark(worker_id, index, pos)
                    if item.error or not info.isfile():
                        record = score_source(b"", item, self.spec, self.keyframe_fn)
                    else:
                        data = tf.extractfile(info).read()  # raises on a truncated archive: handled below
                        record = score_source(data, item, self.spec, self.keyframe_fn)
                    done.add(info.name)
                    yield record
                    if len(done) == len(wanted):
                        break
        except (tarfile.TarError, OSError, EOFError) as exc:
            reason = f"tar archive unreadable before this member: {type(exc).__name__}: {' '.join(str(exc).split())}"
        for item in unit.items:  # exactly one record per wanted member, even when the tar is truncated
            if item.member not in done:
                yield error_record(item, reason[:300], self.spec.keyframes_k)


def error_record(item: InputItem, reason: str, keyframes_k: int | None = None) -> dict[str, Any]:
    """The record of a video that was not decoded (a truncated tar, a crashed worker): an error row for `item`."""
    return {
        "path": item.key,
        "size": item.size,
        "mtime": item.mtime,
        "keyframes_k": keyframes_k,
        "status": "error",
        "error": reason,
        "video": None,
        "elapsed_s": 0.0,
    }


def resolve_keyframe_fn(timeout_s: float | None = 60.0, checkpoint: str | None = None) -> KeyframeFn:
    """The key-frame scorer for ``--keyframes``: `vidattn.keyframes.pipeline.score_video`, with the model of
    `checkpoint` when given (loaded once per process, on the CPU of the process that decodes), else training-free.

    Contract of the seam: ``fn(source, reader, k) -> [{"rank", "frame_index", "time_s", "score", ...}]``,
    best first.
    """
    from vidattn.keyframes.pipeline import KeyframeOptions, score_video

    options = KeyframeOptions(k=None, device="cpu", timeout_s=timeout_s)

    def app_keyframes(source: Any, reader: Any, k: int) -> list[dict[str, Any]]:
        # `score_video` opens its own small reader; it takes a path or, for a tar member, the bytes.
        opts = KeyframeOptions(**{**options.__dict__, "k": k})
        doc = score_video(source, opts, _keyframe_model(checkpoint) if checkpoint else None)
        return [{key: v for key, v in kf.items() if key != "image"} for kf in doc["keyframes"]]

    return app_keyframes


@functools.cache
def _keyframe_model(checkpoint: str) -> Any:
    """The `KeyframeModel` of a checkpoint on the CPU, once per process (a DataLoader worker, a Ray worker)."""
    from vidattn.keyframes.model import KeyframeModel

    return KeyframeModel.load(checkpoint, torch.device("cpu"))
