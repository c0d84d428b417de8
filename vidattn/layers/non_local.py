"""Space-time non-local block (embedded Gaussian self-attention).

Paper: Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018; the same
query/key/value form as SAGAN (Zhang et al., "Self-Attention Generative Adversarial
Networks", ICML 2019). ``z = x + BN(W(softmax(theta(x)^T phi(x)) g(x)))`` over all
T*H*W positions; the BN scale is zero-initialised so the block starts as the identity,
as the paper recommends. Keys and values may be max-pooled (``subsample``) to save
compute, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ._base import AttentionLayer

__all__ = ["NonLocalBlock"]


class NonLocalBlock(AttentionLayer):
    """Embedded-Gaussian non-local block over space-time.

    The pairwise function is ``softmax(theta_i . phi_j / sqrt(d))`` (the scaled form,
    computed with :func:`torch.nn.functional.scaled_dot_product_attention`).

    Weights recorded: ``(B, N, M)`` with ``N = T*H*W`` query and ``M`` key positions
    (after ``subsample``); each row is a softmax and sums to 1. This is quadratic in
    size, so only collect it on small inputs.

    Args:
        channels: input channels ``C``.
        inner_channels: width of theta/phi/g; default ``C // 2`` (at least 1).
        subsample: max-pool kernel ``(t, h, w)`` applied to keys/values; ``(1, 1, 1)`` for none.
        identity_init: zero-init the output BN scale so the block starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        inner_channels: int | None = None,
        subsample: tuple[int, int, int] = (1, 2, 2),
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        inner = inner_channels or max(1, channels // 2)
        self.inner_channels = inner
        self.theta = nn.Conv3d(channels, inner, kernel_size=1)
        self.phi = nn.Conv3d(channels, inner, kernel_size=1)
        self.g = nn.Conv3d(channels, inner, kernel_size=1)
        self.subsample = tuple(subsample)
        self.pool = nn.MaxPool3d(self.subsample, ceil_mode=True) if self.subsample != (1, 1, 1) else nn.Identity()
        self.out = nn.Conv3d(inner, channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm3d(channels)
        if identity_init:
            nn.init.zeros_(self.bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        _, _, t, h, w = x.shape
        q = rearrange(self.theta(x), "b c t h w -> b 1 (t h w) c")
        kv = self.pool(x)
        k = rearrange(self.phi(kv), "b c t h w -> b 1 (t h w) c")
        v = rearrange(self.g(kv), "b c t h w -> b 1 (t h w) c")
        y = F.scaled_dot_product_attention(q, k, v)
        if self.is_recording:
            attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
            self._record(rearrange(attn, "b 1 n m -> b n m"))
        y = rearrange(y, "b 1 (t h w) c -> b c t h w", t=t, h=h, w=w)
        return x + self.bn(self.out(y))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inner_channels={self.inner_channels}, subsample={self.subsample}"
