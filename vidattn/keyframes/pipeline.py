"""Key frames of one video: the frames that matter, with per-frame scores (`score_video`).

Pipeline, one sequential pass per video with bounded memory:

1. **Stream.** Decode in order at ``sample_fps`` (default 4) with the short side resized at decode
   time (``decode_size``, default 160 px), in a background thread a bounded queue ahead
   (`vidattn.keyframes.stream.open_frames`); without a model the decoder skips non-reference frames
   and each sample is the nearest frame that decodes. Each batch of frames becomes descriptors and
   quality statistics (`vidattn.keyframes.descriptors`) and is dropped. Memory is O(samples x 200
   floats), so a two-hour video costs a few tens of MB. The training-free path is numpy only (no
   torch import, ~2 s of CPU); the CLI decodes the first video in a child process while it starts.
   On its way the decoder shows every frame it decodes to a `probe.FrameProbe` (16 bytes a frame).
   A long file is read by two decoders at once, the second from a key frame near the middle
   (`vidattn.data.halves`, ``decoders``): a decoder that skips non-reference frames decodes a chain
   of frames and leaves cores idle. Samples, descriptors and the probe are joined at the key frame
   into exactly what one decoder gives.
2. **Cuts and transitions.** Frame-exact hard cuts (`vidattn.keyframes.shots.find_cuts`): gaps between
   samples whose descriptors differ are examined frame by frame through the probe's steps, and only
   where the cut falls on frames the decoder skipped are those few decoded. Fades and dissolves
   (`vidattn.keyframes.transitions`) are blends of the samples around them; they are not cuts. Times
   are the frames' presentation times (`VideoReader.frame_times`: right on variable frame rate).
3. **Score.** Without a model, the training-free scorer (`vidattn.keyframes.scorer`)::

       A_tu  = softmax_{u in N(t)} (d_t . d_u / 0.07)    N(t): samples within +-8 s, same shot, u != t
       rel_t = (sum_u A_ut) / local max                   how much its stretch attends to it (representative)
       nov_t = 1 - max_{u in N(t), u < t} d_t . d_u        how new it is against the recent past
       s_t   = q_t * (rel_t + 0.5 * nov_t / (nov_t + median nov)) / 1.5
       q_t   = q_sharp * q_expo * q_flat * q_trans        sharp, well exposed, not flat/black, not mid-transition

   With a checkpoint from `vidattn train`, every frame is read and goes through the model in the
   views it was evaluated with, each every ``stride``-th frame over the whole video, a frame apart
   (for a model trained on dense clips: overlapping windows of ``clip_len`` on every ``stride``-th
   frame); a frame's score is its evidence for the predicted class
   (`vidattn.keyframes.model.frame_evidence`: gradient x input, through the temporal attention) as
   the views agree on it (`WindowScorer.consensus_scores`). A difference model's evidence belongs to
   the change since the previous sample and is placed midway. Each view's predicted class goes into
   the JSON.
   Scores lie in [0, 1]: divided by the best frame's (by at least 0.2 for the training-free scorer,
   so an all-black video is not lifted to 1), ``threshold`` means the same for every video.
4. **Select** (`vidattn.keyframes.select`): among usable samples only (above the absolute quality
   floor, outside transitions), one key frame per shot while ``k`` allows, then greedy top-k with a
   minimum time gap and near-duplicate removal, relaxing the gap until ``k`` are found; or every
   frame above a threshold. ``selection`` in the document says what was excluded and why.
5. **Write** (`vidattn.keyframes.outputs.write_outputs`; atomic: temp file + rename, only under
   ``out_dir``): ``<stem>/keyframes.json``, one JPEG per key frame (re-decoded exactly at
   ``image_size``; after the training-free pass the chosen frames are reference frames, so the decoder
   skips non-reference frames on its way to them), ``contact_sheet.png``, ``scores.png``, and
   optionally ``scores.csv``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vidattn.data.decode import VideoInfo, VideoReader, open_video
from vidattn.data.prefetch import PrefetchedFrames
from vidattn.errors import VideoDecodeError
from vidattn.keyframes.descriptors import FrameStats, describe_frames
from vidattn.keyframes.probe import DenseSteps, luma_steps
from vidattn.keyframes.scorer import free_scores, quality_floor
from vidattn.keyframes.select import Selection, select_keyframes
from vidattn.keyframes.shots import detect_cuts, find_cuts, shot_of
from vidattn.keyframes.stream import DEFAULT_SAMPLE_FPS, KeyframeOptions, open_frames
from vidattn.keyframes.transitions import Transition, find_transitions

if TYPE_CHECKING:
    from vidattn.keyframes.model import KeyframeModel, WindowScorer

__all__ = ["SCORER_FREE", "SCORER_MODEL", "KeyframeOptions", "expand_globs", "score_video"]

SCORER_FREE = "selfattn-free/1"
# The model scorer's name changes with its method: /1 was the temporal attention weights, /2 each frame's
# evidence for the predicted class (`vidattn.keyframes.model.frame_evidence`) in one view, /3 that evidence as
# the views a frame apart agree on it (`WindowScorer.consensus_scores`).
SCORER_MODEL = "model-evidence/3"


@dataclass
class _Pass:
    """What the sampled pass leaves: sample indices and statistics, the decoder's look at the frames
    in between (None where no probe ran), the final video info, and a model's window scores."""

    indices: np.ndarray
    stats: FrameStats
    dense: DenseSteps | None
    info: VideoInfo
    windows: WindowScorer | None


