"""`vidattn keyframes`: the frames that matter in a video, with per-frame scores, images and a plot.

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
5. **Write** (atomic: temp file + rename, only under ``out_dir``): ``<stem>/keyframes.json``, one JPEG
   per key frame (re-decoded exactly at ``image_size``; after the training-free pass the chosen frames
   are reference frames, so the decoder skips non-reference frames on its way to them),
   ``contact_sheet.png``, ``scores.png``, and optionally ``scores.csv``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import ctypes
import glob
import io
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidattn._io import atomic_write_bytes
from vidattn.data.decode import open_video
from vidattn.data.prefetch import PrefetchedFrames
from vidattn.errors import VidattnError, VideoDecodeError
from vidattn.keyframes.descriptors import FrameStats, describe_frames
from vidattn.keyframes.scorer import free_scores
from vidattn.keyframes.select import select_keyframes
from vidattn.keyframes.shots import detect_cuts, shot_ids
from vidattn.keyframes.stream import DEFAULT_SAMPLE_FPS, KeyframeOptions, decoder_backend, open_frames

if TYPE_CHECKING:
    from vidattn.keyframes.model import KeyframeModel

__all__ = [
    "KeyframeOptions",
    "score_video",
    "write_outputs",
    "run_keyframes",
    "expand_inputs",
    "safe_stem",
]

SCORER_FREE = "selfattn-free/1"
SCORER_MODEL = "model-temporal-attention/1"


def _fix_mmap_threshold() -> None:
    """Stop glibc's heap from growing with the video's length (Linux only; a no-op elsewhere).

    glibc raises its mmap threshold after a large block is freed (up to 32 MB), so afterwards the
    multi-MB per-batch buffers come from the heap, which fragments: RSS grew by about 1 MB per
    second of 1080p video (measured). A fixed threshold keeps big buffers in mmap, unmapped on free.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # musl or another libc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD


# ------------------------------------------------------------------------------------------------
# Scoring one video
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^\w.\-]+", flags=re.UNICODE)


def safe_stem(path: str | os.PathLike, limit: int = 100) -> str:
    """A folder name made from a video's file name: no separators, no leading dots, not empty."""
    stem = Path(os.fspath(path)).stem
    cleaned = _UNSAFE.sub("_", stem).strip("._-")
    return cleaned[:limit] or "video"


def _inside(child: Path, root: Path) -> bool:
    try:
        child.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _video_dir(out_dir: Path, stem: str, used: set[str]) -> Path:
    name, n = stem, 1

    def taken(candidate: str) -> bool:
        target = out_dir / candidate
        return candidate in used or target.is_symlink() or (target.exists() and not target.is_dir())

    while taken(name):
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    target = out_dir / name
    if not _inside(target, out_dir):  # defence in depth: safe_stem already removed separators and dots
        raise VidattnError(f"refusing to write outside {out_dir}: {target}")
    target.mkdir(parents=True, exist_ok=True)
    return target


def _jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _read_frames(video: str, indices: list[int], opts: KeyframeOptions, *, reference: bool) -> dict[int, np.ndarray]:
    """The key frames at ``image_size`` (exact frames), by index.

    ``reference``: the frames came from a pass that skipped non-reference frames (the training-free
    scorer's), so the decoder may skip them too on its way (exact either way; see `get_frames`).
    """
    backend = decoder_backend(opts.backend)
    with open_video(video, backend=backend, size=opts.image_size, timeout_s=opts.timeout_s) as reader:
        return dict(zip(indices, reader.get_frames(indices, numpy=True, skip_nonref=reference), strict=True))


