"""Shot boundaries: hard cuts, frame-exact, from the sampled frames plus the decoder's look at the rest.

Two levels:

1. **Samples.** The cosine distance ``delta_t = 1 - d_t . d_{t-1}`` between consecutive sampled
   descriptors. Every gap with ``delta_t >= candidate`` is examined, also those below the distance
   that makes a cut by itself: at 4 fps a cut between two similar shots (a jump cut) hides there.
2. **Frames.** Between the two samples that straddle a candidate, the decoder has already decoded
   frames on its way (`probe.FrameProbe` recorded a luma step per decoded frame; where it could not,
   the few frames in between are decoded: `probe.luma_steps`). A hard cut is one step that stands
   far above the median step per frame around it (the neighbourhood's two largest steps left out, so
   a neighbouring cut, as around a short shot, does not hide it) and in its own gap; it is placed on
   that frame, and where the step spans frames the decoder skipped, those few are decoded to find
   the exact one.
   Motion, fades and dissolves spread the change over many frames and are not cuts; a step between
   a black or flat frame and a dim one is the end of a fade, not a cut (a cut to black from a
   picture of full contrast is a cut).

3. **Jump cuts.** A cut between two shots of one scene from one camera (the people moved, the room
   did not) changes the samples' descriptors and the luma signature hardly more than the motion
   around it. What gives it away is the probe's ``change``, the share of pixels that changed a lot
   since the previous decoded frame: a jump cut changes a few per cent of them at once, the frames
   around it almost none. Where the whole probe is given, every decoded frame whose change stands
   `jump_ratio` times above the median change on either side of it, and twice above each of them
   (the largest of each side left out), is a cut when
   the samples around it confirm that the picture stays changed (their distance stands above the
   distances around it) and neither side is black or flat.

Cuts closer than ``min_shot`` frames: the later one is dropped (PySceneDetect's ``min_scene_len``);
if the picture after it is the picture before the first one (a flash), both are dropped.

`detect_cuts` is the samples-only rule (PySceneDetect AdaptiveDetector-like) for sequences of
descriptors without a decoder behind them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vidattn.keyframes.probe import DenseSteps

__all__ = ["consecutive_distances", "detect_cuts", "find_cuts", "shot_ids", "shot_of"]


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
        ratio, margin: how far above the local median distance a cut must stand.
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
        local = float(np.median(neigh)) if neigh.size else 0.0  # median: a neighbouring cut does not count
        if value >= ratio * local + margin:
            cuts.append(t)
    return cuts


def shot_ids(num_samples: int, cuts: list[int]) -> np.ndarray:
    """``(T,)`` shot number of each sample given the cut positions."""
    ids = np.zeros(num_samples, dtype=np.int64)
    for c in cuts:
        ids[c:] += 1
    return ids


def shot_of(indices: np.ndarray, cuts: list[int]) -> np.ndarray:
    """``(T,)`` shot number of frames at `indices` given the cut frames (first frames of new shots)."""
    return np.searchsorted(np.asarray(sorted(cuts), dtype=np.int64), np.asarray(indices), side="right")


def find_cuts(
    indices: np.ndarray,
    desc: np.ndarray,
    dense: Callable[[int, int], DenseSteps],
    *,
    exact: Callable[[int, int], DenseSteps] | None = None,
    candidate: float = 0.06,
    min_distance: float = 0.15,
    step_min: float = 0.25,
    ratio: float = 2.0,
    strong_ratio: float = 6.0,
    margin: float = 0.05,
    flat_std: float = 0.03,
    min_shot: int = 0,
    probe: DenseSteps | None = None,
    jump_window: int = 12,
    jump_ratio: float = 6.0,
    jump_margin: float = 0.004,
) -> list[int]:
    """Frame-exact hard cuts: the first frame of each new shot (see the module docstring).

    Args:
        indices: ``(T,)`` frame index of each sample, increasing (every sample is a decoded frame).
        desc: ``(T, D)`` unit descriptors of the samples.
        dense: ``dense(lo, hi)`` -> `DenseSteps` of the decoded frames with ``lo < index <= hi``.
        exact: like `dense`, but decoding every frame; where the cut step spans frames the decoder
            skipped, they are decoded to place the cut on the exact frame. None: place it on the
            first decoded frame of the new shot.
        candidate: sample distance from which a gap is examined.
        min_distance: sample distance from which a dominant step is a cut; below it (down to
            `candidate`), and in the first and last gaps, only a step `strong_ratio` times its
            surroundings is.
        step_min: smallest frame step that can be a cut.
        ratio, margin: a cut's step is at least ``ratio * expected step + margin``, the expected step
            being the median step per frame around it (its two largest left out), or in its own gap if
            larger, times the frames it spans.
        flat_std: luma standard deviation below which a frame is black or flat.
        min_shot: fewest frames between two cuts.
        probe: every decoded frame's `DenseSteps` with ``change`` (the sampled pass's probe): also look
            for jump cuts there. None: only the gaps the samples point at are examined.
        jump_window: decoded frames on each side whose change is the jump cut's background.
        jump_ratio, jump_margin: a jump cut's change is at least ``jump_ratio * background + jump_margin``
            (the background is the larger median change of the decoded frames on each side, the largest
            of each side left out); it must also be twice every change around it but the largest of each
            side (a walker's step recurs, a jump does not).
    """
    indices = np.asarray(indices, dtype=np.int64)
    delta = consecutive_distances(desc)
    n = indices.shape[0]
    found: list[tuple[int, int]] = []  # (cut frame, sample position of the gap)
    for t in range(1, n):
        if delta[t] < candidate:
            continue
        lo, hi = int(indices[t - 1]), int(indices[t])
        gap = dense(lo, hi)
        if len(gap) == 0:
            continue
        span = np.diff(gap.index, prepend=lo).astype(np.float32)
        wide_lo = int(indices[max(t - 3, 0)])
        around = dense(wide_lo, int(indices[min(t + 2, n - 1)]))
        rate = np.sort(around.step / np.maximum(np.diff(around.index, prepend=wide_lo), 1))
        rate = rate[:-2] if rate.shape[0] > 6 else rate
        base = float(np.median(rate)) if rate.size else 0.0
        # The expected step comes from both sides of the gap; the first and last gaps have one side
        # only (at the end, a camera jerk in the last quarter second looked like a cut), so only a
        # step that stands out strongly is a cut there.
        need = ratio if delta[t] >= min_distance and 1 < t < n - 1 else strong_ratio
        j = int(np.argmax(gap.step / (need * base * span + margin)))
        others = np.delete(gap.step / span, j)
        if others.size >= 2:  # it must stand out in its own gap too: a fade's steps are all alike
            base = max(base, float(np.median(others)))
        step, width, frame = float(gap.step[j]), float(span[j]), int(gap.index[j])
        std_at, std_prev = float(gap.std[j]), _std_before(dense, gap, j, lo)
        if width > 1 and exact is not None and step >= max(step_min, need * base + margin):
            # The decoder skipped frames inside this step (which ones depends on the encoder's choice of
            # non-reference pictures): decide on the frame steps, each against one frame's expected
            # change, not on a step whose threshold grows with the frames it happens to span.
            fine = exact(frame - int(width), frame)
            if len(fine):
                f = int(np.argmax(fine.step))
                step, width, frame, std_at = float(fine.step[f]), 1.0, int(fine.index[f]), float(fine.std[f])
                if f > 0:  # else the frame before is the one before the step, as already read
                    std_prev = float(fine.std[f - 1])
        if step < step_min or step < need * base * width + margin:
            continue
        sides = sorted((std_at, std_prev))
        if sides[0] < flat_std and sides[1] < 3 * flat_std:
            continue  # the last step of a fade into black (or the first out of it), not a cut to black
        found.append((frame, t))
    if probe is not None and probe.change is not None:
        seen = {t for _, t in found}
        found += _jump_cuts(probe, delta, indices, exact, seen, jump_window, jump_ratio, jump_margin, flat_std)
        found.sort()
    return _min_shot(found, indices, desc, min_shot, candidate)


def _jump_cuts(
    probe: DenseSteps,
    delta: np.ndarray,
    indices: np.ndarray,
    exact: Callable[[int, int], DenseSteps] | None,
    seen: set[int],
    window: int,
    ratio: float,
    margin: float,
    flat_std: float,
) -> list[tuple[int, int]]:
    """(frame, sample gap) where a jump cut starts: an isolated burst of changed pixels that the samples
    see persist, in a gap not in `seen` (those already have their cut)."""
    change, index = probe.change, probe.index
    out: list[tuple[int, int]] = []
    # Only local maxima above the margin can pass; the median around each is then cheap to take.
    peaks = np.flatnonzero(change >= margin)
    for p in peaks.tolist():
        if p == 0 or change[p] < change[max(p - 2, 0) : p + 3].max():
            continue
        # Quiet on both sides: motion that starts (or stops) here has a busy side. The largest change of
        # each side is left out, so a neighbouring cut (a short shot) does not hide this one.
        near = (change[max(p - window, 1) : p], change[p + 1 : p + 1 + window])
        if min(side.size for side in near) < 4:
            continue  # too close to either end to tell a cut from motion that starts or stops
        rest = [np.sort(side)[:-1] for side in near]
        background = max(float(np.median(side)) for side in rest)
        if change[p] < ratio * background + margin:
            continue
        if change[p] < 2 * max(float(side[-1]) for side in rest):
            continue  # and twice every other change around it: a walker's step recurs, a jump does not
        if min(float(probe.std[p]), float(probe.std[p - 1])) < flat_std:
            continue  # normalised luma of a black or flat frame is noise
        t = int(np.searchsorted(indices, index[p]))  # its gap (indices[t - 1], indices[t]]
        if not 0 < t < delta.shape[0] or t in seen:
            continue
        # The samples around it: does the picture stay changed?
        around = np.concatenate([delta[max(t - 3, 1) : t], delta[t + 1 : t + 4]])
        if not delta[t] > 2 * float(np.median(around) if around.size else 0.0):
            continue
        frame = int(index[p])
        width = frame - int(index[p - 1])
        if width > 1 and exact is not None:  # the decoder skipped frames inside: find the one it happened on
            fine = exact(frame - width, frame)
            if len(fine) and fine.change is not None:
                frame = int(fine.index[int(np.argmax(fine.change))])
        seen.add(t)
        out.append((frame, t))
    return out


def _std_before(dense: Callable[[int, int], DenseSteps], gap: DenseSteps, j: int, lo: int) -> float:
    """Luma std of the decoded frame before ``gap.index[j]`` (the sample at `lo` if it is the first)."""
    if j > 0:
        return float(gap.std[j - 1])
    prev = dense(lo - 1, lo)
    return float(prev.std[-1]) if len(prev) else 1.0


def _min_shot(
    found: list[tuple[int, int]], indices: np.ndarray, desc: np.ndarray, min_shot: int, candidate: float
) -> list[int]:
    """Apply the minimum shot length; a too-short shot that returns to the picture before it is a flash."""
    cuts: list[int] = []
    last_t = -1
    k = 0
    while k < len(found):
        frame, t = found[k]
        if cuts and frame - cuts[-1] < min_shot:
            before, after = max(last_t - 1, 0), t
            if float(desc[before] @ desc[after]) >= 1 - candidate:
                cuts.pop()  # a flash: the shot did not change
            k += 1
            continue
        cuts.append(frame)
        last_t = t
        k += 1
    return cuts