class _Described:
    """The samples of one part of the stream (`PrefetchedFrames.parts`), described a batch at a time."""

    def __init__(self, batch_size: int, windows: WindowScorer | None) -> None:
        self.batch_size, self.windows = batch_size, windows
        self.indices: list[int] = []
        self.stats: list[FrameStats] = []
        self._idx: list[int] = []
        self._frames: list[np.ndarray] = []

    def add(self, index: int, frame: np.ndarray) -> None:
        self._idx.append(index)
        self._frames.append(frame)
        if len(self._idx) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._idx:
            return
        self.indices.extend(self._idx)
        # Each frame's descriptor is computed on its own row, so batches that start elsewhere give the same values.
        self.stats.append(describe_frames(np.stack(self._frames)))
        if self.windows is not None:
            for frame in self._frames:
                self.windows.push(frame)
        self._idx, self._frames = [], []


def _sample_pass(frames: PrefetchedFrames, opts: KeyframeOptions, model: KeyframeModel | None) -> _Pass:
    with frames:
        frames.info()
        windows = None
        if model is not None:
            from vidattn.keyframes.model import WindowScorer

            # Every frame pushed (no --sample-fps): the scorer's views take every `stride`-th of them.
            every = model.stride // model.read_step if opts.sample_fps is None else 1
            windows = WindowScorer(model, opts.batch_size, every=every)
        # Part 1 is the later half of a file read by two decoders at once (never with a model: no split there).
        parts = (_Described(opts.batch_size, windows), _Described(opts.batch_size, None))
        for part, index, frame in frames.parts():
            parts[part].add(index, frame)
        for described in parts:
            described.flush()
        if windows is not None:
            windows.finish()
        info = frames.info()  # final now: num_frames is corrected if the file ended early
        dense = frames.probe_result if isinstance(frames.probe_result, DenseSteps) else None
        first, later = parts
        indices = np.asarray(first.indices, dtype=np.int64)
        stats = FrameStats.concat(first.stats)
        if frames.split_held and later.indices:
            # One decoder's samples: the first half's, then the later half's past them (both may pick the key
            # frame where the halves meet).
            more = np.asarray(later.indices, dtype=np.int64)
            keep = more > indices[-1] if indices.size else np.ones(more.shape, dtype=bool)
            rest = FrameStats.concat(later.stats)
            indices = np.concatenate([indices, more[keep]])
            stats = FrameStats.concat([stats, rest.rows(keep)])
    return _Pass(indices, stats, dense, info, windows)


