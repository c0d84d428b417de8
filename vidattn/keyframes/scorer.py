"""Training-free key-frame scores: parameter-free temporal self-attention times a quality term.

Inputs are the sampled frames' unit descriptors ``d_t`` (`descriptors.describe_frames`), their
shot numbers (`shots.detect_cuts`) and quality statistics. With ``H = window_s * sample_fps``
samples and ``N(t) = {u : 0 < |u - t| <= H, shot(u) = shot(t)}``:

    A_tu   = softmax_{u in N(t)} (d_t . d_u / tau)                 self-attention, Q = K = V = d, tau = 0.07
    rep_t  = sum_{u : t in N(u)} A_ut                              attention the frame *receives*
    rel_t  = rep_t / max_{u in N(t) + {t}} rep_u                   representativeness, in [0, 1]
    nov_t  = 1 - max_{u in N(t), u < t} d_t . d_u                  novelty against the recent past (0 at a shot start)
    nov'_t = nov_t / (nov_t + max(median(nov), 0.02))              in [0, 1)
    q_t    = q_sharp * q_expo * q_flat * q_trans                   quality, in [0, 1]
    s_t    = q_t * (rel_t + lambda * nov'_t) / (1 + lambda),  lambda = 0.5
    score  = s_t / max(max_u s_u, 0.2)                            relative to the video's best frame, but a
                                                                   poor best frame (all black) is not lifted to 1

A frame scores high when the other frames of its stretch attend to it (it looks like them: a
medoid of the stretch), or when it brings content the recent past did not show, and when it is a
good picture. The quality factors, with luma mean ``m``, luma std ``sigma``, Laplacian variance
``lap`` and consecutive descriptor distance ``delta``:

    q_sharp = min(1, lap_t / P90_{|u-t|<=H} lap_u) ** 0.5           sharper than its neighbourhood -> 1
    q_expo  = clip(m / 0.1, 0, 1) * clip((1 - m) / 0.1, 0, 1)      under/over-exposed -> 0
    q_flat  = clip((sigma - 0.02) / 0.06, 0, 1)                    black, white or uniform frame -> 0
    q_trans = 1 / (1 + (min(delta_t, delta_{t+1}) / (3 * max(median(delta), 0.01))) ** 2)
                                                                   unlike BOTH neighbours: mid-dissolve, flash -> 0

Those factors rank frames; `quality_floor` is the absolute bar a key frame must clear whatever its
rank: not black or white (luma mean under 0.04 or over 0.97), not flat (luma std under 0.04), not
blurred: Laplacian variance under 3e-4 at the 160 px descriptor size, and under 0.015 times the
luma variance (so a dim but sharp frame passes). Sharp frames of every clip in ../shared/realvids
measure at least 7.7e-4 and 0.018, the same frames under a 2 px Gaussian blur at most 2.5e-4 and
(but for a smooth optical-flow rendering) 0.012.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vidattn.keyframes.descriptors import FrameStats
from vidattn.keyframes.shots import consecutive_distances

__all__ = ["quality_terms", "quality_floor", "attention_terms", "free_scores", "TAU", "LAMBDA"]

TAU = 0.07
LAMBDA = 0.5
SCORE_FLOOR = 0.2  # scores are divided by max(best raw score, this)
BLACK, WHITE, FLAT_STD, BLUR, BLUR_RELATIVE = 0.04, 0.97, 0.04, 3e-4, 0.015  # the quality floor (module docstring)


def _banded(values: np.ndarray, radius: int, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """``(T, 2R+1)`` table of fn(values[t], values[t+o]) for offsets o in [-R, R]; NaN out of range."""
    n = values.shape[0]
    out = np.full((n, 2 * radius + 1), np.nan, dtype=np.float32)
    for k, o in enumerate(range(-radius, radius + 1)):
        lo, hi = max(0, -o), min(n, n - o)
        if lo < hi:
            out[lo:hi, k] = fn(values[lo:hi], values[lo + o : hi + o])
    return out


def quality_terms(stats: FrameStats, radius: int) -> dict[str, np.ndarray]:
    """The four quality factors and their product ``q`` (each ``(T,)`` in [0, 1])."""
    m, sigma, lap = stats.luma_mean, stats.luma_std, stats.sharpness
    n = m.shape[0]
    lap_band = _banded(lap, radius, lambda a, b: b)
    ref = np.maximum(np.nanquantile(lap_band, 0.9, axis=1), 1e-8)
    q_sharp = np.sqrt(np.clip(lap / ref, 0, 1))
    q_expo = np.clip(m / 0.1, 0, 1) * np.clip((1 - m) / 0.1, 0, 1)
    q_flat = np.clip((sigma - 0.02) / 0.06, 0, 1)
    delta = consecutive_distances(stats.desc)
    if n >= 2:
        nxt = np.concatenate([delta[1:], delta[-1:]])
        prev = delta.copy()
        prev[0] = nxt[0]
        nearest = np.minimum(prev, nxt)
        typical = max(float(np.median(delta[1:])), 0.01)
        q_trans = 1.0 / (1.0 + (nearest / (3 * typical)) ** 2)
    else:
        q_trans = np.ones(n, dtype=np.float32)
    q = q_sharp * q_expo * q_flat * q_trans
    terms = {"q": q, "q_sharp": q_sharp, "q_expo": q_expo, "q_flat": q_flat, "q_trans": q_trans}
    return {key: value.astype(np.float32) for key, value in terms.items()}


def quality_floor(stats: FrameStats) -> dict[str, np.ndarray]:
    """``(T,)`` bool masks of the frames below the absolute quality floor: ``black`` (or white), ``flat``,
    ``blurred``. Such a frame is never a key frame."""
    m = stats.luma_mean
    return {
        "black": (m < BLACK) | (m > WHITE),
        "flat": stats.luma_std < FLAT_STD,
        "blurred": (stats.sharpness < BLUR) & (stats.sharpness <= BLUR_RELATIVE * stats.luma_std**2),
    }


def attention_terms(desc: np.ndarray, shots: np.ndarray, radius: int, tau: float = TAU) -> dict[str, np.ndarray]:
    """Representativeness ``rel`` and novelty ``nov`` from local, shot-masked self-attention."""
    n = desc.shape[0]
    offsets = np.arange(-radius, radius + 1)
    sim = _banded(desc, radius, lambda a, b: (a * b).sum(1))  # (T, 2R+1)
    same = _banded(np.asarray(shots, dtype=np.float32), radius, lambda a, b: (a == b).astype(np.float32))
    valid = ~np.isnan(sim) & (same == 1) & (offsets != 0)[None, :]
    logits = np.where(valid, sim / tau, -np.inf)
    has_neigh = valid.any(1)
    attn = np.zeros_like(sim)
    if has_neigh.any():
        rows = logits[has_neigh]
        e = np.exp(rows - rows.max(1, keepdims=True))
        attn[has_neigh] = e / e.sum(1, keepdims=True)
    # Attention received: row t gives A[t, k] to u = t + offsets[k].
    rep = np.zeros(n, dtype=np.float32)
    for k, o in enumerate(offsets.tolist()):
        lo, hi = max(0, -o), min(n, n - o)
        if lo < hi:
            rep[lo + o : hi + o] += attn[lo:hi, k]
    rep_band = _banded(rep, radius, lambda a, b: b)
    rep_band = np.where(valid | (offsets == 0)[None, :], rep_band, 0.0)
    local_max = np.nan_to_num(rep_band, nan=0.0).max(1)
    rel = np.where(local_max > 0, rep / np.maximum(local_max, 1e-12), 1.0)  # alone in its shot -> 1
    past = valid & (offsets < 0)[None, :]
    has_past = past.any(1)
    best_past = np.where(past, sim, -2.0).max(1)
    nov = np.where(has_past, np.clip(1 - best_past, 0, 2), 0.0)
    with_past = nov[has_past]
    typical = max(float(np.median(with_past)) if with_past.size else 0.0, 0.02)
    nov_n = nov / (nov + typical)
    return {"rel": rel.astype(np.float32), "nov": nov_n.astype(np.float32), "attention": attn}


def free_scores(
    stats: FrameStats, shots: np.ndarray, sample_fps: float, window_s: float = 8.0
) -> dict[str, np.ndarray]:
    """Training-free score per sampled frame (the module formula), in [0, 1], 1 for a good video's best frame.

    Returns:
        dict with ``score`` and the terms ``q``, ``rel``, ``nov``, ``q_sharp``, ``q_expo``, ``q_flat``,
        ``q_trans`` (each ``(T,)``).
    """
    n = stats.desc.shape[0]
    if n == 0:
        return {"score": np.zeros(0, dtype=np.float32)}
    radius = max(1, int(round(window_s * sample_fps)))
    radius = min(radius, max(1, n - 1))
    quality = quality_terms(stats, radius)
    attn = attention_terms(stats.desc, shots, radius)
    raw = quality["q"] * (attn["rel"] + LAMBDA * attn["nov"]) / (1 + LAMBDA)
    # Keep an order among frames that all score 0 (an all-black video): a tiny tie-breaker.
    raw = raw + 1e-6 * (attn["rel"] + quality["q_sharp"])
    score = raw / max(float(raw.max()), SCORE_FLOOR)
    out = {"score": score.astype(np.float32), "rel": attn["rel"], "nov": attn["nov"]}
    out.update(quality)
    return out
