"""Per-frame descriptors and quality statistics for key-frame scoring, batched in torch.

A descriptor is a unit vector made of three L2-normalised blocks, so a dot product between two
descriptors is a cosine similarity in [-1, 1] that sees colour, structure and layout:

- **colour**: a joint RGB histogram (4 levels per channel, 64 bins), square-rooted so the dot
  product of two blocks is the Bhattacharyya coefficient (Hellinger kernel);
- **edges**: a histogram of gradient orientations (8 unsigned bins) in each cell of a 2 x 2 grid,
  weighted by gradient magnitude (a 32-bin HOG-like block);
- **layout**: an 8 x 8 grey thumbnail minus its mean (so brightness and contrast changes cancel).

Quality statistics per frame: mean and standard deviation of luma (exposure, flat/black frames)
and the variance of the Laplacian of luma (sharpness; Pech-Pacheco et al. 2000).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DESCRIPTOR_DIM", "FrameStats", "describe_frames"]

_COLOUR_LEVELS = 4
_ORIENT_BINS = 8
_GRID = 2
_THUMB = 8
DESCRIPTOR_DIM = _COLOUR_LEVELS**3 + _ORIENT_BINS * _GRID * _GRID + _THUMB * _THUMB
# Block weights: colour carries most of the shot identity; edges and layout break ties.
_W_COLOUR, _W_EDGES, _W_LAYOUT = 1.0, 0.7, 0.7
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class FrameStats:
    """Descriptors and quality statistics of a batch of frames (all tensors on the CPU, float32).

    Attributes:
        desc: ``(B, D)`` unit descriptors.
        luma_mean, luma_std: ``(B,)`` in [0, 1].
        sharpness: ``(B,)`` variance of the Laplacian of luma (in [0, 1] pixel units).
    """

    desc: torch.Tensor
    luma_mean: torch.Tensor
    luma_std: torch.Tensor
    sharpness: torch.Tensor


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def describe_frames(frames: torch.Tensor, device: str | torch.device = "cpu") -> FrameStats:
    """Descriptors and quality statistics of RGB uint8 frames ``(B, H, W, 3)``.

    Args:
        frames: a batch of frames (any size; 96-200 px on the short side is plenty).
        device: where to compute; results come back on the CPU.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (B, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    frames = frames.to(device, non_blocking=True)
    b = frames.shape[0]
    dev = frames.device

    # Colour: joint histogram of the top 2 bits of R, G, B (4 levels each) on every other pixel,
    # one bincount for the whole batch (frame k's bins are offset by 64 k).
    q = (frames[:, ::2, ::2] >> 6).long()  # (B, h, w, 3), 0..3
    code = (q[..., 0] * _COLOUR_LEVELS + q[..., 1]) * _COLOUR_LEVELS + q[..., 2]  # (B, h, w)
    code = code.flatten(1) + (torch.arange(b, device=dev) * _COLOUR_LEVELS**3).unsqueeze(1)
    hist = torch.bincount(code.flatten(), minlength=b * _COLOUR_LEVELS**3).view(b, -1).float()
    colour = torch.sqrt(hist / hist.sum(1, keepdim=True))  # unit norm by construction

    luma = torch.tensor(_LUMA, device=dev) / 255.0
    grey = frames.float() @ luma  # (B, H, W) in [0, 1]

    # Edges: central-difference gradients at half resolution, unsigned orientation histogram per
    # grid cell, weighted by gradient magnitude.
    half = F.avg_pool2d(grey.unsqueeze(1), 2).squeeze(1) if min(grey.shape[1:]) >= 16 else grey
    gx = half[:, 1:-1, 2:] - half[:, 1:-1, :-2]  # (B, h-2, w-2)
    gy = half[:, 2:, 1:-1] - half[:, :-2, 1:-1]
    mag = torch.sqrt(gx * gx + gy * gy)
    angle = torch.atan2(gy, gx).remainder_(torch.pi)  # unsigned, [0, pi)
    obin = (angle * (_ORIENT_BINS / torch.pi)).long().clamp_(max=_ORIENT_BINS - 1)
    h, w = mag.shape[-2:]
    cell_y = (torch.arange(h, device=dev) * _GRID // max(h, 1)).view(1, h, 1)
    cell_x = (torch.arange(w, device=dev) * _GRID // max(w, 1)).view(1, 1, w)
    n_edge = _ORIENT_BINS * _GRID * _GRID
    ecode = ((cell_y * _GRID + cell_x) * _ORIENT_BINS + obin).flatten(1)
    ecode = ecode + (torch.arange(b, device=dev) * n_edge).unsqueeze(1)
    edges = torch.bincount(ecode.flatten(), weights=mag.flatten(), minlength=b * n_edge).view(b, -1).float()
    edges = _unit(edges)

    # Layout: coarse grey thumbnail, contrast-normalised.
    thumb = F.adaptive_avg_pool2d(grey.unsqueeze(1), (_THUMB, _THUMB)).flatten(1)
    layout = _unit(thumb - thumb.mean(1, keepdim=True))

    desc = _unit(torch.cat([_W_COLOUR * colour, _W_EDGES * edges, _W_LAYOUT * layout], dim=1))

    # Sharpness: variance of the 4-neighbour Laplacian over the interior (no padding: it fakes edges).
    c = grey[:, 1:-1, 1:-1]
    lap = grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:] - 4 * c
    flat = grey.flatten(1)
    return FrameStats(
        desc=desc.float().cpu(),
        luma_mean=flat.mean(1).cpu(),
        luma_std=flat.std(1).cpu(),
        sharpness=lap.flatten(1).var(1).cpu(),
    )