class _Frames:
    """Frame-level facts after the sampled pass: presentation times, and `DenseSteps` between samples.

    Steps and times come from the probe of the sampled pass when it ran (the time of a frame the
    decoder skipped is interpolated between its decoded neighbours). Otherwise, and for the few frames
    a cut must be placed among, frames are decoded here at the descriptor size by one PyAV reader,
    opened on first need, which also reads the timestamps. Without a reader (PyAV cannot open the
    source), times are index / fps and there are no steps beyond the probe's.
    """

    def __init__(self, source: Any, opts: KeyframeOptions, dense: DenseSteps | None, fps: float) -> None:
        self.source, self.opts, self.fps, self.probe = source, opts, fps, dense
        self._reader: VideoReader | None = None
        self._opened = False
        self._rows: dict[int, tuple[float, float, float, float]] = {}  # index -> step, mean, std, change

    @property
    def reader(self) -> VideoReader | None:
        """The PyAV reader at the descriptor size (None if the source does not open)."""
        if not self._opened:
            self._opened = True
            with contextlib.suppress(VideoDecodeError):
                size, timeout = self.opts.decode_size, self.opts.timeout_s
                self._reader = open_video(self.source, backend="pyav", size=size, timeout_s=timeout)
        return self._reader

    def times(self, indices: Sequence[int]) -> np.ndarray:
        """Presentation time of each frame (from its timestamp where the file has reliable ones)."""
        if self.probe is not None and self.probe.time is not None:
            return np.interp(np.asarray(indices, dtype=np.float64), self.probe.index, self.probe.time)
        if self.reader is not None:
            with contextlib.suppress(VideoDecodeError):
                return self.reader.frame_times(indices)
        return np.asarray(indices, dtype=np.float64) / self.fps

    @property
    def has_steps(self) -> bool:
        """Whether frame steps are available (from the probe, or by decoding)."""
        return self.probe is not None or self.reader is not None

    def __call__(self, lo: int, hi: int) -> DenseSteps:
        """`DenseSteps` of the frames ``lo < index <= hi``: the probe's, else decoded (`exact`)."""
        if self.probe is not None:
            return self.probe.between(lo, hi)
        return self.exact(lo, hi)

    def exact(self, lo: int, hi: int) -> DenseSteps:
        """`DenseSteps` of every frame ``lo < index <= hi``, decoded here."""
        reader = self.reader
        if reader is None:
            empty = np.zeros(0, dtype=np.float32)
            return DenseSteps(np.zeros(0, dtype=np.int64), empty, empty, empty, None, empty)
        lo, hi = max(lo, 0), min(hi, reader.num_frames - 1)
        missing = [i for i in range(lo + 1, hi + 1) if i not in self._rows]
        if missing:
            want = list(range(missing[0] - 1 if missing[0] > 0 else 0, missing[-1] + 1))
            steps = luma_steps(want, reader.get_frames(want, numpy=True))
            cols = (steps.index.tolist(), steps.step, steps.mean, steps.std, steps.change)
            for i, st, m, sd, ch in zip(*cols, strict=True):
                if i != want[0] or i == 0:
                    self._rows.setdefault(i, (float(st), float(m), float(sd), float(ch)))
        idx = [i for i in range(lo + 1, hi + 1) if i in self._rows]
        rows = np.asarray([self._rows[i] for i in idx], dtype=np.float32).reshape(-1, 4)
        return DenseSteps(np.asarray(idx, dtype=np.int64), rows[:, 0], rows[:, 1], rows[:, 2], None, rows[:, 3])

    def close(self) -> None:
        """Release the reader, if one was opened."""
        if self._reader is not None:
            self._reader.close()


def _usable(stats: FrameStats, indices: np.ndarray, transitions: list[Transition]) -> tuple[np.ndarray, dict]:
    """Samples that may be key frames, and how many were excluded for each reason."""
    floor = quality_floor(stats)
    inside = np.zeros(indices.shape[0], dtype=bool)
    for t in transitions:  # and the samples just outside: they may be a little blended already
        inside[max(t.first_sample - 1, 0) : t.last_sample + 2] = True
    floor["in_transition"] = inside
    bad = np.zeros(indices.shape[0], dtype=bool)
    excluded = {}
    for reason, mask in floor.items():
        excluded[reason] = int((mask & ~bad).sum())  # each sample counted once, under its first reason
        bad |= mask
    return ~bad, excluded


