"""Tracking test sequences with exact ground truth.

A procedurally textured target is rendered with sub-pixel accuracy onto a real video background
(or a procedural one when no video is at hand), moving along a smooth path while it changes scale,
and it is partly covered by an occluder for a few frames. Because the target is rendered (not
annotated), its box is known exactly in every frame, which makes the sequences suitable for
unit tests and for benchmarking many seeds (see ``scripts/eval_tracking.py --synthetic``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SyntheticSequence", "make_sequence", "background_videos"]

# Real backgrounds (in ../shared/realvids) that decode cleanly and move: camera motion and clutter
# make the sequences harder than a static picture would.
_BACKGROUNDS = (
    "mmaction2/demo.mp4",
    "mmaction2/test.mp4",
    "mmaction2/test_video_structuralize.mp4",
    "pysot/bag.avi",
    "tiny-ucf101/abseiling_k400.mp4",
    "tiny-ucf101/v_Basketball_g01_c01.avi",
    "decord/flipping_a_pancake.mkv",
)


@dataclass
class SyntheticSequence:
    """A generated sequence: ``frames`` (T, H, W, 3) uint8 RGB and ``boxes`` (N, T, 4) ``x, y, w, h``."""

    frames: np.ndarray
    boxes: np.ndarray
    fps: float
    background: str
    occlusions: list[tuple[int, int]]  # per target: [start, end) frames of the partial occlusion
    visible: np.ndarray | None = None  # (N, T) bool: the target itself can be seen (None: always)

    def truth_iou(self, boxes: np.ndarray, target: int = 0) -> np.ndarray:
        """Per-frame IoU of ``boxes`` (T, 4) with the truth, 0 where the target cannot be seen.

        A box on a look-alike that replaced the target, or on anything once the target has left
        the frame, is wrong whatever it overlaps.
        """
        from vidattn.tracking.metrics import iou_xywh

        iou = iou_xywh(boxes, self.boxes[target])
        return iou if self.visible is None else iou * self.visible[target]

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def write_otb(self, out_dir: str | os.PathLike, target: int = 0) -> Path:
        """Write an OTB-layout folder: ``img/0001.jpg...`` and ``groundtruth_rect.txt`` of ``target``."""
        from vidattn.tracking.otb import write_sequence

        return write_sequence(out_dir, self.frames, self.boxes[target])

    def write_video(self, path: str | os.PathLike) -> Path:
        """Encode the frames to a video file with PyAV (H.264 in MP4 by default)."""
        from vidattn.data.encode import write_video

        write_video(path, iter(self.frames), fps=self.fps)
        return Path(path)


def background_videos() -> list[Path]:
    """The real background videos available on this machine (empty when ../shared is absent)."""
    from vidattn.testing import shared_dir

    root = shared_dir()
    if root is None:
        return []
    return [root / "realvids" / p for p in _BACKGROUNDS if (root / "realvids" / p).is_file()]


def _load_background(path: Path, start: int, num_frames: int, max_side: int) -> np.ndarray | None:
    from vidattn.data import open_video
    from vidattn.errors import VidattnError

    try:
        with open_video(path) as reader:
            n = reader.num_frames
            if n < 2:
                return None
            start = start % max(1, n - num_frames) if n > num_frames else 0
            # Play the clip forward then backward if it is shorter than the sequence.
            idx = [start + (k % (2 * (n - start) - 2) if n - start > 1 else 0) for k in range(num_frames)]
            idx = [i if i < n else 2 * n - 2 - i for i in idx]
            frames = reader.get_frames(idx)  # (T, H, W, 3)
    except (VidattnError, OSError, ValueError):
        return None
    t, h, w, _ = frames.shape
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        x = frames.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(round(h * scale) // 2 * 2, round(w * scale) // 2 * 2), mode="area")
        frames = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1)
    return frames.numpy()


def _procedural_background(rng: np.random.Generator, num_frames: int, h: int, w: int) -> np.ndarray:
    """Smooth coloured noise drifting slowly: a fallback when no real video is available."""
    big = torch.from_numpy(rng.random((1, 3, h // 8 + 8, w // 8 + 8), dtype=np.float32))
    big = F.interpolate(big, scale_factor=8, mode="bicubic", align_corners=False)
    fine = torch.from_numpy(rng.random((1, 3, big.shape[2], big.shape[3]), dtype=np.float32))
    tex = (0.75 * big + 0.25 * fine).clamp(0, 1)
    frames = []
    for t in range(num_frames):
        dy, dx = int(16 + 12 * math.sin(t / 17)), int(16 + 12 * math.cos(t / 23))
        frames.append(tex[0, :, dy : dy + h, dx : dx + w])
    return (torch.stack(frames).permute(0, 2, 3, 1) * 255).round().byte().numpy()


def _texture(rng: np.random.Generator, size: int = 64) -> torch.Tensor:
    """A distinctive random texture ``(3, size, size)`` in [0, 1]: colour blobs, stripes and edges."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    tex = torch.zeros(3, size, size)
    base = torch.from_numpy(rng.random(3).astype(np.float32))
    tex += base.view(3, 1, 1) * 0.6
    for _ in range(int(rng.integers(3, 6))):
        cy, cx = rng.uniform(-0.8, 0.8, 2)
        r = rng.uniform(0.15, 0.45)
        col = torch.from_numpy(rng.random(3).astype(np.float32))
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        tex = tex * (1 - blob) + col.view(3, 1, 1) * blob
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(3, 7)
    stripes = 0.5 + 0.5 * torch.sign(torch.sin(freq * math.pi * (xx * math.cos(angle) + yy * math.sin(angle))))
    tex = tex * (0.7 + 0.3 * stripes)
    # A dark frame around the texture gives the target a silhouette, as real objects have.
    border = ((yy.abs() > 0.92) | (xx.abs() > 0.92)).float()
    return (tex * (1 - border) + 0.1 * border).clamp(0, 1)


