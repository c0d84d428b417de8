"""CBAM: channel attention then spatial attention, for video.

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.
``x = self.channel(x); x = self.spatial(x)``; the channel gate pools with both mean and
max, as in the paper.
"""

from __future__ import annotations

from torch import Tensor

from ._base import AttentionLayer
from .spatial import SpatialAttention
from .squeeze_excite import SqueezeExcite

__all__ = ["CBAM"]


class CBAM(AttentionLayer):
    """Channel gate (avg+max pooled MLP) followed by a spatial gate.

    Weights recorded: by the two children, ``"<name>.channel"`` ``(B, C)`` and
    ``"<name>.spatial"`` ``(B, T, H, W)``, both sigmoid values in [0, 1].

    Args:
        channels: input channels ``C``.
        reduction: channel MLP bottleneck ratio.
        kernel_size: spatial conv kernel ``(t, h, w)``.
        identity_init: start both gates as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        kernel_size: tuple[int, int, int] = (1, 7, 7),
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.channel = SqueezeExcite(channels, reduction=reduction, pool="avgmax", identity_init=identity_init)
        self.spatial = SpatialAttention(channels, kernel_size=kernel_size, identity_init=identity_init)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.spatial(self.channel(x))
