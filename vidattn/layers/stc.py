"""STC: spatial + temporal + channel attention in one cheap block.

Combines the three gates of the source articles, each as cheap as it can be: an SE
channel gate (Hu et al., CVPR 2018) with reduction 16, a CBAM spatial gate (Woo et al.,
ECCV 2018) on channel-pooled maps with a small per-frame kernel, and a temporal gate
from a 1-D convolution over pooled per-frame features. The name follows Diba et al.,
"Spatio-Temporal Channel Correlation Networks for Action Classification", ECCV 2018,
which also adds a cheap spatio-temporal + channel branch to each 3D residual block.

``mode="sequential"`` applies the gates one after the other in ``order`` (each sees the
output of the previous one, as CBAM does); ``mode="parallel"`` computes all three from
the same input and multiplies once, which is a little cheaper.
"""

from __future__ import annotations

from torch import Tensor

from ._base import AttentionLayer, GatingAttention
from .spatial import SpatialAttention
from .squeeze_excite import SqueezeExcite
from .temporal import TemporalAttention

__all__ = ["STCAttention"]


class STCAttention(AttentionLayer):
    """Spatial, temporal and channel gates combined.

    Weights recorded: by the three children, ``"<name>.channel"`` ``(B, C)``,
    ``"<name>.spatial"`` ``(B, T, H, W)`` and ``"<name>.temporal"`` ``(B, T)``, all
    sigmoid values in [0, 1].

    Args:
        channels: input channels ``C``.
        order: the gates to use and their order, letters from ``"c"``, ``"s"``, ``"t"``
            (e.g. ``"cst"``; ``"ct"`` drops the spatial gate).
        mode: ``"sequential"`` or ``"parallel"``.
        reduction: channel and temporal MLP bottleneck ratio.
        spatial_kernel: spatial gate kernel ``(t, h, w)``.
        temporal_kernel: temporal gate 1-D kernel size.
        identity_init: start every gate as the identity.
    """

    def __init__(
        self,
        channels: int,
        *,
        order: str = "cst",
        mode: str = "sequential",
        reduction: int = 16,
        spatial_kernel: tuple[int, int, int] = (1, 7, 7),
        temporal_kernel: int = 3,
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        if not order or set(order) - set("cst") or len(set(order)) != len(order):
            raise ValueError(f"STCAttention: order must use each of 'c', 's', 't' at most once, got {order!r}")
        if mode not in ("sequential", "parallel"):
            raise ValueError(f"STCAttention: mode must be 'sequential' or 'parallel', got {mode!r}")
        self.order = order
        self.mode = mode
        self.channel = (
            SqueezeExcite(channels, reduction=reduction, identity_init=identity_init) if "c" in order else None
        )
        self.spatial = (
            SpatialAttention(channels, kernel_size=spatial_kernel, identity_init=identity_init)
            if "s" in order
            else None
        )
        self.temporal = (
            TemporalAttention(channels, kernel_size=temporal_kernel, reduction=reduction, identity_init=identity_init)
            if "t" in order
            else None
        )

    def _gate(self, letter: str) -> GatingAttention:
        return {"c": self.channel, "s": self.spatial, "t": self.temporal}[letter]

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        if self.mode == "sequential":
            for letter in self.order:
                x = self._gate(letter)(x)
            return x
        # parallel: every gate sees the same x; multiply the small gates together first
        # so the full-size tensor is touched once.
        gates = [self._gate(letter).gate(x) for letter in self.order]
        gates.sort(key=lambda g: g.numel())
        combined = gates[0]
        for g in gates[1:-1]:
            combined = combined * g
        big = gates[-1]
        return x * big * combined if len(gates) > 1 else x * big

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, order={self.order!r}, mode={self.mode!r}"
