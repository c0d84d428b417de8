"""The decord (decord2) reader: fast random access through `get_batch`, for the files `open_video` gives it.

Which files those are is decided in `vidattn.data.decode.policy`; this reader reads, and when decord fails
part-way through a corrupt file it hands the rest to PyAV, whose in-order decode fails at a fixed frame.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from vidattn.data.decode.header import StreamHeader, _short
from vidattn.data.decode.pyav_reader import PyAVFallback, PyAVReader
from vidattn.data.decode.reader import DEFAULT_TIMEOUT_S, Size, Source, VideoReader, _output_size
from vidattn.errors import VideoDecodeError

#: Codecs whose random access in decord is not frame-exact; read them in order from a key frame.
SEEK_UNSAFE_CODECS = frozenset({"hevc", "h265"})

# Output width -> whether decord's frames at that width come out as (H, W, 3); see `DecordReader.output_ok`.
_DECORD_WIDTH_OK: dict[int, bool] = {}


def _quiet_decord() -> None:
    """decord logs every FFmpeg warning; called on first use so that importing vidattn does not load decord."""
    try:
        import decord.logging

        decord.logging.set_level(decord.logging.QUIET)
    except Exception:
        pass


class DecordReader(PyAVFallback, VideoReader):
    """decord / decord2 backend. Fast random access via `get_batch`; HEVC read in order (exact).

    `header` is what PyAV read of the file (`open_header`): decord exposes no codec, container or
    rotation. `open_video` opens this reader only for files it chose decord for, and checks
    `output_ok` and, outside the containers decord always indexes exactly, `policy.decord_is_exact`.
    """

    backend = "decord"

    def __init__(
        self,
        source: Source,
        header: StreamHeader,
        *,
        size: Size = None,
        num_threads: int = 0,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(source, size=size, timeout_s=timeout_s, max_pixels=max_pixels)
        self._source = source
        self._num_threads = num_threads
        self.container, self.codec, self.rotation = header.container, header.codec, header.rotation
        self.stream, self.streams = header.stream, list(header.streams)
        self._coded_size = header.coded_size  # (W, H) before rotation; None: PyAV could not decode frame 0
        self._vr: Any = None
        self._fallback: PyAVReader | None = None  # takes over after decord fails on a corrupt file
        self._seek_exact = self.codec not in SEEK_UNSAFE_CODECS
        self._cursor = 0  # next frame `next()` returns, for in-order reading
        self._call(self._open)

    def _open(self) -> None:
        import decord

        _quiet_decord()
        src = self._decord_source()
        kwargs: dict[str, int] = {}
        if self._coded_size is not None:
            # Open once, already at the output size: decord's width/height are after rotation, like ours.
            raw_w, raw_h = self._coded_size
            disp_w, disp_h = (raw_h, raw_w) if self.rotation % 180 else (raw_w, raw_h)
            self.width, self.height = _output_size(disp_w, disp_h, self.size)
            if (self.width, self.height) != (disp_w, disp_h):
                kwargs = {"width": self.width, "height": self.height}
        try:
            vr = decord.VideoReader(src, num_threads=self._num_threads, **kwargs)
        except Exception as exc:  # decord raises DECORDError / RuntimeError
            raise VideoDecodeError(self.path, f"cannot open: {_short(exc)}") from None
        self.num_frames = len(vr)
        if self.num_frames <= 0:
            raise VideoDecodeError(self.path, "video stream has no frames")
        self.fps = float(vr.get_avg_fps() or 0.0)
        if self._coded_size is None:
            # PyAV could not read the first frame; decord's first frame gives the displayed (rotated) size.
            try:
                disp_h, disp_w = vr[0].shape[:2]
            except Exception as exc:
                raise VideoDecodeError(self.path, f"cannot open: first frame does not decode ({_short(exc)})") from None
            vr.seek(0)
            self.width, self.height = _output_size(disp_w, disp_h, self.size)
            if (self.width, self.height) != (disp_w, disp_h):
                del vr
                vr = decord.VideoReader(
                    self._decord_source(), width=self.width, height=self.height, num_threads=self._num_threads
                )
        self._vr = vr
        self._park()

    def _decord_source(self) -> Any:
        """The source as decord takes it: a path string or a file object at its start."""
        src = self._source
        if isinstance(src, bytes):
            return io.BytesIO(src)
        if isinstance(src, os.PathLike):
            return os.fspath(src)
        if hasattr(src, "seek"):
            src.seek(0)
        return src

    def output_ok(self) -> bool:
        """Whether decord returns well-formed ``(H, W, 3)`` frames at this reader's output size.

        decord2 3.4.0 returns frames with 4, 6 or 12 "channels" at some output widths (16, 32, 48, 96,
        144 px; whatever the codec, container or height) and its `get_batch` then raises a size
        mismatch. The first frame's shape tells, and it depends on the width alone (measured over 4
        codecs and 3 heights), so the answer is kept per width: a dataset of same-size videos decodes
        one frame for it, once per process.
        """
        ok = _DECORD_WIDTH_OK.get(self.width)
        if ok is None:
            try:
                ok = self._call(lambda: tuple(self._vr[0].shape) == (self.height, self.width, 3))
            except VideoDecodeError:  # a first frame that does not decode: the corrupt-file path's business
                return True
            self._call(self._park)
            self._cursor = 0
            _DECORD_WIDTH_OK[self.width] = ok
        return ok

    def native_batches(self, index_lists: list[list[int]], *, full_size: bool) -> list[np.ndarray]:
        """Frames from decord's random access (`get_batch`), one array per list, read in that order.

        For checking decord against PyAV (`policy.decord_is_exact`): no recovery, no in-order reading.
        `full_size` reads them from a second decoder at the coded size, when this one resizes.
        """
        import decord

        vr = decord.VideoReader(self._decord_source(), num_threads=self._num_threads) if full_size else self._vr
        return [vr.get_batch(indices).asnumpy() for indices in index_lists]

    def _park(self) -> None:
        # A seek stops decord's decode-ahead (a few ms). The in-order reader of seek-unsafe codecs keeps
        # its place instead: it would have to decode from the first frame again.
        if self._vr is not None and self._seek_exact:
            with contextlib.suppress(Exception):  # a corrupt file: the next read finds out and recovers
                self._vr.seek(0)

    def _decode_batch(self, indices: list[int]) -> np.ndarray:
        try:
            batch = self._vr.get_batch(indices)
        except Exception:
            return self._recover(indices)
        return _ndarray_to_numpy(batch)

    def _recover(self, indices: list[int]) -> np.ndarray:
        """decord failed mid-read: a corrupt or truncated file. Re-read with PyAV from here on.

        decord's threaded decoder reports a broken packet at a nondeterministic point (the same
        truncated file fails after 0, 5 or 30 frames from one run to the next), so it cannot say how
        many frames decode. PyAV decodes in order and fails at a fixed frame: it returns the exact
        frames that do decode and corrects `num_frames` for the rest.
        """
        self._vr = None  # decord's state after a failed read is undefined; stop using it
        return self._read_with_pyav(indices)

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        if self._fallback is not None:
            return self._recover(indices)
        if self._seek_exact:
            return self._decode_batch(indices)
        # Seek-unsafe codec (decord's key-frame table is wrong on some HEVC streams): decode in order
        # from a cursor, restarting from frame 0 only when asked to go backwards.
        frames = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        for k, i in enumerate(indices):
            try:
                if i < self._cursor:
                    self._vr.seek(0)
                    self._cursor = 0
                # skip_frames() over-skips on the same streams, so advance with next().
                for _ in range(i - self._cursor):
                    self._vr.next()
                frames[k] = self._vr.next().asnumpy()
            except Exception:
                return self._recover(indices)
            self._cursor = i + 1
        return frames

    def _iter_sorted(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        # Decode in order in small chunks: bounded memory, and decord skips frames it need not convert.
        try:
            yield from self._iter_chunks(indices)
        finally:
            self._park()  # the stream is over, or its consumer stopped early

    def _iter_chunks(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        chunk = 16
        for s in range(0, len(indices), chunk):
            part = indices[s : s + chunk]
            if self._fallback is None:
                try:
                    frames = self._read_sorted(part)
                except VideoDecodeError:
                    if self._fallback is None:
                        raise
                else:
                    yield from zip(part, frames, strict=True)
                    continue
            # decord failed on this file: stream through PyAV one frame at a time, so that every frame
            # that decodes is yielded before the error (the count then matches the corrected num_frames).
            for i in part:
                yield i, self._recover([i])[0]

    def _close(self) -> None:
        self._vr = None
        if self._fallback is not None:
            self._fallback.close()
            self._fallback = None


def _ndarray_to_numpy(batch: Any) -> np.ndarray:
    """decord NDArray -> numpy without a copy (through DLPack, when torch is loaded), else `asnumpy`.

    Skipping `asnumpy`'s copy of every decoded frame saves more than cropping and batching the clip
    costs afterwards (measured on 480x360 clips: 1.6 ms of about 20 ms per 16-frame clip).
    """
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(batch, "to_dlpack"):
        try:
            return torch.utils.dlpack.from_dlpack(batch.to_dlpack()).numpy()
        except Exception:  # an older decord or an unusual layout: take the copy
            pass
    return batch.asnumpy()
