"""Frames to track: a video file or a frame folder, streamed one ``(H, W, 3)`` uint8 tensor at a time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vidattn.errors import VidattnError
from vidattn.tracking.otb import frame_paths, read_image

__all__ = ["FOLDER_FPS", "FrameSource", "open_frame_source"]

FOLDER_FPS = 30.0  # frame folders carry no rate; OTB sequences are nominally 30 fps


@dataclass
class FrameSource:
    """Frames of a video or a folder, streamed: ``frames`` yields ``(H, W, 3)`` uint8 tensors."""

    path: Path
    kind: str  # "video" or "folder"
    num_frames: int  # announced count (the video header's, corrected as decoding goes)
    fps: float
    width: int
    height: int
    frames: Iterator[torch.Tensor]


def open_frame_source(source: str | os.PathLike) -> FrameSource:
    """Open a video file or a frame folder (OTB layout ``img/0001.jpg...`` or images directly) for streaming.

    Raises:
        VidattnError: missing path, empty folder, unreadable video, frames of different sizes.
    """
    path = Path(source)
    if not path.exists():
        raise VidattnError(f"{path}: no such file or directory")
    if path.is_dir():
        return _open_folder(path)

    from vidattn.data import open_video

    reader = open_video(path)

    def gen_video() -> Iterator[torch.Tensor]:
        with reader:
            for _, frame in reader.iter_frames():
                yield frame

    return FrameSource(path, "video", reader.num_frames, float(reader.fps), reader.width, reader.height, gen_video())


def _open_folder(path: Path) -> FrameSource:
    files = frame_paths(path)
    if not files:
        raise VidattnError(f"{path}: no frames found (expected img/0001.jpg... or images in the folder)")
    first = torch.from_numpy(read_image(files[0]))
    h, w = int(first.shape[0]), int(first.shape[1])

    def gen() -> Iterator[torch.Tensor]:
        yield first
        for f in files[1:]:
            frame = torch.from_numpy(read_image(f))
            if tuple(frame.shape[:2]) != (h, w):
                raise VidattnError(f"{f}: frame size {frame.shape[1]}x{frame.shape[0]} differs from {w}x{h}")
            yield frame

    return FrameSource(path, "folder", len(files), FOLDER_FPS, w, h, gen())