def _boundaries(
    path: Any, opts: KeyframeOptions, sampled: _Pass, native_fps: float
) -> tuple[list[int], list[Transition], np.ndarray, np.ndarray, np.ndarray]:
    """Cuts, transitions, and the presentation times of the samples, the cuts and the transitions' ends."""
    indices, stats = sampled.indices, sampled.stats
    facts = _Frames(path, opts, sampled.dense, native_fps)
    try:
        times = facts.times(indices)
        if facts.has_steps:
            min_shot = int(round(opts.min_shot_s * native_fps))
            cuts = find_cuts(
                indices,
                stats.desc,
                facts,
                exact=facts.exact,
                min_shot=min_shot,
                probe=facts.probe,
            )
        else:
            cuts = [int(indices[c]) for c in detect_cuts(stats.desc)]
        transitions = find_transitions(indices, stats, cuts)
        bounds = [f for t in transitions for f in (t.start_frame, t.end_frame)]
        event_times = facts.times(cuts + bounds) if cuts or bounds else np.zeros(0)
    finally:
        facts.close()
    return cuts, transitions, times, event_times[: len(cuts)], event_times[len(cuts) :].reshape(-1, 2)


def score_video(
    path: str | os.PathLike,
    options: KeyframeOptions | None = None,
    model: KeyframeModel | None = None,
    frames: PrefetchedFrames | None = None,
) -> dict[str, Any]:
    """Score and select the key frames of one video; returns the ``keyframes.json`` document.

    The document follows the output contract (``video, num_frames, fps, duration_s, scorer,
    keyframes, scores, cuts, transitions``) plus ``num_shots``, ``sample_fps``, ``selection`` (how
    many frames were asked for, returned and excluded, and why) and, with a model, ``windows`` and
    ``prediction``. ``image`` fields are None until `write_outputs` writes the JPEGs.

    Args:
        path: the video.
        options: settings (the CLI's defaults when None).
        model: a trained model to score with; None = the training-free scorer.
        frames: the stream from `open_frames(path, options)` if the caller already started it
            (it is consumed and closed); by default the video is opened here.

    Raises:
        VideoDecodeError: the file cannot be opened or decoded.
    """
    opts = options or KeyframeOptions()
    if frames is None:
        frames = (
            open_frames(path, opts) if model is None else open_frames(path, opts, size=model.size, step=model.read_step)
        )
    sampled = _sample_pass(frames, opts, model)
    if sampled.indices.size == 0:
        raise VideoDecodeError(path, "no frames decode")
    info, indices, stats = sampled.info, sampled.indices, sampled.stats
    native_fps = info.fps if info.fps > 0 else 25.0
    cuts, transitions, times, cut_times, bound_times = _boundaries(path, opts, sampled, native_fps)
    shots = shot_of(indices, sorted(cuts + [t.end_frame + 1 for t in transitions]))  # a transition ends a shot too
    eff_fps = len(indices) / max(float(times[-1] - times[0]), 1e-9) if len(indices) > 1 else DEFAULT_SAMPLE_FPS
    terms = free_scores(stats, shots, sample_fps=eff_fps, window_s=opts.window_s)
    if sampled.windows is not None:
        raw = sampled.windows.consensus_scores()
        scores = raw / max(float(raw.max()), 1e-12)
        quality = None
    else:
        scores, quality = terms["score"], terms["q"]
    usable, excluded = _usable(stats, indices, transitions)

    k = opts.k if (opts.k is not None or opts.threshold is None) else None
    selection = select_keyframes(
        scores,
        times,
        k=k,
        threshold=opts.threshold,
        min_gap_s=opts.min_gap_s,
        shots=shots,
        desc=stats.desc,
        quality=quality,
        dup_similarity=opts.dup_similarity,
        eligible=usable,
    )
    shown, shown_times = indices, times
    if model is not None:
        from vidattn.keyframes.model import evidence_frame_offsets

        shown = indices - evidence_frame_offsets(indices, model.input_mode)
        shown_times = np.interp(shown, indices, times) if len(indices) > 1 else times
    doc = _document(path, info, native_fps, shown, shown_times, scores, shots, selection, model)
    doc["cuts"] = [{"frame_index": c, "time_s": round(float(t), 6)} for c, t in zip(cuts, cut_times, strict=True)]
    doc["transitions"] = [
        {
            "kind": t.kind,
            "start_frame": t.start_frame,
            "end_frame": t.end_frame,
            "start_s": round(float(a), 6),
            "end_s": round(float(b), 6),
        }
        for t, (a, b) in zip(transitions, bound_times, strict=True)
    ]
    doc["num_shots"] = int(shots.max()) + 1
    doc["sample_fps"] = round(eff_fps, 6)
    doc["selection"] = _selection_summary(k, len(selection.positions), int(usable.sum()), excluded)
    if quality is not None:
        for entry, q in zip(doc["scores"], quality.tolist(), strict=True):
            entry["quality"] = round(float(q), 6)
    if model is not None:
        _add_model_fields(doc, model, sampled.windows, indices, times)
    return doc


