"""Key frames of one video: the frames that matter, with per-frame scores (`score_video`).

Pipeline, one sequential pass per video with bounded memory:

1. **Stream.** Decode in order at ``sample_fps`` (default 4) with the short side resized at decode
   time (``decode_size``, default 160 px), in a background thread a bounded queue ahead
   (`vidattn.keyframes.stream.open_frames`); without a model the decoder skips non-reference frames
   and each sample is the nearest frame that decodes. Each batch of frames becomes descriptors and
   quality statistics (`vidattn.keyframes.descriptors`) and is dropped. Memory is O(samples x 200
   floats), so a two-hour video costs a few tens of MB. The training-free path is numpy only (no
   torch import, ~2 s of CPU); the CLI decodes the first video in a child process while it starts.
2. **Cuts.** Hard cuts from spikes of the consecutive descriptor distance (`vidattn.keyframes.shots`).
3. **Score.** Without a model, the training-free scorer (`vidattn.keyframes.scorer`)::

       A_tu  = softmax_{u in N(t)} (d_t . d_u / 0.07)    N(t): samples within +-8 s, same shot, u != t
       rel_t = (sum_u A_ut) / local max                   how much its stretch attends to it (representative)
       nov_t = 1 - max_{u in N(t), u < t} d_t . d_u        how new it is against the recent past
       s_t   = q_t * (rel_t + 0.5 * nov_t / (nov_t + median nov)) / 1.5
       q_t   = q_sharp * q_expo * q_flat * q_trans        sharp, well exposed, not flat/black, not mid-transition

   With a checkpoint from `vidattn train`, overlapping windows of ``clip_len`` frames (sampled like
   training, every ``stride`` frames) go through the model in batches on the device; a frame's score
   is its temporal attention weight (``model.frame_weights``, times ``clip_len`` so uniform = 1),
   averaged over the windows covering it. Each window's predicted class goes into the JSON.
   Scores are divided by their maximum, so they lie in [0, 1] and ``threshold`` means the same for
   every video.
4. **Select** (`vidattn.keyframes.select`): one key frame per shot while ``k`` allows, then greedy
   top-k with a minimum time gap and near-duplicate removal; or every frame above a threshold.
5. **Write** (`vidattn.keyframes.outputs.write_outputs`; atomic: temp file + rename, only under
   ``out_dir``): ``<stem>/keyframes.json``, one JPEG per key frame (re-decoded exactly at
   ``image_size``; after the training-free pass the chosen frames are reference frames, so the decoder
   skips non-reference frames on its way to them), ``contact_sheet.png``, ``scores.png``, and
   optionally ``scores.csv``.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vidattn.data.prefetch import PrefetchedFrames
from vidattn.errors import VideoDecodeError
from vidattn.keyframes.descriptors import FrameStats, describe_frames
from vidattn.keyframes.scorer import free_scores
from vidattn.keyframes.select import select_keyframes
from vidattn.keyframes.shots import detect_cuts, shot_ids
from vidattn.keyframes.stream import DEFAULT_SAMPLE_FPS, KeyframeOptions, open_frames

if TYPE_CHECKING:
    from vidattn.keyframes.model import KeyframeModel

__all__ = ["SCORER_FREE", "SCORER_MODEL", "KeyframeOptions", "expand_globs", "score_video"]

SCORER_FREE = "selfattn-free/1"
SCORER_MODEL = "model-temporal-attention/1"


def _batches(it: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[tuple[list[int], list[np.ndarray]]]:
    idx: list[int] = []
    frames: list[np.ndarray] = []
    for i, frame in it:
        idx.append(i)
        frames.append(frame)
        if len(idx) >= size:
            yield idx, frames
            idx, frames = [], []
    if idx:
        yield idx, frames


def score_video(
    path: str | os.PathLike,
    options: KeyframeOptions | None = None,
    model: KeyframeModel | None = None,
    frames: PrefetchedFrames | None = None,
) -> dict[str, Any]:
    """Score and select the key frames of one video; returns the ``keyframes.json`` document.

    The document follows the output contract (``video, num_frames, fps, duration_s, scorer,
    keyframes, scores``) plus ``cuts``, ``shots``, ``sample_fps`` and, with a model, ``windows``
    and ``prediction``. ``image`` fields are None until `write_outputs` writes the JPEGs.

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
            open_frames(path, opts) if model is None else open_frames(path, opts, size=model.size, step=model.stride)
        )
    with frames:
        info = frames.info()
        native_fps = info.fps if info.fps > 0 else 25.0
        windows = None
        if model is not None:
            from vidattn.keyframes.model import WindowScorer

            windows = WindowScorer(model, opts.batch_size)
        indices: list[int] = []
        parts: list[FrameStats] = []
        for idx, arrays in _batches(frames, opts.batch_size):
            indices.extend(idx)
            parts.append(describe_frames(np.stack(arrays)))
            if windows is not None:
                for frame in arrays:
                    windows.push(frame)
        if windows is not None:
            windows.finish()
        info = frames.info()  # final now: num_frames is corrected if the file ended early
        num_frames, width, height, backend = info.num_frames, info.width, info.height, info.backend
    if not indices:
        raise VideoDecodeError(path, "no frames decode")

    stats = FrameStats.concat(parts)
    times = np.asarray(indices, dtype=np.float64) / native_fps
    cuts = detect_cuts(stats.desc)
    shots = shot_ids(len(indices), cuts)
    eff_fps = len(indices) / max(float(times[-1] - times[0]), 1e-9) if len(indices) > 1 else DEFAULT_SAMPLE_FPS
    terms = free_scores(stats, shots, sample_fps=eff_fps, window_s=opts.window_s)
    if windows is not None:
        raw = windows.frame_scores()
        scores = raw / max(float(raw.max()), 1e-12)
        quality = None
    else:
        scores, quality = terms["score"], terms["q"]

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
    )

    doc: dict[str, Any] = {
        "video": os.fspath(path),
        "num_frames": int(num_frames),
        "fps": round(float(native_fps), 6),
        "duration_s": round(num_frames / native_fps, 6),
        "scorer": SCORER_MODEL if model is not None else SCORER_FREE,
        "keyframes": [
            {
                "rank": r + 1,
                "frame_index": indices[p],
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
            for i, t, s in zip(indices, times.tolist(), scores.tolist(), strict=True)
        ],
        "cuts": [{"frame_index": indices[c], "time_s": round(float(times[c]), 6)} for c in cuts],
        "num_shots": int(shots.max()) + 1,
        "sample_fps": round(eff_fps, 6),
        "width": width,
        "height": height,
        "backend": backend,
    }
    if quality is not None:
        for entry, q in zip(doc["scores"], quality.tolist(), strict=True):
            entry["quality"] = round(float(q), 6)
    if model is not None:
        doc["checkpoint"] = model.checkpoint
        doc["model"] = model.name
        doc["windows"] = [
            {
                "start_frame": indices[a],
                "end_frame": indices[b],
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
    return doc


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
