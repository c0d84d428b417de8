"""The reader contract every backend implements: frame access, streaming, the timeout and fork safety."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import math
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import numpy as np

from vidattn.data.decode.header import _short, max_frame_pixels
from vidattn.errors import VideoDecodeError

if TYPE_CHECKING:  # torch is imported where frames become tensors, so that decoding can start without it
    import torch

Source = str | os.PathLike | BinaryIO | bytes
Size = int | tuple[int, int] | None
#: A crop box in output pixels: (left, top, width, height).
Crop = tuple[int, int, int, int]
T = TypeVar("T")

#: Seconds one decode call may block before the reader gives up.
DEFAULT_TIMEOUT_S = 120.0

# A forked child (a DataLoader worker) inherits the parent's decoders but not their threads: freeing
# one there kills the child (decord: SIGSEGV) or hangs it (PyAV joining frame threads that do not
# exist), measured both ways. So the child never frees what it inherits: every live reader is pinned
# for the child's whole life (copy-on-write memory, never touched; close() does nothing there), and
# the garbage that existed at the fork (a decoder in a reference cycle, say) is frozen out of the
# child's collector (`gc.freeze`, the pattern Python documents for fork without exec; the parent
# unfreezes at once, unless the program froze objects itself: then its freezing is left as it was).
_LIVE_READERS: weakref.WeakSet[VideoReader] = weakref.WeakSet()
_INHERITED_READERS: list[VideoReader] = []
_FROZE_FOR_FORK = False


def _before_fork() -> None:
    global _FROZE_FOR_FORK
    _FROZE_FOR_FORK = gc.get_freeze_count() == 0
    if _FROZE_FOR_FORK:
        gc.freeze()


def _after_fork_in_parent() -> None:
    if _FROZE_FOR_FORK:
        gc.unfreeze()


def _pin_inherited_readers() -> None:
    _INHERITED_READERS.extend(_LIVE_READERS)
    _IDLE_EXECUTORS.clear()  # their threads stayed in the parent


# Decode calls run on a thread of their own, so that one that blocks can be abandoned (`VideoReader._call`).
# Starting that thread cost about as much as decoding a small frame, paid twice per open (the header and the
# reader), so idle single-thread executors are kept for the next reader; one that blocked is never returned.
_IDLE_EXECUTORS: list[cf.ThreadPoolExecutor] = []
_MAX_IDLE_EXECUTORS = 8


# How many timed calls the current thread is inside: a decode step started inside one (a reader opened while
# `open_video` reads the header) runs there, under the outer time limit, instead of handing over to yet
# another thread (each hand-over waits for the other thread to be scheduled: milliseconds on a busy machine).
_TIMED = threading.local()


def _in_timed_call() -> bool:
    return getattr(_TIMED, "depth", 0) > 0


class _DeadlinePassed(BaseException):
    """A decode step that runs in the calling thread (`VideoReader._runs_inline`) went past its time limit.
    A BaseException, so that no ``except Exception`` on the way out of the decoder swallows it."""


def check_deadline() -> None:
    """Between two frames (or packets) of a decode step that runs in the calling thread: raise once the step
    has run longer than its time limit. A no-op (one thread-local read) everywhere else."""
    deadline = getattr(_TIMED, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise _DeadlinePassed


def _timed(fn: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        _TIMED.depth = getattr(_TIMED, "depth", 0) + 1
        try:
            return fn()
        finally:
            _TIMED.depth -= 1

    return run


def _borrow_executor() -> cf.ThreadPoolExecutor:
    try:
        return _IDLE_EXECUTORS.pop()
    except IndexError:
        return cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidattn-decode")


def _return_executor(executor: cf.ThreadPoolExecutor) -> None:
    if len(_IDLE_EXECUTORS) < _MAX_IDLE_EXECUTORS:
        _IDLE_EXECUTORS.append(executor)
    else:
        executor.shutdown(wait=False, cancel_futures=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_pin_inherited_readers
    )


@dataclass
class VideoInfo:
    """Container-level facts about a video, as `vidattn probe` prints them."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float
    rotation: int
    backend: str
    size_bytes: int | None = None
    stream: int = 0
    streams: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def silence_ffmpeg_log() -> None:
    """Keep FFmpeg's own log lines off stderr (they would repeat what `VideoDecodeError` says).

    ``av.logging.set_level(None)``, PyAV's default, discards them inside FFmpeg. A level such as PANIC
    would *install* PyAV's Python log callback: an FFmpeg frame thread that logs then needs the GIL
    while the decoding thread holds it and waits for that frame thread, and the process freezes
    (timeouts cannot fire; seen as a rare hang of a scoring worker on H.264 files). Run at import of
    this package; call it again where something else may have changed the level (a worker process).
    """
    try:
        import av.logging

        av.logging.set_level(None)
    except Exception:
        pass