def _render(frame: torch.Tensor, tex: torch.Tensor, box: np.ndarray, alpha_max: float = 1.0) -> None:
    """Paint ``tex`` into ``frame`` (3, H, W) float, in place, over ``box`` with anti-aliased edges."""
    _, h, w = frame.shape
    x, y, bw, bh = (float(v) for v in box)
    x0, y0 = max(0, int(math.floor(x)) - 1), max(0, int(math.floor(y)) - 1)
    x1, y1 = min(w, int(math.ceil(x + bw)) + 1), min(h, int(math.ceil(y + bh)) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    px = torch.arange(x0, x1, dtype=torch.float32) + 0.5  # pixel centres
    py = torch.arange(y0, y1, dtype=torch.float32) + 0.5
    u = (px - x) / bw * 2 - 1
    v = (py - y) / bh * 2 - 1
    grid = torch.stack(torch.meshgrid(v, u, indexing="ij")[::-1], -1).unsqueeze(0)  # (1, h', w', 2) as (u, v)
    patch = F.grid_sample(tex.unsqueeze(0), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    # Coverage of each pixel by the box, so the ground truth is exact to a fraction of a pixel.
    ax = ((px + 0.5).clamp(max=x + bw) - (px - 0.5).clamp(min=x)).clamp(0, 1)
    ay = ((py + 0.5).clamp(max=y + bh) - (py - 0.5).clamp(min=y)).clamp(0, 1)
    alpha = (ay.view(-1, 1) * ax.view(1, -1)) * alpha_max
    region = frame[:, y0:y1, x0:x1]
    frame[:, y0:y1, x0:x1] = region * (1 - alpha) + patch * alpha


def _target_path(
    rng: np.random.Generator,
    t: np.ndarray,
    period: int,
    t_total: int,
    frame_wh: tuple[int, int],
    box_wh: tuple[np.ndarray, np.ndarray],
    leave_frame: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """A target's centre over time: two sinusoids per axis inside the frame's margins, or a straight exit."""
    w, h = frame_wh
    bw, bh = box_wh
    # Path: two sinusoids per axis, kept inside the frame with a margin.
    cx = np.zeros_like(t)
    cy = np.zeros_like(t)
    for k in (1, 2):
        for axis in (cx, cy):
            freq = 2 * math.pi * k / period * rng.uniform(0.4, 0.9)
            axis += rng.uniform(0.5, 1.0) / k * np.sin(freq * t + rng.uniform(0, 2 * math.pi))
    # Normalise the path to [0, 1], then map it to a random span inside the frame's margins.
    mx, my = 0.5 * bw.max() + 4, 0.5 * bh.max() + 4
    cx, cy = (cx - cx.min()) / max(np.ptp(cx), 1e-6), (cy - cy.min()) / max(np.ptp(cy), 1e-6)
    span_x, span_y = (w - 2 * mx) * rng.uniform(0.4, 0.8), (h - 2 * my) * rng.uniform(0.4, 0.8)
    cx = mx + rng.uniform(0, max(w - 2 * mx - span_x, 0)) + cx * span_x
    cy = my + rng.uniform(0, max(h - 2 * my - span_y, 0)) + cy * span_y
    if leave_frame:
        # From the left third to well past the right edge, reached at two thirds of the sequence.
        x_start, x_end = w * 0.3, w + bw.max()
        cx = x_start + (x_end - x_start) * np.clip(t / max(1.0, 2 * t_total / 3), 0, 1)
    return cx, cy


def _overlap_h(boxes: np.ndarray, h: int) -> np.ndarray:
    """Height of each box that lies inside a frame `h` pixels high."""
    return np.clip(np.minimum(boxes[:, 1] + boxes[:, 3], h) - np.maximum(boxes[:, 1], 0), 0, None)


def make_sequence(
    seed: int = 0,
    num_frames: int = 100,
    num_targets: int = 1,
    background: str | os.PathLike | None = "auto",
    max_side: int = 480,
    occlusion: bool = True,
    fps: float = 25.0,
    leave_frame: bool = False,
    size: float | None = None,
    growth: float | None = None,
    lookalike: bool = False,
) -> SyntheticSequence:
    """Generate one sequence.

    Args:
        seed: Everything (background choice, texture, path, scale, occlusion) follows from it.
        num_frames: Sequence length.
        num_targets: Independent targets; each has its own texture, path and occlusion.
        background: ``"auto"`` picks a real video from ../shared/realvids by seed (procedural
            noise when none is available), ``None`` forces the procedural one, or a video path.
        max_side: Backgrounds are downscaled to at most this many pixels on their long side.
        occlusion: Add one partial occlusion per target (40-60% of the box, 6-10 frames).
        fps: Frame rate recorded with the sequence.
        leave_frame: Instead of a smooth path, move each target straight out through the right
            edge; it is fully outside for the last third of the frames (its boxes lie outside too).
        size: Initial side ``sqrt(w * h)`` of each target in pixels (default: 12-20% of the frame's short side).
        growth: Instead of the smooth scale swing, grow (or shrink) steadily by this factor over the sequence.
        lookalike: At 40% of the sequence each target vanishes and a look-alike (its texture turned
            half a turn and recoloured a little) appears next to it and moves on a parallel path;
            ``visible`` is False from then on.

    Returns:
        The frames and the exact boxes.
    """
    rng = np.random.default_rng(seed)
    frames_np = None
    name = "procedural"
    if background is not None:
        cands = background_videos() if background == "auto" else [Path(background)]
        if cands:
            path = cands[seed % len(cands)]  # cycle through the backgrounds seed by seed
            frames_np = _load_background(path, int(rng.integers(0, 1000)), num_frames, max_side)
            name = path.name if frames_np is not None else name
    if frames_np is None:
        frames_np = _procedural_background(rng, num_frames, 240, 320)
    frames = torch.from_numpy(frames_np).permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    t_total, _, h, w = frames.shape
    # Paths and scale swings are laid out over at least 100 frames and cut to length, so a short
    # sequence is the start of a long one rather than the same path played faster.
    period = max(t_total, 100)
    t = np.arange(period, dtype=np.float64)

    all_boxes = []
    occlusions = []
    visible = []
    for _ in range(num_targets):
        tex = _texture(rng)
        side = rng.uniform(0.12, 0.2) * min(h, w)
        side = side if size is None else float(size)
        aspect = rng.uniform(0.6, 1.6)
        bw0, bh0 = side * math.sqrt(aspect), side / math.sqrt(aspect)
        # Scale: a smooth swing of up to +-35% over the sequence.
        amp = rng.uniform(0.15, 0.3)
        phase = rng.uniform(0, 2 * math.pi)
        scale = np.exp(amp * np.sin(2 * math.pi * t / period * rng.uniform(0.5, 1.0) + phase))
        if growth is not None:
            scale = float(growth) ** np.clip(t / max(1, t_total - 1), 0, 1)
        bw, bh = bw0 * scale, bh0 * scale
        cx, cy = _target_path(rng, t, period, t_total, (w, h), (bw, bh), leave_frame)
        boxes = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], 1)[:t_total]
        all_boxes.append(boxes)
        occ = (0, 0)
        if occlusion and t_total >= 30:
            start = int(rng.integers(t_total // 4, t_total * 3 // 4))
            occ = (start, min(t_total, start + int(rng.integers(6, 11))))
        occlusions.append(occ)
        # Visible while at least a quarter of the box is inside the frame (and not replaced).
        inside_w = np.clip(np.minimum(boxes[:, 0] + boxes[:, 2], w) - np.maximum(boxes[:, 0], 0), 0, None)
        vis = inside_w * _overlap_h(boxes, h) >= 0.25 * boxes[:, 2] * boxes[:, 3]
        swap = int(0.4 * t_total) if lookalike else t_total
        vis[swap:] = False
        visible.append(vis)
        for i in range(swap):
            _render(frames[i], tex, boxes[i])
        if swap < t_total:
            # Same colours and outline, another layout: close enough to fool a tracker that only
            # asks "where is it most similar", different enough that the similarity drops.
            twin = (
                tex.flip(1, 2) * torch.from_numpy(rng.uniform(0.85, 1.15, 3).astype(np.float32)).view(3, 1, 1)
            ).clamp(0, 1)
            offset = 1.3 * boxes[swap, 2] * (1 if boxes[swap, 0] + 2.3 * boxes[swap, 2] < w else -1)
            for i in range(swap, t_total):
                _render(frames[i], twin, boxes[i] + np.array([offset, 0.0, 0.0, 0.0]))

    # Occluders go on top of every target: a flat grey-brown slab covering part of the box.
    for boxes, (s, e) in zip(all_boxes, occlusions, strict=True):
        colour = torch.tensor([0.45, 0.42, 0.38]).view(3, 1, 1)
        side_frac = rng.uniform(0.4, 0.6)
        from_left = rng.random() < 0.5
        for i in range(s, e):
            x, y, bw, bh = boxes[i]
            ow = bw * side_frac
            ox = x if from_left else x + bw - ow
            occ_tex = colour.expand(3, 8, 8)
            _render(frames[i], occ_tex, np.array([ox, y - 0.1 * bh, ow, 1.2 * bh]))

    out = (frames.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    boxes_arr = np.stack(all_boxes) if all_boxes else np.zeros((0, t_total, 4))
    vis_arr = np.stack(visible) if visible else np.zeros((0, t_total), dtype=bool)
    return SyntheticSequence(out, boxes_arr.astype(np.float64), fps, name, occlusions, vis_arr)
