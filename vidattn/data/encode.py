"""Writing videos with PyAV: synthetic data, test fixtures, overlays."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import torch

__all__ = ["write_video"]


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray | torch.Tensor],
    fps: float = 25.0,
    codec: str = "libx264",
    *,
    crf: int | None = 18,
    gop: int | None = None,
    bframes: int | None = None,
    pix_fmt: str = "yuv420p",
    container: str | None = None,
    reproducible: bool = False,
) -> int:
    """Encode RGB uint8 ``(H, W, 3)`` frames to a video file; returns the number of frames written.

    Frames are streamed to the encoder, so an iterator of any length uses bounded memory.

    Args:
        path: output file; the extension picks the container unless `container` is given.
        frames: iterable of RGB frames, all the same size (even width and height for yuv420p).
        fps: frame rate (fractional rates such as 29.97 are kept exact to 1/1001).
        codec: FFmpeg encoder name, e.g. "libx264", "libx265", "mpeg4", "gif".
        crf: constant rate factor for x264/x265 (lower is better quality).
        gop: key-frame interval; None keeps the encoder default.
        bframes: number of B-frames; None keeps the encoder default.
        reproducible: the same frames always give the same bytes (libx264 without its macroblock tree,
            which reads memory it never wrote: with it, what ran before in the process changes the
            file). Files are about half again as large at the same `crf`.
    """
    import av

    rate = Fraction(fps).limit_denominator(1001)
    options: dict[str, str] = {}
    if crf is not None and codec in ("libx264", "libx265"):
        options["crf"] = str(crf)
    if codec == "libx265":
        options["x265-params"] = "log-level=error"
    if reproducible and codec == "libx264":
        options["x264-params"] = "mbtree=0"
    n = 0
    with av.open(os.fspath(path), mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, options=options)
        if gop is not None:
            stream.codec_context.gop_size = gop
        if bframes is not None:
            stream.codec_context.max_b_frames = bframes
        stream.pix_fmt = "rgb8" if codec == "gif" else pix_fmt
        for frame in frames:
            array = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
            if n == 0:
                stream.height, stream.width = array.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(video_frame):
                out.mux(packet)
            n += 1
        for packet in stream.encode():
            out.mux(packet)
    return n
