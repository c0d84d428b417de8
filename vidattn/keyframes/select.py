"""Key-frame selection from per-frame scores: shot-aware, gap-suppressed, de-duplicated.

Only *usable* samples are candidates (`eligible`: the absolute quality floor, outside transitions);
when fewer are usable than asked for, fewer come back.

1. **Shot pass.** Each shot's best frame is a candidate, shots taken by priority
   ``best score * (1 - exp(-duration / 2 s))`` (so a one-sample flash does not outrank a real shot);
   shots whose usable frames all have quality below `min_quality` are skipped. A shot with no frame
   `min_gap_s` from those chosen gets one at half the gap, then at any distance (a short shot between
   two others). A shot whose frames look like one already chosen (cosine similarity at least
   `shot_dup_similarity`: the same scene recurring) is passed over; a second round gives those shots
   a frame too if `k` still allows (a recurring shot is shown once unless `k` needs more). A third
   round lets a shot look like its neighbours' frames: the two sides of a jump cut are one scene
   from one camera, alike to any descriptor, but a cut was found between them, so each is a shot of
   its own (a scene recurring after other shots is still shown once).
2. **Fill pass.** The remaining frames in descending score order (greedy non-maximum suppression).
3. **Relaxed fill.** While fewer than `k` are chosen, the fill pass again with half the gap, then
   none: `k` frames come back whenever the video has `k` usable frames that are not near-duplicates.

A candidate is taken only if its score reaches `threshold` (when given), it lies at least
`min_gap_s` from every chosen frame, and its descriptor's cosine similarity to every chosen frame
is below `dup_similarity` (near-duplicate removal). Key frames are ranked by score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Selection", "select_keyframes"]


@dataclass
class Selection:
    """Chosen sample positions (into the sample sequence), best first, and why each was chosen."""

    positions: list[int]
    reasons: list[str]  # "shot" or "score"


def select_keyframes(
    scores: np.ndarray,
    times_s: np.ndarray,
    *,
    k: int | None = 8,
    threshold: float | None = None,
    min_gap_s: float = 1.0,
    shots: np.ndarray | None = None,
    desc: np.ndarray | None = None,
    quality: np.ndarray | None = None,
    dup_similarity: float = 0.97,
    min_quality: float = 0.1,
    eligible: np.ndarray | None = None,
    shot_dup_similarity: float = 0.9,
) -> Selection:
    """Choose key frames from per-sample scores.

    Args:
        scores: ``(T,)`` score per sampled frame.
        times_s: ``(T,)`` time of each sample in seconds.
        k: most key frames to return; None means no limit (use with `threshold`).
        threshold: smallest score a key frame may have.
        min_gap_s: minimum time between two key frames.
        shots: ``(T,)`` shot number per sample, for the shot pass; None skips it.
        desc: ``(T, D)`` unit descriptors, for near-duplicate removal; None skips it.
        quality: ``(T,)`` quality in [0, 1]; shots whose best frame is below `min_quality` are skipped.
        dup_similarity: cosine similarity at or above which two frames are duplicates.
        min_quality: shots whose best usable frame has lower quality are skipped by the shot pass.
        eligible: ``(T,)`` bool, the samples that may be chosen at all; None = all.
        shot_dup_similarity: in the first shot pass, similarity to a chosen frame at which a shot
            counts as a recurrence of a shot already shown.
    """
    scores = np.asarray(scores, dtype=np.float64)
    times_s = np.asarray(times_s, dtype=np.float64)
    desc = None if desc is None else np.asarray(desc, dtype=np.float32)
    n = int(scores.shape[0])
    limit = n if k is None else max(0, int(k))
    if n == 0 or limit == 0:
        return Selection([], [])
    chosen: list[int] = []
    reasons: list[str] = []
    usable = np.ones(n, dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    chosen_set: set[int] = set()
    gaps = (min_gap_s, min_gap_s / 2, 0.0) if k is not None else (min_gap_s,)  # relaxed only to reach k

    def acceptable(i: int, gap: float, dup: float, beside: bool = False) -> bool:
        if not usable[i] or i in chosen_set:
            return False
        if threshold is not None and float(scores[i]) < threshold:
            return False
        if any(abs(float(times_s[i] - times_s[j])) < gap for j in chosen):
            return False
        # beside: a frame may look like those of the neighbouring shots (the other side of a jump cut)
        others = [j for j in chosen if not (beside and abs(int(shot_of[j]) - int(shot_of[i])) == 1)]
        if desc is not None and others:
            sims = desc[others] @ desc[i]
            if float(sims.max()) >= dup:
                return False
        return True

    def take(order: list[int], reason: str, gap: float, dup: float, beside: bool = False) -> bool:
        for i in order:
            if len(chosen) >= limit:
                return False
            if acceptable(i, gap, dup, beside):
                chosen.append(i)
                chosen_set.add(i)
                reasons.append(reason)
                return True
        return False

    shot_of = np.zeros(n, dtype=np.int64) if shots is None else np.asarray(shots)
    if shots is not None and limit > 1:
        candidates = _shot_candidates(scores, times_s, shot_of, usable, quality, min_quality)
        candidates.sort(key=lambda c: -c[0])
        pending = [order for _, order in candidates]
        # A shot's frame may stand closer than the gap to its neighbours' (a short shot between two
        # others has no frame a full gap from both); a recurring scene waits for the second round, the
        # far side of a jump cut for the third.
        rounds = ((min(shot_dup_similarity, dup_similarity), False), (dup_similarity, False), (dup_similarity, True))
        for dup, beside in rounds:
            for gap in gaps:
                pending = [order for order in pending if not take(order, "shot", gap, dup, beside)]

    everything = _by_score(scores).tolist()
    for gap in gaps:
        for i in everything:  # one scan per gap: greedy non-maximum suppression
            if len(chosen) >= limit:
                break
            if acceptable(i, gap, dup_similarity):
                chosen.append(i)
                chosen_set.add(i)
                reasons.append("score")

    order = sorted(range(len(chosen)), key=lambda j: (-float(scores[chosen[j]]), chosen[j]))
    return Selection([chosen[j] for j in order], [reasons[j] for j in order])


def _shot_candidates(
    scores: np.ndarray,
    times_s: np.ndarray,
    shots: np.ndarray,
    usable: np.ndarray,
    quality: np.ndarray | None,
    min_quality: float,
) -> list[tuple[float, list[int]]]:
    """Per shot with a usable frame: (priority, its usable frames best first), unsorted."""
    candidates = []
    for shot in np.unique(shots).tolist():
        members = np.flatnonzero((shots == shot) & usable)
        if members.size == 0:
            continue
        order = members[_by_score(scores[members])]
        if quality is not None:  # a shot's black or flat frames never stand in for it
            order = order[np.asarray(quality)[order] >= min_quality]
        if order.size == 0:
            continue
        everyone = np.flatnonzero(shots == shot)
        duration = float(times_s[everyone[-1]] - times_s[everyone[0]]) + _sample_period(times_s)
        priority = float(scores[int(order[0])]) * (1 - math.exp(-duration / 2.0))
        candidates.append((priority, order.tolist()))
    return candidates


def _by_score(scores: np.ndarray) -> np.ndarray:
    """Positions by descending score, ties in time order."""
    return np.argsort(-scores, kind="stable")


def _sample_period(times_s: np.ndarray) -> float:
    if times_s.shape[0] < 2:
        return 1.0
    return float(np.median(np.diff(times_s)))
