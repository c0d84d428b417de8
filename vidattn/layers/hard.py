"""Hard temporal attention: keep the top-k frames, drop the rest.

Instead of weighting every frame, a scorer picks ``k`` frames. The discrete choice is
trained with the straight-through estimator (Bengio, Leonard, Courville, "Estimating or
Propagating Gradients Through Stochastic Neurons", 2013) or with Gumbel noise on the
scores (Jang, Gu, Poole, "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017;
Kool et al., "Stochastic Beams and Where to Find Them: the Gumbel-Top-k Trick", ICML
2019). Selection as in Korbar, Tran, Torresani, "SCSampler: Sampling Salient Clips from
Video for Efficient Action Recognition", ICCV 2019: fewer frames, less compute.

In the forward pass the mask is exactly 0/1; in the backward pass gradients flow to the
scorer through the softmax: ``mask = hard + soft - soft.detach()``.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor

from ._base import AttentionLayer, build_frame_scorer, frame_scores

__all__ = ["HardTemporalAttention", "select_topk"]


def select_topk(
    scores: Tensor, k: int, *, tau: float = 1.0, gumbel: bool = False, min_gap: int = 1
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick the `k` best positions of ``scores`` ``(B, T)`` with a straight-through gradient.

    Args:
        scores: logits per position.
        k: positions to pick (at most T).
        tau: softmax temperature.
        gumbel: add Gumbel(0, 1) noise first (Gumbel-top-k sampling; use while training).
        min_gap: picks are at least this many positions apart while that is possible (non-maximum
            suppression: two glimpses of the same moment waste compute); 1 = plain top-k.

    Returns:
        ``(mask, index, soft)``: the mask ``(B, T)`` (exactly 0/1 forward, the softmax's gradient backward,
        so a loss on what the picks lead to trains the scorer), the picked positions ``(B, k)`` in temporal
        order, and the softmax ``(B, T)``.
    """
    if gumbel:
        u = torch.rand_like(scores).clamp_(1e-6, 1.0 - 1e-6)
        scores = scores - torch.log(-torch.log(u))  # + Gumbel(0, 1) noise
    soft = torch.softmax(scores / tau, dim=-1)
    k = min(k, scores.shape[-1])
    if min_gap <= 1:
        index = soft.detach().topk(k, dim=-1).indices
    else:
        free = soft.detach()
        positions = torch.arange(scores.shape[-1], device=scores.device)
        near = torch.zeros_like(free, dtype=torch.bool)
        taken = torch.zeros_like(near)
        picks = []
        for _ in range(k):
            # Suppressed positions stay pickable after all free ones (a short video); taken ones never again.
            pick = free.masked_fill(near, -1.0).masked_fill(taken, -2.0).argmax(-1)  # (B,)
            picks.append(pick)
            near |= (positions[None, :] - pick[:, None]).abs() < min_gap
            taken.scatter_(1, pick[:, None], True)
        index = torch.stack(picks, dim=-1)
    index = index.sort(dim=-1).values
    hard = torch.zeros_like(soft).scatter_(1, index, 1.0)
    return hard + soft - soft.detach(), index, soft


class HardTemporalAttention(AttentionLayer):
    """Top-k frame selection with a straight-through or Gumbel estimator.

    ``output="mask"`` keeps the shape and zeroes the unselected frames (drop-in inside a
    residual block); ``output="gather"`` returns only the ``k`` selected frames, in
    temporal order, ``(B, C, k, H, W)`` — use it in front of a network to save compute.
    The layer is the identity when ``k >= T`` (every frame selected); otherwise dropping
    frames is its purpose, so ``identity_init`` only zero-inits the scorer (all frames
    start equally likely).

    Weights recorded: ``"<name>"`` the selection probabilities ``(B, T)`` (softmax, sums
    to 1) and ``"<name>:mask"`` the 0/1 selection ``(B, T)`` (sums to ``k``).

    Args:
        channels: input channels ``C``.
        k: number of frames to keep; None uses ``keep_ratio``.
        keep_ratio: fraction of frames to keep when ``k`` is None (at least 1 frame).
        estimator: ``"st"`` (straight-through softmax) or ``"gumbel"`` (Gumbel-top-k
            sampling while training, deterministic top-k in eval).
        tau: softmax temperature.
        output: ``"mask"`` or ``"gather"``.
        kernel_size: 1-D kernel of the scorer over time.
        reduction: scorer hidden width ``max(min_hidden, C / reduction)``.
        min_hidden: floor on the hidden width.
        identity_init: zero-init the scorer's last conv (uniform scores at step 0).
    """

    def __init__(
        self,
        channels: int,
        *,
        k: int | None = None,
        keep_ratio: float = 0.5,
        estimator: str = "st",
        tau: float = 1.0,
        output: str = "mask",
        kernel_size: int = 3,
        reduction: int = 16,
        min_hidden: int = 4,
        identity_init: bool = True,
    ) -> None:
        super().__init__(channels, identity_init=identity_init)
        if estimator not in ("st", "gumbel"):
            raise ValueError(f"HardTemporalAttention: estimator must be 'st' or 'gumbel', got {estimator!r}")
        if output not in ("mask", "gather"):
            raise ValueError(f"HardTemporalAttention: output must be 'mask' or 'gather', got {output!r}")
        if k is not None and k < 1:
            raise ValueError(f"HardTemporalAttention: k must be >= 1, got {k}")
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"HardTemporalAttention: keep_ratio must be in (0, 1], got {keep_ratio}")
        self.k, self.keep_ratio, self.estimator, self.tau, self.output = k, keep_ratio, estimator, tau, output
        build_frame_scorer(self, channels, reduction, min_hidden, kernel_size, identity_init)

    def num_selected(self, t: int) -> int:
        """How many of ``t`` frames are kept."""
        k = self.k if self.k is not None else max(1, int(round(self.keep_ratio * t)))
        return min(k, t)

    def select(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Score the frames of ``x``.

        Returns:
            ``(mask, index)``: the straight-through mask ``(B, T)`` (exactly 0/1 forward,
            softmax gradient backward) and the sorted selected frame indices ``(B, k)``.
        """
        gumbel = self.estimator == "gumbel" and self.training
        mask, index, soft = select_topk(
            frame_scores(self, x), self.num_selected(x.shape[2]), tau=self.tau, gumbel=gumbel
        )
        if self.is_recording:
            self._record(soft)
            self._record(torch.zeros_like(soft).scatter_(1, index, 1.0), ":mask")  # exactly 0/1
        return mask, index

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        mask, index = self.select(x)
        if self.output == "mask":
            return x * rearrange(mask, "b t -> b 1 t 1 1")
        b, c, _, h, w = x.shape
        frames = x.gather(2, repeat(index, "b k -> b c k h w", c=c, h=h, w=w))
        return frames * rearrange(mask.gather(1, index), "b k -> b 1 k 1 1")

    def extra_repr(self) -> str:
        k = self.k if self.k is not None else f"{self.keep_ratio:g}*T"
        return f"{super().extra_repr()}, k={k}, estimator={self.estimator!r}, output={self.output!r}"
