"""Decode a video in a background thread, a bounded queue ahead of its consumer.

`PrefetchedFrames` opens the video and streams ``(frame_index, uint8 (H, W, C) array)`` pairs from
`VideoReader.iter_frames` in a thread, so decoding (which releases the GIL inside FFmpeg) overlaps
with whatever the consumer does per frame, and with the consumer's own start-up: this module does
not import torch, so a command can start decoding before it pays for that import.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from vidattn.data.decode import DEFAULT_TIMEOUT_S, Size, Source, VideoReader, open_video

__all__ = ["PrefetchedFrames"]

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class PrefetchedFrames:
    """Frames of one video decoded ahead in a background thread.

    Args:
        source: path, bytes or binary file object (as `open_video`).
        backend, size, timeout_s: as `open_video`.
        depth: frames held in the queue at most (the memory bound).
        **iter_kwargs: passed to `VideoReader.iter_frames` (``step``, ``fps``, ``start``, ``end``, ``nearest``).

    Use as a context manager; `reader()` waits until the file is open and returns the reader (for its
    metadata; its ``num_frames`` is final once iteration has finished), raising `VideoDecodeError` if
    it does not open. Iterating raises a decoding error where it happened in the stream.
    """

    def __init__(
        self,
        source: Source,
        *,
        backend: str = "auto",
        size: Size = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        depth: int = 64,
        **iter_kwargs: Any,
    ) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._reader: VideoReader | None = None
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(source, backend, size, timeout_s, iter_kwargs),
            name="vidattn-prefetch",
            daemon=True,
        )
        self._thread.start()

    def _run(self, source: Source, backend: str, size: Size, timeout_s: float | None, kwargs: dict) -> None:
        try:
            reader = open_video(source, backend=backend, size=size, timeout_s=timeout_s)
        except BaseException as exc:  # handed to the consumer, raised there
            self._open_error = exc
            self._opened.set()
            return
        self._reader = reader
        self._opened.set()
        try:
            for item in reader.iter_frames(numpy=True, **kwargs):
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:
            self._put(_Failed(exc))
        finally:
            reader.close()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader(self) -> VideoReader:
        """The open reader (waits for the file to open); raises the open error if it failed."""
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error
        assert self._reader is not None
        return self._reader

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        self.reader()
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop decoding and release the file (safe to call twice)."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> PrefetchedFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