def _selection_summary(k: int | None, returned: int, usable: int, excluded: dict[str, int]) -> dict[str, Any]:
    """``selection`` of the document: asked, returned, usable samples, exclusions, and why fewer came back."""
    out: dict[str, Any] = {"requested": k, "returned": returned, "usable_samples": usable, "excluded": excluded}
    if k is not None and returned < k:
        reasons = [name.replace("_", " ") for name, count in excluded.items() if count]
        why = ", ".join(reasons) if reasons else "none excluded"
        out["note"] = (
            f"only {returned} of {k} key frames: the other sampled frames are too close in time, near-duplicates, "
            f"or unusable ({why})"
        )
    return out


def _document(
    path: str | os.PathLike,
    info: VideoInfo,
    native_fps: float,
    indices: np.ndarray,
    times: np.ndarray,
    scores: np.ndarray,
    shots: np.ndarray,
    selection: Selection,
    model: KeyframeModel | None,
) -> dict[str, Any]:
    """The contract part of ``keyframes.json``."""
    idx = indices.tolist()
    return {
        "video": os.fspath(path),
        "num_frames": int(info.num_frames),
        "fps": round(float(native_fps), 6),
        "duration_s": round(info.num_frames / native_fps, 6),
        "scorer": SCORER_MODEL if model is not None else SCORER_FREE,
        "keyframes": [
            {
                "rank": r + 1,
                "frame_index": idx[p],
                "time_s": round(float(times[p]), 6),
                "score": round(float(scores[p]), 6),
                "image": None,
                "shot": int(shots[p]),
                "reason": reason,
            }
            for r, (p, reason) in enumerate(zip(selection.positions, selection.reasons, strict=True))
        ],
        "scores": [
            {"frame_index": i, "time_s": round(float(t), 6), "score": round(float(s), 6)}
            for i, t, s in zip(idx, times.tolist(), scores.tolist(), strict=True)
        ],
        "width": info.width,
        "height": info.height,
        "backend": info.backend,
    }


def _add_model_fields(
    doc: dict[str, Any], model: KeyframeModel, windows: WindowScorer, indices: np.ndarray, times: np.ndarray
) -> None:
    """``checkpoint``, ``model``, ``windows`` (class per window) and the majority ``prediction``."""
    idx = indices.tolist()
    doc["checkpoint"] = model.checkpoint
    doc["model"] = model.name
    doc["windows"] = [
        {
            "start_frame": idx[a],
            "end_frame": idx[b],
            "start_s": round(float(times[a]), 6),
            "end_s": round(float(times[b]), 6),
            "label": model.classes[c] if c < len(model.classes) else str(c),
            "prob": round(prob, 6),
        }
        for a, b, c, prob in windows.windows
    ]
    votes: dict[str, float] = {}
    for w in doc["windows"]:
        votes[w["label"]] = votes.get(w["label"], 0.0) + w["prob"]
    best = max(votes, key=votes.get)
    doc["prediction"] = {"label": best, "windows": sum(1 for w in doc["windows"] if w["label"] == best)}


_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_globs(inputs: Sequence[str]) -> list[str]:
    """Paths as given; a pattern that is not an existing file is expanded as a glob (sorted).

    A pattern that matches nothing is kept, so the user gets an error line for it.
    """
    out: list[str] = []
    for item in inputs:
        if not os.path.exists(item) and _GLOB_CHARS.search(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            out.extend(matches or [item])
        else:
            out.append(item)
    return out