silence_ffmpeg_log()


def _source_name(src: Source) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    return getattr(src, "name", None) or f"<{type(src).__name__}>"


def _output_size(width: int, height: int, size: Size) -> tuple[int, int]:
    """Displayed (W, H) after an optional resize; `size` is a short side or an explicit (W, H)."""
    if size is None:
        return width, height
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        scale = size / min(width, height)
        # Keep even dimensions: some scalers and encoders dislike odd sizes.
        return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)
    w, h = size
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return int(w), int(h)


def run_with_timeout(fn: Callable[[], T], timeout_s: float | None, path: str) -> T:
    """Run `fn` (a step before a reader exists, such as reading the headers) within `timeout_s`.

    Inside another timed call (`VideoReader._call` or this) `fn` runs at once, under that call's limit.

    Raises:
        VideoDecodeError: `fn` blocked longer than `timeout_s` (its thread is abandoned: a native call
            cannot be interrupted).
    """
    if timeout_s is None or _in_timed_call():
        return fn()
    executor = _borrow_executor()
    future = executor.submit(_timed(fn))
    try:
        result = future.result(timeout=timeout_s)
    except cf.TimeoutError:
        executor.shutdown(wait=False, cancel_futures=True)
        raise VideoDecodeError(path, f"decoder blocked for more than {timeout_s:g} s; reader abandoned") from None
    except BaseException:
        _return_executor(executor)  # `fn` raised: its thread is free again
        raise
    _return_executor(executor)
    return result


