"""Helpers for tests and benchmarks: videos whose frames encode their own index.

Each frame shows its index as a row of coarse black/white blocks (one bit per block, plus a
parity-free guard border), big enough to survive lossy compression, so a test can read back
which frame a decoder really returned.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vidattn.data.encode import write_video

__all__ = ["index_frame", "read_index", "make_index_video", "make_faststart_index_video", "shared_dir"]

_BITS = 12  # up to 4096 frames


def index_frame(index: int, height: int = 64, width: int = 96, bits: int = _BITS) -> np.ndarray:
    """An RGB frame whose top band encodes `index` in `bits` blocks (MSB first); the rest is a gradient."""
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    # A moving gradient below the band gives the encoder real motion to predict.
    yy, xx = np.mgrid[0:height, 0:width]
    frame[..., 1] = ((xx + 3 * index) % width * 255 // max(width - 1, 1)).astype(np.uint8)
    frame[..., 2] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
    band = height // 2
    block = width // bits
    for b in range(bits):
        value = 255 if (index >> (bits - 1 - b)) & 1 else 0
        frame[:band, b * block : (b + 1) * block, :] = value
    return frame


def read_index(frame: np.ndarray | torch.Tensor, bits: int = _BITS) -> int:
    """Decode the index written by `index_frame` (works after resize: it samples block centres)."""
    array = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    height, width = array.shape[:2]
    band = height // 2
    block = width / bits
    value = 0
    for b in range(bits):
        x0, x1 = int(b * block + block * 0.3), int(b * block + block * 0.7)
        patch = array[band // 4 : band * 3 // 4, x0 : max(x1, x0 + 1)].astype(np.float32).mean()
        value = (value << 1) | int(patch > 127)
    return value


def make_index_video(
    path: str | os.PathLike,
    num_frames: int,
    *,
    fps: float = 25.0,
    codec: str = "libx264",
    height: int = 64,
    width: int = 96,
    gop: int | None = 12,
    bframes: int | None = None,
    container: str | None = None,
) -> Path:
    """Write a video of `num_frames` index-encoded frames and return its path."""
    frames = (index_frame(i, height, width) for i in range(num_frames))
    write_video(path, frames, fps=fps, codec=codec, gop=gop, bframes=bframes, container=container)
    return Path(path)


def make_faststart_index_video(path: str | os.PathLike, num_frames: int, *, height: int = 64, width: int = 96) -> Path:
    """An index-encoded H.264 MP4 with its index (moov) first: a truncated copy still opens and claims every frame."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 12
        for i in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(index_frame(i, height, width), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(path)


def shared_dir() -> Path | None:
    """The read-only ``shared/`` folder beside the checkout (or ``$VIDATTN_SHARED``), if present."""
    env = os.environ.get("VIDATTN_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared")
    for cand in candidates:
        if cand.is_dir():
            return cand
    return None


def make_tiny_checkpoint(
    path: str | os.PathLike, *, clip_len: int = 4, stride: int = 2, size: int = 32, seed: int = 0
) -> Path:
    """A small untrained classifier checkpoint of the default model (4 classes), for tests and benchmarks."""
    from vidattn.config import Config
    from vidattn.engine.checkpoint import atomic_save
    from vidattn.models import create_model

    cfg = Config()
    cfg.data.clip_len, cfg.data.stride, cfg.data.size, cfg.data.crop_size = clip_len, stride, size, size
    classes = ["left", "right", "up", "down"]
    torch.manual_seed(seed)
    model = create_model(cfg.model.name, num_classes=len(classes), attn=cfg.model.attn, head=cfg.model.head)
    state = {"format": "vidattn-checkpoint/1", "model": model.state_dict(), "classes": classes}
    atomic_save({**state, "config": cfg.to_dict()}, path)
    return Path(path)
