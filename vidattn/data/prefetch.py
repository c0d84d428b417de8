"""Decode a video ahead of its consumer, in a background thread or a child process.

`PrefetchedFrames` opens the video and streams ``(frame_index, uint8 (H, W, C) array)`` pairs from
`VideoReader.iter_frames` through a bounded queue, so decoding runs while the consumer works. This
module does not import torch.

PyAV holds the GIL for much of its decoding (measured: a decode pass took 1.6 s longer while another
thread ran 2 s of Python), so a thread overlaps decoding only with work that releases the GIL
(torch ops do). ``process=True`` decodes in a child process instead, which overlaps with anything,
an ``import torch`` included. The child is spawned (a fresh interpreter that imports only PyAV,
decord and numpy, ~0.3 s), not forked: a child forked from a process with running threads hung in
the test suite.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from vidattn.data.decode import DEFAULT_TIMEOUT_S, Size, Source, VideoInfo, _source_name, open_video
from vidattn.errors import VideoDecodeError

__all__ = ["PrefetchedFrames"]


def _produce(put: Any, stop: Any, source: Source, backend: str, size: Size, kwargs: dict, split: bool) -> None:
    """Open, then stream frames into `put`: ("open", info), ("frame", index, array, part)..., ("done", info, probe
    result, whether the split held).

    With `split`, a long file may be read by two decoders at once (`vidattn.data.halves`): part 0 and part 1.
    Failures become ("error", path, reason). The reader has no per-call timeout thread (every hand-over
    to it costs GIL switches per frame); the consumer applies the time limit while it waits.
    """
    name = _source_name(source)
    try:
        reader = open_video(source, backend=backend, size=size, timeout_s=None)
    except VideoDecodeError as exc:
        put(("error", exc.path, exc.reason))
        return
    except Exception as exc:
        put(("error", name, f"{type(exc).__name__}: {exc}"))
        return
    with reader:
        try:
            if not put(("open", reader.info())):
                return
            probe = kwargs.get("on_decoded")
            held = _read_split(put, stop, reader, source, kwargs) if split and kwargs.get("nearest") else None
            if held is None:
                for index, frame in reader.iter_frames(numpy=True, **kwargs):
                    if stop.is_set() or not put(("frame", index, frame, 0)):
                        return
            if stop.is_set():
                return
            # The probe's findings travel back with the final info.
            put(("done", reader.info(), probe.result() if hasattr(probe, "result") else None, bool(held)))
        except VideoDecodeError as exc:
            put(("error", exc.path, exc.reason))
        except Exception as exc:
            put(("error", name, f"{type(exc).__name__}: {exc}"))


def _read_split(put: Any, stop: Any, reader: Any, source: Source, kwargs: dict) -> bool | None:
    """Stream the frames with two decoders on the file's two halves (`vidattn.data.halves`); whether the split
    held, or None (nothing read) where one decoder reads the file."""
    from vidattn.data import halves

    wanted = reader.stream_indices(**{k: kwargs[k] for k in ("step", "fps", "start", "end") if k in kwargs})
    key = halves.split_key(reader, source, wanted)
    if key is None:
        return None

    def emit(part: int, index: int, frame: np.ndarray) -> bool:
        return put(("frame", index, frame, part))

    return halves.read_halves(reader, source, wanted, key, emit, stop, on_decoded=kwargs.get("on_decoded"))


def _putter(q: Any, stop: Any) -> Any:
    """``put(item) -> bool``: into the bounded queue, giving up (False) once `stop` is set."""

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    return put


def _process_main(q: Any, stop: Any, source: Source, backend: str, size: Size, kwargs: dict, split: bool) -> None:
    _produce(_putter(q, stop), stop, source, backend, size, kwargs, split)


class PrefetchedFrames:
    """Frames of one video decoded ahead of the consumer.

    Args:
        source: a path (any `open_video` source in thread mode).
        backend, size, timeout_s: as `open_video`; `timeout_s` limits how long the consumer waits for
            the next frame (a stuck decoder raises `VideoDecodeError` instead of hanging).
        depth: frames held in the queue at most (the memory bound).
        process: decode in a child process (see the module docstring) instead of a thread.
        split: with ``nearest=True``, a long file may be read by two decoders at once, each on one half
            (`vidattn.data.halves`); its frames then come from `parts`, not from iterating.
        **iter_kwargs: passed to `VideoReader.iter_frames` (``step``, ``fps``, ``start``, ``end``, ``nearest``,
            ``on_decoded``). An ``on_decoded`` callback runs where the decoder runs (a picklable object in
            process mode); if it has a ``result()`` method, its value is `probe_result` after iteration.

    Use as a context manager. `info()` waits until the file is open and returns its metadata (final
    once iteration has finished: ``num_frames`` is corrected on a truncated file); it raises
    `VideoDecodeError` if the file does not open. Iterating raises a decoding error where it happened.
    """

    def __init__(
        self,
        source: Source,
        *,
        backend: str = "auto",
        size: Size = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        depth: int = 64,
        process: bool = False,
        split: bool = False,
        **iter_kwargs: Any,
    ) -> None:
        self._timeout_s = timeout_s
        self._name = _source_name(source)
        self._info: VideoInfo | None = None
        self._done = False
        self.probe_result: Any = None  # the ``on_decoded`` callback's result(), once iteration has finished
        self.split = split
        self.split_held = False  # once iteration has finished: whether part 1 holds frames to keep (`parts`)
        args = (source, backend, size, iter_kwargs, split)
        if process:
            ctx = mp.get_context("spawn")
            self._queue: Any = ctx.Queue(maxsize=max(1, depth))
            self._stop: Any = ctx.Event()
            self._worker: Any = ctx.Process(
                target=_process_main, args=(self._queue, self._stop, *args), name="vidattn-prefetch", daemon=True
            )
        else:
            self._queue = queue.Queue(maxsize=max(1, depth))
            self._stop = threading.Event()
            self._worker = threading.Thread(
                target=_produce,
                args=(_putter(self._queue, self._stop), self._stop, *args),
                name="vidattn-prefetch",
                daemon=True,
            )
        self._worker.start()

    def _next(self) -> tuple:
        deadline = None if self._timeout_s is None else time.monotonic() + self._timeout_s
        while True:
            try:
                item = self._queue.get(timeout=0.5)
                break
            except queue.Empty:
                if not self._worker.is_alive() and self._queue.empty():
                    code = getattr(self._worker, "exitcode", None)
                    raise VideoDecodeError(
                        self._name, f"decoder process ended unexpectedly (exit code {code})"
                    ) from None
                if deadline is not None and time.monotonic() > deadline:
                    self._stop.set()  # a stuck decoder cannot be interrupted: it is abandoned
                    raise VideoDecodeError(
                        self._name, f"decoder blocked for more than {self._timeout_s:g} s; abandoned"
                    ) from None
        if item[0] == "error":
            self._done = True
            raise VideoDecodeError(item[1], item[2])
        return item

    def info(self) -> VideoInfo:
        """The video's metadata (waits for the file to open); raises `VideoDecodeError` if it does not."""
        if self._info is None:
            self._info = self._next()[1]
        return self._info

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.split:
            raise TypeError("the frames of a stream opened with split=True come from parts()")
        for _, index, frame in self.parts():
            yield index, frame

    def parts(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(part, frame_index, frame)`` as decoded: in order within each part, the parts interleaved.

        Part 1 exists only for a file read in two halves (``split``): join them after iteration as part 0,
        then, if `split_held`, the frames of part 1 whose index is past part 0's last (else drop part 1).
        """
        self.info()
        while not self._done:
            item = self._next()
            if item[0] == "done":
                self._info, self.probe_result, self.split_held, self._done = item[1], item[2], item[3], True
                return
            yield item[3], item[1], item[2]

    def close(self) -> None:
        """Stop decoding and release the file (safe to call twice)."""
        self._stop.set()
        if isinstance(self._worker, threading.Thread):
            self._worker.join(self._timeout_s)
            return
        if self._done:
            # The child sent its last message ("done" or an error) and ends by itself: nothing is left to
            # drain, and waiting for its interpreter to shut down (0.15-0.25 s on the shared 2-core machine,
            # measured) would delay the caller's next step. multiprocessing reaps it later, at the latest
            # when this process exits.
            self._worker.join(0)
            return
        deadline = time.monotonic() + 5.0
        while self._worker.is_alive():  # drain, so the child is not stuck putting into a full pipe
            if time.monotonic() > deadline:  # stuck inside the decoder: it cannot see the stop flag
                self._worker.terminate()
                self._worker.join(1.0)
                break
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
            self._worker.join(0.05)
        self._queue.close()

    def __enter__(self) -> PrefetchedFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
