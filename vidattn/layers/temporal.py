"""Temporal gating attention ("when to look").

One weight per frame from spatially pooled features and a 1-D convolution over time,
as in the local (importance-map) branch of Liu, Wang, Qian, Lu, "TAM: Temporal Adaptive
Module for Video Recognition", ICCV 2021. The weights double as key-frame scores.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from ._base import AttentionLayer, make_divisible_hidden

__all__ = ["TemporalAttention"]


class TemporalAttention(AttentionLayer):
    """Per-frame sigmoid gate: ``conv1d(relu(conv1d(mean_hw(x))))`` over T.

    Weights recorded: ``(B, T)``, sigmoid values in [0, 1].

    Args:
        channels: input channels ``C``.
        kernel_size: odd 1-D kernel over time.
        reduction: hidden width ``max(min_hidden, C / reduction)``.
        min_hidden: floor on the hidden width.
        identity_init: zero-init the last conv so the layer starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int = 3,
        reduction: int = 16,
        min_hidden: int = 4,
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        if kernel_size % 2 == 0:
            raise ValueError(f"TemporalAttention: kernel_size must be odd, got {kernel_size}")
        hidden = make_divisible_hidden(channels, reduction, min_hidden)
        self.conv1 = nn.Conv1d(channels, hidden, kernel_size, padding=kernel_size // 2)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(hidden, 1, kernel_size, padding=kernel_size // 2)
        if identity_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def frame_logits(self, x: Tensor) -> Tensor:
        """Per-frame logits ``(B, T)`` before the sigmoid."""
        return rearrange(self.conv2(self.act(self.conv1(x.mean((3, 4))))), "b 1 t -> b t")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return x * self.gate(x)

    def gate(self, x: Tensor) -> Tensor:
        """The multiplier for ``x`` (broadcastable to it); records the weights."""
        logits = rearrange(self.frame_logits(x), "b t -> b 1 t 1 1")
        return self.gate_from_logits(logits, "b 1 t 1 1 -> b t")
