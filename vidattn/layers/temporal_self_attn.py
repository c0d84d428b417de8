"""Temporal self-attention: multi-head attention along time at every spatial position.

Papers: Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (multi-head attention,
sinusoidal positions); the "time attention" of Bertasius, Wang, Torresani, "Is
Space-Time Attention All You Need for Video Understanding?" (TimeSformer), ICML 2021.
Pre-norm residual block ``x + proj(MHA(norm(x) + pos))`` with the output projection
zero-initialised, so the block starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ._base import AttentionLayer

__all__ = ["TemporalSelfAttention", "sincos_positions"]


def sincos_positions(length: int, dim: int, *, device=None, dtype=None) -> Tensor:
    """Sinusoidal positional encoding ``(length, dim)`` (Vaswani et al. 2017); odd ``dim`` is padded."""
    half = (dim + 1) // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freqs[None, :]
    pos = torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim]
    return pos.to(dtype) if dtype is not None else pos


class TemporalSelfAttention(AttentionLayer):
    """Multi-head self-attention over T, independently at every (h, w).

    Tokens are ``rearrange(x, 'b c t h w -> (b h w) t c')``; attention runs through
    :func:`torch.nn.functional.scaled_dot_product_attention`.

    Weights recorded: ``(B, heads, T, T)``, the softmax attention (rows sum to 1),
    averaged over spatial positions. They are recomputed explicitly only while
    recording (SDPA does not return them).

    Args:
        channels: input channels ``C`` (the model dim).
        heads: number of heads; ``channels`` must be divisible by it.
        pos: ``"sincos"`` (fixed, any length), ``"learned"`` (up to ``max_len``) or ``"none"``.
        max_len: maximum T for learned positions.
        qkv_bias: bias in the q/k/v projection.
        attn_drop: dropout on the attention weights (training only).
        identity_init: zero-init the output projection so the block starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        heads: int = 4,
        pos: str = "sincos",
        max_len: int = 64,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        heads = max(1, min(heads, channels))
        if channels % heads:
            raise ValueError(f"TemporalSelfAttention: channels ({channels}) must be divisible by heads ({heads})")
        if pos not in ("sincos", "learned", "none"):
            raise ValueError(f"TemporalSelfAttention: pos must be 'sincos', 'learned' or 'none', got {pos!r}")
        self.heads = heads
        self.pos = pos
        self.max_len = max_len
        self.attn_drop = attn_drop
        self.norm = nn.LayerNorm(channels)
        self.pos_embed = nn.Parameter(torch.zeros(max_len, channels)) if pos == "learned" else None
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        if identity_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        b, _, t, h, w = x.shape
        tokens = self.norm(rearrange(x, "b c t h w -> (b h w) t c"))
        if self.pos == "sincos":
            tokens = tokens + sincos_positions(t, self.channels, device=x.device, dtype=tokens.dtype)
        elif self.pos_embed is not None:
            if t > self.max_len:
                raise ValueError(f"TemporalSelfAttention: T={t} exceeds max_len={self.max_len} of learned positions")
            tokens = tokens + self.pos_embed[:t]
        q, k, v = rearrange(self.qkv(tokens), "n t (three heads d) -> three n heads t d", three=3, heads=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        if self.is_recording:
            attn = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
            self._record(rearrange(attn, "(b n) heads i j -> b n heads i j", b=b).mean(1))
        out = self.proj(rearrange(out, "n heads t d -> n t (heads d)"))
        return x + rearrange(out, "(b h w) t c -> b c t h w", b=b, h=h, w=w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, heads={self.heads}, pos={self.pos}"
