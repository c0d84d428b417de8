"""Temporal gating attention ("when to look").

One weight per frame from spatially pooled features and a 1-D convolution over time,
as in the local (importance-map) branch of Liu, Wang, Qian, Lu, "TAM: Temporal Adaptive
Module for Video Recognition", ICCV 2021. The weights double as key-frame scores.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor

from ._base import GatingAttention, build_frame_scorer, frame_scores

__all__ = ["TemporalAttention"]


class TemporalAttention(GatingAttention):
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
        build_frame_scorer(self, channels, reduction, min_hidden, kernel_size, identity_init)

    def frame_logits(self, x: Tensor) -> Tensor:
        """Per-frame logits ``(B, T)`` before the sigmoid."""
        return frame_scores(self, x)

    def gate(self, x: Tensor) -> Tensor:
        """The multiplier for ``x`` (broadcastable to it); records the weights."""
        logits = rearrange(self.frame_logits(x), "b t -> b 1 t 1 1")
        return self.gate_from_logits(logits, "b 1 t 1 1 -> b t")
