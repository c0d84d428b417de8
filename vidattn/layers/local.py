"""Local (neighbourhood) soft attention for video.

A soft-attention map whose weight at each position comes from a small neighbourhood
convolution over learned features, as in the "local attention" of the source articles
and the attention branches of Wang et al., "Residual Attention Network for Image
Classification", CVPR 2017. Unlike :class:`~vidattn.layers.SpatialAttention`, which
sees only channel-pooled statistics, the map is computed from a learned projection.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import GatingAttention, make_divisible_hidden
from .spatial import _same_padding

__all__ = ["LocalAttention"]


class LocalAttention(GatingAttention):
    """``sigmoid(conv_kxk(relu(conv_1x1(x))))`` as a per-position gate.

    Weights recorded: ``(B, T, H, W)``, sigmoid values in [0, 1].

    Args:
        channels: input channels ``C``.
        kernel_size: neighbourhood ``(t, h, w)``; ``(1, 3, 3)`` is per frame.
        reduction: the 1x1x1 projection width is ``max(min_hidden, C / reduction)``.
        min_hidden: floor on the projection width.
        identity_init: zero-init the neighbourhood conv so the layer starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: tuple[int, int, int] = (1, 3, 3),
        reduction: int = 8,
        min_hidden: int = 4,
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        hidden = make_divisible_hidden(channels, reduction, min_hidden)
        self.proj = nn.Conv3d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv3d(hidden, 1, kernel_size=tuple(kernel_size), padding=_same_padding(tuple(kernel_size)))
        if identity_init:
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def gate(self, x: Tensor) -> Tensor:
        """The multiplier for ``x`` (broadcastable to it); records the weights."""
        return self.gate_from_logits(self.conv(self.act(self.proj(x))), "b 1 t h w -> b t h w")
