"""Spatial transformer for video: a learned per-frame affine warp.

Paper: Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks",
NeurIPS 2015. A small localisation network predicts one affine matrix per frame; the
frame is resampled with :func:`torch.nn.functional.grid_sample` so the network can
zoom onto the region of interest. The regressor is initialised to the identity
transform, so the layer starts as the identity (up to bilinear-resampling rounding,
< 1e-5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ._base import AttentionLayer, make_divisible_hidden

__all__ = ["SpatialTransformer"]


class SpatialTransformer(AttentionLayer):
    """Per-frame affine warp ``grid_sample(x_t, affine_grid(theta_t))``.

    Weights recorded: the affine matrices ``(B, T, 2, 3)`` (normalised coordinates,
    ``align_corners=False``; the identity is ``[[1, 0, 0], [0, 1, 0]]``).

    Args:
        channels: input channels ``C``.
        hidden: width of the localisation network; default ``max(8, C / 4)``.
        padding_mode: ``grid_sample`` padding for points outside the frame.
        identity_init: start from the identity transform (always true for an STN in
            practice; False gives a random regressor).
    """

    def __init__(
        self,
        channels: int,
        *,
        hidden: int | None = None,
        padding_mode: str = "zeros",
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        hidden = hidden or make_divisible_hidden(channels, 4, 8)
        self.padding_mode = padding_mode
        # Localisation network on each frame: conv -> relu -> conv(stride 2) -> relu -> global pool -> fc.
        self.loc = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.fc = nn.Linear(hidden, 6)
        if identity_init:
            nn.init.zeros_(self.fc.weight)
            with torch.no_grad():
                self.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def theta(self, x: Tensor) -> Tensor:
        """Affine matrices ``(B, T, 2, 3)`` for the frames of ``x``."""
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(self.fc(self.loc(frames)), "(b t) (i j) -> b t i j", b=x.shape[0], i=2, j=3)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        b, c, t, h, w = x.shape
        theta = self.theta(x)
        self._record(theta)
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        grid = F.affine_grid(rearrange(theta, "b t i j -> (b t) i j"), [b * t, c, h, w], align_corners=False)
        out = F.grid_sample(frames, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        return rearrange(out, "(b t) c h w -> b c t h w", b=b)
