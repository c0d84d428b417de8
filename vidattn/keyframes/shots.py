"""Hard-cut detection on the sampled frames' descriptors.

A cut between samples ``t-1`` and ``t`` is declared where the cosine distance
``delta_t = 1 - d_t . d_{t-1}`` is both large in absolute terms and a spike against its
neighbourhood (the adaptive rule of PySceneDetect's AdaptiveDetector):

    delta_t >= min_distance   and   delta_t >= ratio * mean(delta_{t-w..t+w} without delta_t) + margin

Camera motion raises several consecutive distances together and fails the spike test; a cut
raises one. Cuts are located to the sampling interval (the first sample of the new shot).
"""

from __future__ import annotations

import torch

__all__ = ["consecutive_distances", "detect_cuts", "shot_ids"]


def consecutive_distances(desc: torch.Tensor) -> torch.Tensor:
    """``(T,)`` cosine distance of each unit descriptor to the previous one (0 for the first)."""
    if desc.shape[0] < 2:
        return torch.zeros(desc.shape[0])
    d = 1.0 - (desc[1:] * desc[:-1]).sum(1)
    return torch.cat([torch.zeros(1), d.clamp_min(0)])


def detect_cuts(
    desc: torch.Tensor, *, min_distance: float = 0.2, ratio: float = 3.0, margin: float = 0.02, window: int = 2
) -> list[int]:
    """Positions ``t`` (into the sample sequence) where a new shot starts.

    Args:
        desc: ``(T, D)`` unit descriptors in time order.
        min_distance: smallest cosine distance that can be a cut.
        ratio, margin: how far above the local mean distance a cut must stand.
        window: neighbours on each side (samples) for the local mean.
    """
    delta = consecutive_distances(desc)
    n = delta.shape[0]
    cuts = []
    for t in range(1, n):
        value = float(delta[t])
        if value < min_distance:
            continue
        lo, hi = max(1, t - window), min(n, t + window + 1)
        neigh = torch.cat([delta[lo:t], delta[t + 1 : hi]])
        local = float(neigh.mean()) if neigh.numel() else 0.0
        if value >= ratio * local + margin:
            cuts.append(t)
    return cuts


def shot_ids(num_samples: int, cuts: list[int]) -> torch.Tensor:
    """``(T,)`` shot number of each sample given the cut positions."""
    ids = torch.zeros(num_samples, dtype=torch.long)
    for c in cuts:
        ids[c:] += 1
    return ids