def _writable_array(out: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """`out` as a numpy array sharing its memory, checked to be a C-contiguous uint8 array of `shape`."""
    array = out if isinstance(out, np.ndarray) else out.numpy()  # a CPU tensor; numpy() raises otherwise
    if array.shape != shape or array.dtype != np.uint8 or not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(
            f"out must be a writable C-contiguous uint8 array shaped {shape}, got {array.dtype} {array.shape}"
        )
    return array


def crop_view(frames: np.ndarray, crop: Crop | None) -> np.ndarray:
    """The `crop` box, (left, top, width, height), of ``(..., H, W, C)`` frames: a view, no copy."""
    if crop is None:
        return frames
    x, y, w, h = crop
    return frames[..., y : y + h, x : x + w, :]


def _result(array: np.ndarray, out: np.ndarray | torch.Tensor | None, numpy: bool) -> torch.Tensor | np.ndarray:
    """What `get_frames` returns: `array`, or as a tensor; `out` itself where it is a tensor holding `array`."""
    if numpy:
        return array
    return out if out is not None and not isinstance(out, np.ndarray) else _to_tensor(array)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """A uint8 tensor sharing `array`'s memory (made contiguous first); imports torch on first use."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


class VideoReader(ABC):
    """A decoded video: metadata plus frame access. Use `open_video` to make one.

    Attributes:
        path: file name (or a description of the file object).
        backend: "decord" or "pyav".
        num_frames: frames in the video, corrected downwards if decoding ends early.
        fps: average frame rate.
        width, height: size of the frames returned (after rotation and resize).
        codec, container, rotation: as reported by the demuxer.
    """

    backend: str = ""

    def __init__(
        self,
        source: Source,
        *,
        size: Size = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_pixels: int | None = None,
    ) -> None:
        self.path = _source_name(source)
        self.size = size
        self.timeout_s = timeout_s
        self.max_pixels = max_frame_pixels(max_pixels)
        self.num_frames = 0
        self.fps = 0.0
        self.width = self.height = 0
        self.codec = self.container = ""
        self.rotation = 0
        self.stream = 0  # index of the video stream read, as `probe` lists them
        self.streams: list[dict[str, Any]] = []  # every video stream in the file (`header.describe_streams`)
        self._broken: str | None = None  # why the reader can no longer be used (a decoder that blocked)
        self._closed = False
        self._claimed_frames: int | None = None
        self._pid = os.getpid()
        self._executor: cf.ThreadPoolExecutor | None = None
        _LIVE_READERS.add(self)

    # -- public API -------------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def info(self) -> VideoInfo:
        """Metadata as a `VideoInfo` record."""
        size = os.path.getsize(self.path) if os.path.isfile(self.path) else None
        return VideoInfo(
            path=self.path,
            container=self.container,
            codec=self.codec,
            width=self.width,
            height=self.height,
            num_frames=self.num_frames,
            fps=round(self.fps, 3),
            duration_s=round(self.duration_s, 3),
            rotation=self.rotation,
            backend=self.backend,
            size_bytes=size,
            stream=self.stream,
            streams=list(self.streams),
        )

    def get_frames(
        self,
        indices: Sequence[int],
        *,
        numpy: bool = False,
        skip_nonref: bool = False,
        crop: Crop | None = None,
        out: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor | np.ndarray:
        """Decode the frames at `indices` (any order, repeats allowed) as uint8 ``(T, H, W, C)`` RGB.

        Args:
            indices: frame indices.
            numpy: return a numpy array instead of a tensor (this path never imports torch).
            skip_nonref: a speed hint for frames that are likely reference frames, such as those
                `iter_frames(nearest=True)` yields. The PyAV backend leaves out unreferenced H.264 and
                HEVC pictures a read does not need in any case; with this hint it also skips
                non-reference frames of other codecs on its way to each wanted one. The result is exact
                either way: a requested frame that turns out to be non-reference is read again.
            crop: ``(left, top, width, height)`` of the frames to return, in output pixels (after
                rotation and resize): the same pixels as slicing the full frames, bit for bit, but only
                the crop is copied out of each decoded frame (`VideoDataset` passes its crop here).
            out: a C-contiguous uint8 array or tensor shaped like the result to write the frames into
                (a slot of a batch, say), returned instead of a new one (as a tensor when `out` is one and
                `numpy` is False).

        Raises:
            ValueError: `crop` does not lie inside the frame, or `out` has the wrong shape or layout.
        """
        idx = [int(i) for i in indices]
        crop = None if crop is None else (int(crop[0]), int(crop[1]), int(crop[2]), int(crop[3]))
        shape = self._output_shape(len(idx), crop)
        dst = None if out is None else _writable_array(out, shape)
        if not idx:
            return _result(np.empty(shape, dtype=np.uint8) if dst is None else dst, out, numpy)
        bad = [i for i in idx if i < 0 or i >= self.num_frames]
        if bad:
            raise VideoDecodeError(self.path, f"frame index {bad[0]} out of range [0, {self.num_frames})")
        uniq = sorted(set(idx))
        in_order = len(uniq) == len(idx) and uniq == idx
        if in_order and not skip_nonref and (crop is not None or dst is not None):
            # The common clip read: decoded straight into its destination, cropped, with no copy in between.
            array = np.empty(shape, dtype=np.uint8) if dst is None else dst
            self._call(lambda: self._read_into(uniq, array, crop))
        else:
            frames = self._call(lambda: self._read_sorted_ref(uniq) if skip_nonref else self._read_sorted(uniq))
            pos = {i: k for k, i in enumerate(uniq)}
            array = crop_view(frames, crop)
            if not in_order:
                array = array[[pos[i] for i in idx]]  # a copy of the crop only
            if dst is not None:
                np.copyto(dst, array)
                array = dst
            else:
                array = np.ascontiguousarray(array)  # a copy only where a crop was taken in order
        return _result(array, out, numpy)

    def _read_clip(self, indices: list[int], crop: Crop, out: np.ndarray) -> None:
        """``get_frames(indices, crop=crop, out=out, numpy=True)`` for a caller that has checked what `get_frames`
        checks: `indices` a list of ints, `crop` a tuple of ints inside the frame, `out` a writable C-contiguous uint8
        array shaped ``(len(indices), crop height, crop width, 3)`` (`VideoDataset` reads every clip it crops through
        this). A clip of increasing indices in range goes straight to the read; anything else through `get_frames`.
        """
        uniq = sorted(set(indices))
        if uniq == indices and uniq and uniq[0] >= 0 and uniq[-1] < self.num_frames:
            self._call(lambda: self._read_into(uniq, out, crop))
        else:
            self.get_frames(indices, crop=crop, out=out, numpy=True)

    def _output_shape(self, n: int, crop: Crop | None) -> tuple[int, int, int, int]:
        """``(n, H, W, 3)`` of a read of `n` frames, cropped to `crop` (checked to lie inside the frame)."""
        if crop is None:
            return n, self.height, self.width, 3
        x, y, w, h = crop
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > self.width or y + h > self.height:
            raise ValueError(
                f"crop {tuple(crop)} (left, top, width, height) is not inside the {self.width}x{self.height} frame"
            )
        return n, h, w, 3

    def _read_into(self, indices: list[int], out: np.ndarray, crop: Crop | None) -> None:
        """`_read_sorted` into `out` (``(len(indices), h, w, 3)``), cropped to `crop`; backends that can write
        there without a full-frame copy in between override it."""
        np.copyto(out, crop_view(self._read_sorted(indices), crop))

    def iter_frames(
        self,
        step: int = 1,
        fps: float | None = None,
        start: int = 0,
        end: int | None = None,
        *,
        nearest: bool = False,
        numpy: bool = False,
        on_decoded: Callable[[int, Any], None] | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]] | Iterator[tuple[int, np.ndarray]]:
        """Stream ``(frame_index, frame)`` pairs in order, one uint8 ``(H, W, C)`` frame at a time.

        Args:
            step: keep every `step`-th frame.
            fps: keep frames at about this rate instead (by frame index, so bad timestamps don't matter).
            start, end: frame range, end exclusive.
            nearest: allow the decoder to skip frames no other frame refers to (non-reference B-frames,
                often half of an H.264 stream) and yield, for each wanted index, the nearest frame that
                decodes (usually within a frame or two; never the same frame twice). The yielded index
                is always that frame's true index. For sparse sampling (key frames at a few fps) this
                decodes markedly less than the whole stream. Only the PyAV backend on files with
                reliable timestamps can skip (it then decodes from the first frame, whatever `start`);
                elsewhere the wanted frames come back exactly.
            numpy: yield numpy arrays instead of tensors (this path never imports torch).
            on_decoded: with `nearest`, called as ``on_decoded(index, av.VideoFrame)`` for every frame the
                PyAV decoder outputs on its way, yielded or not: a cheap look at the frames between the
                samples (key frames use it to place cuts). Never called by other paths or backends.
        """
        wanted = self.stream_indices(step=step, fps=fps, start=start, end=end)
        if not wanted:
            return
        gen = self._iter_nearest(wanted, on_decoded) if nearest else self._iter_sorted(wanted)
        yield from self._stream_steps(gen, numpy)

    def _stream_steps(
        self, gen: Iterator[tuple[int, np.ndarray]], numpy: bool
    ) -> Iterator[tuple[int, torch.Tensor]] | Iterator[tuple[int, np.ndarray]]:
        """The items of a decoding generator, each step a timed call (`_call`)."""
        try:
            while True:
                item = self._call(lambda: next(gen, None))
                if item is None:
                    return
                yield (item[0], item[1]) if numpy else (item[0], _to_tensor(item[1]))
        finally:
            if not self._broken:  # a consumer that stops early: clean up now, while the decoder is open
                gen.close()

    def frame_times(self, indices: Sequence[int]) -> np.ndarray:
        """Presentation time in seconds, from the first frame, of each frame at `indices` (float64).

        The PyAV backend reads it from the stream's timestamps where they are reliable, so variable
        frame rate video is right; otherwise (and on other backends) it is ``index / fps``.
        """
        idx = np.asarray(indices, dtype=np.float64)
        return idx / self.fps if self.fps > 0 else np.zeros_like(idx)

    def stream_indices(
        self, step: int = 1, fps: float | None = None, start: int = 0, end: int | None = None
    ) -> list[int]:
        """The frame indices `iter_frames` would yield."""
        end = self.num_frames if end is None else min(end, self.num_frames)
        if fps is not None:
            if fps <= 0:
                raise ValueError(f"fps must be positive, got {fps}")
            native = self.fps if self.fps > 0 else fps
            if fps >= native:
                return list(range(start, end))
            n_out = int(math.floor((end - start) * fps / native - 1e-9)) + 1
            return sorted({start + int(round(k * native / fps)) for k in range(n_out)} & set(range(start, end)))
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        return list(range(start, end, step))

    def pause(self) -> None:
        """Stop decoding in the background until the next read.

        decord's threads go on decoding past each read, for seconds of every core on a long file, in case
        the next read continues from there; a reader that waits for a later turn (in a cache of open
        readers, say) should leave the CPU to the model and the other workers meanwhile. The next read
        seeks, as a read of another part of the file would anyway. `ReaderCache` pauses a reader when
        the next file is asked for, and a finished `iter_frames` stream pauses its reader. A no-op for
        PyAV, after an error, after `close`, and in a forked child.
        """
        if self._pid == os.getpid() and not self._broken and not self._closed:
            self._call(self._park)

    def close(self) -> None:
        """Release the decoder; safe to call twice. In a forked child, a reader from the parent stays as it is."""
        if self._pid != os.getpid():
            return
        self._closed = True  # a stream still open on this reader must not reach the freed decoder (a crash)
        executor, self._executor = self._executor, None
        self._close()
        if executor is not None:
            _return_executor(executor)

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.path!r}, {self.width}x{self.height}, {self.num_frames} frames, "
            f"{self.fps:.3f} fps, codec={self.codec})"
        )

    # -- machinery --------------------------------------------------------------------------------
    def _park(self) -> None:
        """Stop background decoding (see `pause`); the backend's part."""
        return None

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one decode step, with a time limit; errors become `VideoDecodeError` naming the file."""
        if self._broken:
            raise VideoDecodeError(self.path, self._broken)
        if self._closed:
            raise VideoDecodeError(self.path, "reader is closed")
        if self._pid != os.getpid():
            # Forked: the decoder's threads (and our executor's) stayed in the parent; a call would hang.
            raise VideoDecodeError(self.path, "reader was opened in another process; open the file again")
        try:
            if self.timeout_s is None or _in_timed_call():
                return fn()
            if self._runs_inline():
                return self._call_inline(fn)
            if self._executor is None:
                self._executor = _borrow_executor()
            future = self._executor.submit(_timed(fn))
            try:
                return future.result(timeout=self.timeout_s)
            except cf.TimeoutError:
                # The stuck native call cannot be interrupted; abandon the thread and this reader.
                self._broken = f"decoder blocked for more than {self.timeout_s:g} s; reader abandoned"
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
                raise VideoDecodeError(self.path, self._broken) from None
        except VideoDecodeError:
            raise
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # decoder libraries raise many types; the user needs the file and reason
            raise VideoDecodeError(self.path, f"{type(exc).__name__}: {_short(exc)}") from exc

    def _runs_inline(self) -> bool:
        """Whether a decode step runs in the calling thread under a deadline checked between frames, instead of
        on a thread of its own that can be abandoned (`_call`). Only for decoders that can only be slow, never
        blocked: no decoder threads to wait for (a frame thread that blocked is what hung readers here), and a
        source that is a path or bytes, not a file object that can stall. Handing each step to another thread
        and back cost 0.2-0.8 ms of CPU per clip, a sixth of a 320x240 clip's decoding. Backends say; none does
        by default."""
        return False

    def _call_inline(self, fn: Callable[[], T]) -> T:
        """`fn` in this thread, with `check_deadline` raising between frames once `timeout_s` has passed."""
        _TIMED.depth = getattr(_TIMED, "depth", 0) + 1
        _TIMED.deadline = time.monotonic() + self.timeout_s
        try:
            return fn()
        except _DeadlinePassed:
            # Part-way through a read: the decoder's position is unknown, so the reader is given up, as in `_call`.
            self._broken = f"decoding ran for more than {self.timeout_s:g} s; reader abandoned"
            raise VideoDecodeError(self.path, self._broken) from None
        finally:
            _TIMED.depth -= 1
            _TIMED.deadline = None

    def _truncated(self, decoded: int) -> VideoDecodeError:
        if self._claimed_frames is None:  # the header's count, kept for the message of later reads
            self._claimed_frames = self.num_frames
        self.num_frames = min(self.num_frames, decoded)
        return VideoDecodeError(
            self.path,
            f"only {decoded} of {self._claimed_frames} frames decode (corrupt or truncated); num_frames corrected",
        )

    @abstractmethod
    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        """Frames at sorted, unique, in-range `indices` as ``(T, H, W, C)`` uint8."""

    @abstractmethod
    def _iter_sorted(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Decode in order, yielding the frames at sorted `indices`."""

    def _iter_nearest(
        self, indices: list[int], on_decoded: Callable[[int, Any], None] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Like `_iter_sorted`, but may return a nearby frame for each index (see `iter_frames`)."""
        return self._iter_sorted(indices)

    def _read_sorted_ref(self, indices: list[int]) -> np.ndarray:
        """`_read_sorted` for frames that are likely reference frames (see `get_frames`); exact."""
        return self._read_sorted(indices)

    @abstractmethod
    def _close(self) -> None: ...