def write_outputs(
    doc: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    options: KeyframeOptions | None = None,
    csv_out: bool = False,
    used: set[str] | None = None,
) -> Path:
    """Write JPEGs, contact sheet, score plot, ``keyframes.json`` (and ``scores.csv``) for one video.

    Fills the ``image``, ``contact_sheet`` and ``plot`` fields of `doc` (paths relative to the
    video's folder) and returns that folder, ``out_dir/<safe stem>``.
    """
    from vidattn.viz import contact_sheet, plot_keyframe_scores

    opts = options or KeyframeOptions()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = _video_dir(root, safe_stem(doc["video"]), used if used is not None else set())
    keys = doc["keyframes"]
    wanted = sorted({k["frame_index"] for k in keys})
    # Re-decode the key frames in a thread (FFmpeg releases the GIL) while the score plot renders here.
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidattn-keyframe-images") as pool:
        reference = doc["scorer"] == SCORER_FREE
        pending = pool.submit(_read_frames, doc["video"], wanted, opts, reference=reference) if wanted else None
        plot = plot_keyframe_scores(
            [s["time_s"] for s in doc["scores"]],
            [s["score"] for s in doc["scores"]],
            keyframes=[(k["time_s"], k["score"], k["rank"]) for k in keys],
            cuts=[c["time_s"] for c in doc.get("cuts", [])],
            title=f"{Path(doc['video']).name}  ({doc['scorer']})",
            threshold=opts.threshold,
        )
        images = pending.result() if pending is not None else {}
    written = set()
    for key in keys:
        name = f"keyframe_{key['rank']:02d}_f{key['frame_index']:07d}.jpg"
        atomic_write_bytes(folder / name, _jpeg(images[key["frame_index"]]))
        key["image"] = name
        written.add(name)
    for stale in folder.glob("keyframe_*.jpg"):  # from an earlier run with other settings
        if stale.name not in written:
            stale.unlink(missing_ok=True)

    by_time = sorted(keys, key=lambda k: k["frame_index"])
    sheet = contact_sheet(
        [images[k["frame_index"]] for k in by_time],
        [f"#{k['rank']}  {_clock(k['time_s'])}  {k['score']:.2f}" for k in by_time],
    )
    atomic_write_bytes(folder / "contact_sheet.png", _png(sheet))
    doc["contact_sheet"] = "contact_sheet.png"
    atomic_write_bytes(folder / "scores.png", plot)
    doc["plot"] = "scores.png"
    if csv_out:
        rank_of = {k["frame_index"]: k["rank"] for k in keys}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["frame_index", "time_s", "score", "keyframe_rank"])
        for s in doc["scores"]:
            writer.writerow([s["frame_index"], s["time_s"], s["score"], rank_of.get(s["frame_index"], "")])
        atomic_write_bytes(folder / "scores.csv", buf.getvalue().encode())
        doc["csv"] = "scores.csv"
    atomic_write_bytes(folder / "keyframes.json", (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())
    return folder


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _clock(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"


# ------------------------------------------------------------------------------------------------
# The job
# ------------------------------------------------------------------------------------------------
_GLOB_CHARS = re.compile(r"[*?\[]")


def expand_inputs(inputs: Sequence[str]) -> list[str]:
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


def run_keyframes(
    inputs: Sequence[str],
    *,
    options: KeyframeOptions | None = None,
    checkpoint: str | None = None,
    out_dir: str | None = None,
    as_json: bool = False,
    csv_out: bool = False,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = print,
    started: tuple[str, PrefetchedFrames] | None = None,
) -> int:
    """Key frames for every input; one error line per bad file, the others go on.

    `started` is ``(path, open_frames(path, options))`` when the caller already started decoding the
    first input (the CLI does, before importing this module); it is used for that path, or closed.

    Returns:
        The number of inputs that failed (the CLI exits non-zero when it is positive).
    """
    try:
        opts = options or KeyframeOptions()
        _fix_mmap_threshold()
        if out_dir is not None:
            from vidattn.viz import preload

            threading.Thread(target=preload, name="vidattn-preload", daemon=True).start()
        if csv_out and out_dir is None:
            raise VidattnError("--csv needs --out DIR")
        model = None
        if checkpoint:
            from vidattn.engine.distributed import resolve_device
            from vidattn.keyframes.model import KeyframeModel

            model = KeyframeModel.load(checkpoint, resolve_device(opts.device))
        if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
            raise VidattnError(f"--out {out_dir} exists and is not a directory")
        failures = 0
        used: set[str] = set()
        for path in expand_inputs(inputs):
            frames = None
            if started is not None and started[0] == path and model is None:
                frames, started = started[1], None
            try:
                doc = score_video(path, opts, model, frames)
                folder = write_outputs(doc, out_dir, options=opts, csv_out=csv_out, used=used) if out_dir else None
            except VidattnError as exc:
                failures += 1
                if as_json:
                    out(json.dumps({"video": str(path), "error": str(getattr(exc, "reason", exc))}, ensure_ascii=False))
                err(f"Error: {exc}" if isinstance(exc, VideoDecodeError) else f"Error: {path}: {exc}")
                continue
            except OSError as exc:  # disk full, permission denied on the output side
                failures += 1
                err(f"Error: {path}: {exc.strerror or exc}")
                continue
            if as_json:
                out(json.dumps(doc, ensure_ascii=False, allow_nan=False))
            else:
                where = f" -> {folder}" if folder is not None else ""
                out(f"{path}: {len(doc['keyframes'])} key frames, {doc['num_shots']} shots{where}")
                for key in doc["keyframes"]:
                    clock = _clock(key["time_s"])
                    out(f"  #{key['rank']:<3d} frame {key['frame_index']:>7d}  {clock:>10s}  {key['score']:.3f}")
        return failures
    finally:
        if started is not None:  # not consumed (an early error, or the path was not among the inputs)
            started[1].close()
