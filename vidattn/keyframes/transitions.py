"""Gradual transitions (fades and dissolves) on the sampled frames.

During a dissolve every frame is a blend ``(1 - a) A + a B`` of the last picture of the outgoing
shot and the first of the incoming one, with ``a`` rising from 0 to 1; a fade is the same with black
as one side. So a stretch of samples ``s..e`` is a transition when

- its ends differ (descriptor distance at least `min_distance`: the shot changed), and there is no
  hard cut between them;
- every sample inside is such a blend of the two ends' 8 x 8 grey thumbnails: least-squares ``a_t``
  within [-0.1, 1.1], rising with t (by more than a tenth in all), and a residual under `residual`
  times the distance between the ends;
- at least one sample is mid-way (``0.15 <= a_t <= 0.85``);
- for a dissolve (neither end black), the luma contrast dips inside, below the straight line between
  the ends' (a blend of two unrelated pictures has less contrast than the line; a camera pan, which the
  blend test can mistake for a dissolve at 8 x 8, keeps it).

Stretches are grown greedily to the longest that passes (up to `max_samples`), then narrowed to the
samples around the mid-blend ones (``0.2 <= a_t <= 0.8``). A fade-out and a fade-in joined by black
(or nearly black) samples are one transition. It is reported between the two samples that bound it,
``(index[s], index[e])`` exclusive; no sample inside, nor those two, is taken as a key frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidattn.keyframes.descriptors import FrameStats

__all__ = ["Transition", "find_transitions"]


@dataclass
class Transition:
    """A fade or dissolve: ``kind``, and its first and last frame (inclusive) and sample positions."""

    kind: str
    start_frame: int
    end_frame: int
    first_sample: int  # first sample inside
    last_sample: int  # last sample inside


def _blend_fit(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(a_t, residual_t / |B - A|) of the inner rows as blends of the first and last; None if the ends match."""
    a, b = thumbs[0], thumbs[-1]
    v = b - a
    norm2 = float(v @ v)
    if norm2 < 1e-6:
        return None
    inner = thumbs[1:-1] - a
    alpha = inner @ v / norm2
    resid = np.linalg.norm(inner - alpha[:, None] * v[None, :], axis=1) / np.sqrt(norm2)
    return alpha, resid


def _is_transition(stats: FrameStats, s: int, e: int, residual: float, flat_std: float) -> str | None:
    fit = _blend_fit(stats.thumb[s : e + 1])
    if fit is None:
        return None
    alpha, resid = fit
    if resid.max() > residual or alpha.min() < -0.1 or alpha.max() > 1.1:
        return None
    if np.any(np.diff(alpha) < -0.1) or not np.any((alpha >= 0.15) & (alpha <= 0.85)):
        return None
    std_a, std_b = float(stats.luma_std[s]), float(stats.luma_std[e])
    if min(std_a, std_b) < flat_std:
        return "fade"
    # A blend of two unrelated pictures has less contrast than the straight line between theirs.
    line = (1 - np.clip(alpha, 0, 1)) * std_a + np.clip(alpha, 0, 1) * std_b
    if float((stats.luma_std[s + 1 : e] / np.maximum(line, 1e-6)).min()) > 0.93:
        return None  # no contrast dip: motion, not a blend of two pictures
    return "dissolve"


def find_transitions(
    indices: np.ndarray,
    stats: FrameStats,
    cuts: list[int],
    *,
    min_distance: float = 0.12,
    residual: float = 0.3,
    max_samples: int = 12,
    flat_std: float = 0.03,
) -> list[Transition]:
    """Fades and dissolves among the samples (see the module docstring).

    Args:
        indices: ``(T,)`` frame index of each sample.
        stats: the samples' `FrameStats`.
        cuts: hard cut frames; a transition never contains one.
        min_distance: descriptor distance between the two ends of a transition.
        residual: largest blend residual, relative to the distance between the ends' thumbnails.
        max_samples: longest transition in samples.
        flat_std: luma standard deviation below which a frame is black or flat.
    """
    indices = np.asarray(indices, dtype=np.int64)
    n = indices.shape[0]
    cut_arr = np.asarray(sorted(cuts), dtype=np.int64)
    dim = stats.luma_std < 3 * flat_std  # black, or nearly: the hold between a fade-out and a fade-in
    found: list[Transition] = []
    s = 0
    while s < n - 2:
        best = None
        for e in range(s + 2, min(n, s + max_samples + 2)):
            lo, hi = indices[s], indices[e]
            if np.any((cut_arr > lo) & (cut_arr <= hi)):
                break
            if float(stats.desc[s] @ stats.desc[e]) > 1 - min_distance:
                continue
            kind = _is_transition(stats, s, e, residual, flat_std)
            if kind is not None:
                best = (e, kind)
        if best is None:
            s += 1
            continue
        e, kind = best
        # The transition lies between the samples around its mid-blend ones (0.2 <= a <= 0.8): the
        # greedy window may reach into the shots on either side, where a stays near 0 or 1.
        alpha = _blend_fit(stats.thumb[s : e + 1])[0]
        mid = np.flatnonzero((alpha >= 0.2) & (alpha <= 0.8))
        s0, e0 = (s + int(mid[0]), s + int(mid[-1]) + 2) if mid.size else (s, e)
        t = Transition(kind, int(indices[s0]) + 1, int(indices[e0]) - 1, s0 + 1, e0 - 1)
        prev = found[-1] if found else None
        if prev is not None and prev.kind == "fade" == kind and dim[prev.last_sample + 1 : t.first_sample].all():
            prev.end_frame, prev.last_sample = t.end_frame, t.last_sample  # fade-out, black, fade-in: one fade
        else:
            found.append(t)
        s = e
    return found
