"""Efficient channel attention (ECA) for video.

Paper: Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural
Networks", CVPR 2020. Like SE without the bottleneck: a 1-D convolution across the
pooled channel vector, with a kernel size that grows with ``log2(C)``.
"""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor, nn

from ._base import GatingAttention

__all__ = ["EfficientChannelAttention"]


def _eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    t = int(abs((math.log2(channels) + beta) / gamma))
    return max(t if t % 2 else t + 1, 3)


class EfficientChannelAttention(GatingAttention):
    """ECA channel gate: ``sigmoid(conv1d(avgpool(x)))`` over the channel axis.

    Weights recorded: ``(B, C)``, sigmoid values in [0, 1].

    Args:
        channels: input channels ``C``.
        kernel_size: 1-D kernel across channels; None picks it from ``C`` as in the paper.
        identity_init: zero-init the conv so the layer starts as the identity.
    """

    def __init__(self, channels: int, *, kernel_size: int | None = None, identity_init: bool = True) -> None:
        super().__init__(channels, identity_init=identity_init)
        k = kernel_size or _eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)
        if identity_init:
            nn.init.zeros_(self.conv.weight)

    def gate(self, x: Tensor) -> Tensor:
        """The multiplier for ``x`` (broadcastable to it); records the weights."""
        pooled = rearrange(x.mean((2, 3, 4)), "b c -> b 1 c")
        logits = rearrange(self.conv(pooled), "b 1 c -> b c 1 1 1")
        return self.gate_from_logits(logits, "b c 1 1 1 -> b c")
