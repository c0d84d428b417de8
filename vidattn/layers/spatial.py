"""CBAM-style spatial attention for video ("where to look").

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.
Pool over channels (mean and max), one convolution, a sigmoid map that re-weights every
position. The kernel is ``(1, k, k)`` for a per-frame 2-D map or ``(kt, k, k)`` for a
3-D map that also looks at neighbouring frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._base import GatingAttention

__all__ = ["SpatialAttention"]


def _same_padding(kernel_size: tuple[int, int, int]) -> tuple[int, int, int]:
    if any(k % 2 == 0 for k in kernel_size):
        raise ValueError(f"kernel sizes must be odd to keep the shape, got {kernel_size}")
    return (kernel_size[0] // 2, kernel_size[1] // 2, kernel_size[2] // 2)


class SpatialAttention(GatingAttention):
    """Spatial gate from channel-pooled statistics.

    Weights recorded: ``(B, T, H, W)``, sigmoid values in [0, 1].

    Args:
        channels: input channels ``C`` (checked; the conv sees 2 pooled channels).
        kernel_size: ``(t, h, w)``; ``(1, 7, 7)`` is the per-frame 2-D map of CBAM,
            ``(3, 7, 7)`` a 3-D one.
        identity_init: zero-init the conv so the layer starts as the identity.
    """

    def __init__(
        self, channels: int, *, kernel_size: tuple[int, int, int] = (1, 7, 7), identity_init: bool = True
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        self.kernel_size = tuple(kernel_size)
        self.conv = nn.Conv3d(2, 1, kernel_size=self.kernel_size, padding=_same_padding(self.kernel_size))
        if identity_init:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def gate(self, x: Tensor) -> Tensor:
        """The multiplier for ``x`` (broadcastable to it); records the weights."""
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)  # (B, 2, T, H, W)
        return self.gate_from_logits(self.conv(pooled), "b 1 t h w -> b t h w")
