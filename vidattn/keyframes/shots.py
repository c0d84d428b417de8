"""Hard-cut detection on the sampled frames' descriptors.

A cut between samples ``t-1`` and ``t`` is declared where the cosine distance
``delta_t = 1 - d_t . d_{t-1}`` is both large in absolute terms and a spike against its
neighbourhood (the adaptive rule of PySceneDetect's AdaptiveDetector):

    delta_t >= min_distance   and   delta_t >= ratio * mean(delta_{t-w..t+w} without delta_t) + margin

Camera motion raises several consecutive distances together and fails the spike test; a cut
raises one. Cuts are located to the sampling interval (the first sample of the new shot).
"""

from __future__ import annotations

import numpy as np

__all__ = ["consecutive_distances", "detect_cuts", "shot_ids"]


def consecutive_distances(desc: np.ndarray) -> np.ndarray:
    """``(T,)`` cosine distance of each unit descriptor to the previous one (0 for the first)."""
    desc = np.asarray(desc, dtype=np.float32)
    out = np.zeros(desc.shape[0], dtype=np.float32)
    if desc.shape[0] >= 2:
        out[1:] = np.maximum(1.0 - (desc[1:] * desc[:-1]).sum(1), 0.0)
    return out


def detect_cuts(
    desc: np.ndarray, *, min_distance: float = 0.2, ratio: float = 3.0, margin: float = 0.02, window: int = 2
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
        neigh = np.concatenate([delta[lo:t], delta[t + 1 : hi]])
        local = float(neigh.mean()) if neigh.size else 0.0
        if value >= ratio * local + margin:
            cuts.append(t)
    return cuts


def shot_ids(num_samples: int, cuts: list[int]) -> np.ndarray:
    """``(T,)`` shot number of each sample given the cut positions."""
    ids = np.zeros(num_samples, dtype=np.int64)
    for c in cuts:
        ids[c:] += 1
    return ids
