"""Per-frame descriptors and quality statistics for key-frame scoring, batched in numpy.

A descriptor is a unit vector made of three L2-normalised blocks, so a dot product between two
descriptors is a cosine similarity in [-1, 1] that sees colour, structure and layout:

- **colour**: a joint RGB histogram (4 levels per channel, 64 bins), square-rooted so the dot
  product of two blocks is the Bhattacharyya coefficient (Hellinger kernel);
- **edges**: a histogram of gradient orientations (8 unsigned bins) in each cell of a 2 x 2 grid,
  weighted by gradient magnitude (a 32-bin HOG-like block);
- **layout**: an 8 x 8 grey thumbnail minus its mean (so brightness and contrast changes cancel).

Quality statistics per frame: mean and standard deviation of luma (exposure, flat/black frames)
and the variance of the Laplacian of luma (sharpness; Pech-Pacheco et al. 2000).

The training-free key-frame path is numpy only: it never imports torch (about 2 s of CPU at start-up,
more than scoring a minute of video costs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DESCRIPTOR_DIM", "FrameStats", "describe_frames"]

_COLOUR_LEVELS = 4
_ORIENT_BINS = 8
_GRID = 2
_THUMB = 8
DESCRIPTOR_DIM = _COLOUR_LEVELS**3 + _ORIENT_BINS * _GRID * _GRID + _THUMB * _THUMB
# Block weights: colour carries most of the shot identity; edges and layout break ties.
_W_COLOUR, _W_EDGES, _W_LAYOUT = 1.0, 0.7, 0.7
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0


@dataclass
class FrameStats:
    """Descriptors and quality statistics of a batch of frames (float32 numpy arrays).

    Attributes:
        desc: ``(B, D)`` unit descriptors.
        luma_mean, luma_std: ``(B,)`` in [0, 1].
        sharpness: ``(B,)`` variance of the Laplacian of luma (in [0, 1] pixel units).
        thumb: ``(B, 64)`` the 8 x 8 grey thumbnail in [0, 1] (gradual transitions are blends of them).
    """

    desc: np.ndarray
    luma_mean: np.ndarray
    luma_std: np.ndarray
    sharpness: np.ndarray
    thumb: np.ndarray

    def rows(self, keep: np.ndarray) -> FrameStats:
        """The statistics of the frames `keep` selects (a boolean mask or indices)."""
        return FrameStats(*(getattr(self, f)[keep] for f in _FIELDS))

    @classmethod
    def concat(cls, parts: list[FrameStats]) -> FrameStats:
        """The statistics of consecutive batches as one (an empty list gives zero frames)."""
        if not parts:
            zeros = np.zeros(0, dtype=np.float32)
            thumbs = np.zeros((0, _THUMB * _THUMB), dtype=np.float32)
            return cls(np.zeros((0, DESCRIPTOR_DIM), dtype=np.float32), zeros, zeros, zeros, thumbs)
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("desc", "luma_mean", "luma_std", "sharpness", "thumb")


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of `x` scaled to unit L2 norm (all-zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _box_means(grey: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """``(B, rows, cols)`` means over adaptive bins (as torch's adaptive average pooling), via an integral image."""
    b, h, w = grey.shape
    integral = np.zeros((b, h + 1, w + 1), dtype=np.float64)
    np.cumsum(np.cumsum(grey, axis=1, dtype=np.float64), axis=2, out=integral[:, 1:, 1:])
    y0 = np.arange(rows) * h // rows
    y1 = -((-(np.arange(rows) + 1) * h) // rows)  # ceil
    x0 = np.arange(cols) * w // cols
    x1 = -((-(np.arange(cols) + 1) * w) // cols)
    total = (
        integral[:, y1[:, None], x1[None, :]]
        - integral[:, y0[:, None], x1[None, :]]
        - integral[:, y1[:, None], x0[None, :]]
        + integral[:, y0[:, None], x0[None, :]]
    )
    area = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    # C order: the fancy indexing above lays the batch axis innermost, and a reduction over a row strided by the
    # batch size sums in another order than over a lone row (the results would change with the batch).
    return np.ascontiguousarray((total / area).astype(np.float32))


_BIN_EDGES = np.arange(1, _ORIENT_BINS) * np.pi / _ORIENT_BINS
_EDGE_COS, _EDGE_SIN = np.cos(_BIN_EDGES).astype(np.float32), np.sin(_BIN_EDGES).astype(np.float32)


def _orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Unsigned gradient orientation ``theta`` in [0, pi) as a bin number ``floor(theta / (pi / 8))``.

    Without arctan (3x cheaper): fold the gradient into the upper half-plane, then count the bin edges
    ``phi`` it lies at or past, ``theta >= phi  <=>  sin(theta - phi) >= 0  <=>  gy cos(phi) - gx sin(phi) >= 0``.
    """
    flip = (gy < 0) | ((gy == 0) & (gx < 0))
    x, y = np.where(flip, -gx, gx), np.where(flip, -gy, gy)
    out = np.zeros(gx.shape, dtype=np.intp)
    for c, s in zip(_EDGE_COS, _EDGE_SIN, strict=True):
        out += y * c - x * s >= 0
    return out


def describe_frames(frames: np.ndarray) -> FrameStats:
    """Descriptors and quality statistics of RGB uint8 frames ``(B, H, W, 3)``.

    Args:
        frames: a batch of frames (numpy, or anything `np.asarray` takes, such as a CPU tensor); any
            size, 96-200 px on the short side is plenty.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (B, H, W, 3), got {frames.shape} {frames.dtype}")
    b = frames.shape[0]

    # Colour: joint histogram of the top 2 bits of R, G, B (4 levels each) on every other pixel,
    # one bincount for the whole batch (frame k's bins are offset by 64 k).
    q = frames[:, ::2, ::2] >> 6  # (B, h, w, 3), 0..3
    code = (q[..., 0].astype(np.intp) * _COLOUR_LEVELS + q[..., 1]) * _COLOUR_LEVELS + q[..., 2]
    code = code.reshape(b, -1) + (np.arange(b) * _COLOUR_LEVELS**3)[:, None]
    hist = np.bincount(code.ravel(), minlength=b * _COLOUR_LEVELS**3).reshape(b, -1).astype(np.float32)
    colour = np.sqrt(hist / hist.sum(1, keepdims=True))  # unit norm by construction

    grey = frames.astype(np.float32) @ _LUMA  # (B, H, W) in [0, 1]

    # Edges: central-difference gradients at half resolution, unsigned orientation histogram per
    # grid cell, weighted by gradient magnitude.
    if min(grey.shape[1:]) >= 16:
        g = grey[:, : grey.shape[1] // 2 * 2, : grey.shape[2] // 2 * 2]
        half = (g[:, 0::2, 0::2] + g[:, 1::2, 0::2] + g[:, 0::2, 1::2] + g[:, 1::2, 1::2]) * 0.25
    else:
        half = grey
    gx = half[:, 1:-1, 2:] - half[:, 1:-1, :-2]  # (B, h-2, w-2)
    gy = half[:, 2:, 1:-1] - half[:, :-2, 1:-1]
    mag = np.sqrt(gx * gx + gy * gy)
    obin = _orientation_bins(gx, gy)
    h, w = mag.shape[-2:]
    cell_y = (np.arange(h) * _GRID // max(h, 1)).reshape(1, h, 1)
    cell_x = (np.arange(w) * _GRID // max(w, 1)).reshape(1, 1, w)
    n_edge = _ORIENT_BINS * _GRID * _GRID
    ecode = ((cell_y * _GRID + cell_x) * _ORIENT_BINS + obin).reshape(b, -1) + (np.arange(b) * n_edge)[:, None]
    edges = np.bincount(ecode.ravel(), weights=mag.ravel(), minlength=b * n_edge).reshape(b, -1)
    edges = _unit(edges.astype(np.float32))

    # Layout: coarse grey thumbnail, contrast-normalised.
    thumb = _box_means(grey, _THUMB, _THUMB).reshape(b, -1)
    layout = _unit(thumb - thumb.mean(1, keepdims=True))

    desc = _unit(np.concatenate([_W_COLOUR * colour, _W_EDGES * edges, _W_LAYOUT * layout], axis=1))

    # Sharpness: variance of the 4-neighbour Laplacian over the interior (no padding: it fakes edges).
    c = grey[:, 1:-1, 1:-1]
    lap = grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - 4 * c
    flat = grey.reshape(b, -1)
    return FrameStats(
        desc=desc.astype(np.float32),
        luma_mean=flat.mean(1, dtype=np.float64).astype(np.float32),
        luma_std=flat.std(1, ddof=1, dtype=np.float64).astype(np.float32),
        sharpness=lap.reshape(b, -1).var(1, ddof=1, dtype=np.float64).astype(np.float32),
        thumb=thumb.astype(np.float32),
    )
