"""Squeeze-and-excitation channel attention for video ("what to look at").

Paper: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
Global average pool over (T, H, W), a bottleneck MLP (as 1x1x1 convs), a sigmoid gate
per channel.
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import GatingAttention, make_divisible_hidden

__all__ = ["SqueezeExcite"]


class SqueezeExcite(GatingAttention):
    """SE channel gate.

    Weights recorded: ``(B, C)``, sigmoid values in [0, 1].

    Args:
        channels: input channels ``C``.
        reduction: bottleneck ratio; the hidden width is ``max(min_hidden, C / reduction)``.
        min_hidden: floor on the hidden width (tiny models).
        pool: ``"avg"`` (SE) or ``"avgmax"`` (CBAM's channel attention: the shared MLP
            sees both the average- and the max-pooled vector and the logits are summed).
        identity_init: zero-init the last conv so the layer starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        reduction: int = 16,
        min_hidden: int = 4,
        pool: str = "avg",
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        if pool not in ("avg", "avgmax"):
            raise ValueError(f"SqueezeExcite: pool must be 'avg' or 'avgmax', got {pool!r}")
        self.pool = pool
        hidden = make_divisible_hidden(channels, reduction, min_hidden)
        self.fc1 = nn.Conv3d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv3d(hidden, channels, kernel_size=1)
        if identity_init:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def gate(self, x: Tensor) -> Tensor:
        """The multiplier for ``x`` (broadcastable to it); records the weights."""
        logits = self.fc2(self.act(self.fc1(x.mean((2, 3, 4), keepdim=True))))
        if self.pool == "avgmax":
            logits = logits + self.fc2(self.act(self.fc1(x.amax((2, 3, 4), keepdim=True))))
        return self.gate_from_logits(logits, "b c 1 1 1 -> b c")
