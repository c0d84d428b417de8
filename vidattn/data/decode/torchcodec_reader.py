"""The torchcodec reader (optional extra ``vidattn[torchcodec]``): PyTorch's FFmpeg decoder behind the reader contract.

torchcodec is imported when a reader opens, never at import of vidattn. Which files it reads is decided
in `vidattn.data.decode.policy`: with ``backend="torchcodec"`` the containers whose frame index is exact
(`policy.DECORD_CONTAINERS`), and other files only after the same once-per-file check against PyAV that
guards decord (torchcodec's exact mode returns neighbouring frames, or fails, on AVIs with decode-order
timestamps); ``auto`` uses it only for the file classes on `policy.TORCHCODEC_FASTER`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from vidattn.data.decode.header import StreamHeader, _short
from vidattn.data.decode.pyav_reader import PyAVFallback, PyAVReader
from vidattn.data.decode.reader import DEFAULT_TIMEOUT_S, Size, Source, VideoReader, _output_size
from vidattn.errors import VideoDecodeError

#: Seek modes torchcodec offers: "exact" scans the file once at open to index every frame; "approximate"
#: trusts the header's frame count and rate (faster to open, exact only where timestamps are regular).
SEEK_MODES = ("exact", "approximate")


def torchcodec_version() -> str | None:
    """The installed torchcodec version, or None when it is not installed (without importing it)."""
    from importlib import metadata

    try:
        return metadata.version("torchcodec")
    except metadata.PackageNotFoundError:
        return None


class TorchCodecReader(PyAVFallback, VideoReader):
    """torchcodec backend: batched decode by frame index through `VideoDecoder.get_frames_at`.

    `header` is what PyAV read of the file (`open_header`); the reader reads that stream. Files with
    rotation metadata are not given to it (`policy` keeps them on PyAV, which rotates as players do).
    When torchcodec fails part-way through a corrupt file, PyAV reads the rest, as in `DecordReader`.
    """

    backend = "torchcodec"

    def __init__(
        self,
        source: Source,
        header: StreamHeader,
        *,
        size: Size = None,
        num_threads: int = 0,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_pixels: int | None = None,
        seek_mode: str = "exact",
    ) -> None:
        super().__init__(source, size=size, timeout_s=timeout_s, max_pixels=max_pixels)
        if seek_mode not in SEEK_MODES:
            raise ValueError(f"unknown seek_mode {seek_mode!r}; choose exact or approximate")
        self._source = source
        self._num_threads = num_threads
        self._seek_mode = seek_mode
        self.container, self.codec, self.rotation = header.container, header.codec, header.rotation
        self.stream, self.streams = header.stream, list(header.streams)
        self._coded_size = header.coded_size  # (W, H); None: PyAV could not decode frame 0
        self._decoder: Any = None
        self._full_decoder: Any = None  # at the coded size, for `native_batches` when this one resizes
        self._fallback: PyAVReader | None = None  # takes over after torchcodec fails on a corrupt file
        self._call(self._open)

    def _open(self) -> None:
        self._decoder = self._make_decoder(resize=True)
        meta = self._decoder.metadata
        self.num_frames = len(self._decoder)
        if self.num_frames <= 0:
            raise VideoDecodeError(self.path, "video stream has no frames")
        # The stream's declared rate first, as PyAV reports it, so every backend gives the same fps.
        self.fps = float(meta.average_fps_from_header or meta.average_fps or 0.0)

    def _make_decoder(self, *, resize: bool) -> Any:
        from torchcodec.decoders import VideoDecoder

        kwargs: dict[str, Any] = {}
        if resize:
            if self._coded_size is None:
                src = self._torchcodec_source()
                meta = VideoDecoder(src, stream_index=self.stream, seek_mode="approximate").metadata
                self._coded_size = (meta.width, meta.height)
            raw_w, raw_h = self._coded_size
            self.width, self.height = _output_size(raw_w, raw_h, self.size)
            if (self.width, self.height) != (raw_w, raw_h):
                from torchcodec.transforms import Resize

                kwargs["transforms"] = [Resize(size=(self.height, self.width))]
        try:
            return VideoDecoder(
                self._torchcodec_source(),
                stream_index=self.stream,
                dimension_order="NHWC",
                # torchcodec's 0 lets FFmpeg choose, as our 0 does for the other backends.
                num_ffmpeg_threads=self._num_threads,
                seek_mode=self._seek_mode,
                **kwargs,
            )
        except Exception as exc:
            raise VideoDecodeError(self.path, f"cannot open: {_short(exc)}") from None

    def _torchcodec_source(self) -> Any:
        """The source as torchcodec takes it: a path string, or bytes.

        A file object is read into bytes once: two decoders (`native_batches` at full size) reading one
        file object would move each other's position.
        """
        src = self._source
        if isinstance(src, os.PathLike):
            return os.fspath(src)
        if not isinstance(src, (str, bytes)):
            src.seek(0)
            self._source = src = src.read()
        return src

    def native_batches(self, index_lists: list[list[int]], *, full_size: bool) -> list[np.ndarray]:
        """Frames from torchcodec's own indexing, one array per list, read in that order.

        For checking torchcodec against PyAV (`policy.backend_is_exact`): no recovery. `full_size` reads
        them from a second decoder at the coded size, when this one resizes.
        """
        if full_size and self._full_decoder is None:
            self._full_decoder = self._make_decoder(resize=False)
        decoder = self._full_decoder if full_size else self._decoder
        return [decoder.get_frames_at(indices).data.numpy() for indices in index_lists]

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        if self._fallback is None:
            try:
                return self._decoder.get_frames_at(indices).data.numpy()
            except Exception:
                pass
        return self._recover(indices)

    def _recover(self, indices: list[int]) -> np.ndarray:
        """torchcodec failed mid-read: a corrupt or truncated file. Re-read with PyAV, which fails at a fixed frame."""
        self._decoder = None  # its state after a failed read is undefined
        return self._read_with_pyav(indices)

    def _iter_sorted(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        # Small chunks in order: bounded memory, and every frame that decodes is yielded before an error.
        chunk = 16
        for s in range(0, len(indices), chunk):
            part = indices[s : s + chunk]
            try:
                frames = self._read_sorted(part)
            except VideoDecodeError:
                if self._fallback is None:
                    raise
                for i in part:  # one at a time, so the count matches the corrected num_frames
                    yield i, self._recover([i])[0]
                continue
            yield from zip(part, frames, strict=True)

    def _close(self) -> None:
        self._decoder = self._full_decoder = None
        if self._fallback is not None:
            self._fallback.close()
            self._fallback = None
