#!/usr/bin/env python
"""Cut detection of `vidattn keyframes` against known cuts, next to PySceneDetect, in one run.

Builds (once, cached under ``--cache``) edited videos by concatenating different real clips from
``../shared/realvids`` (never copied into the project): shots from a third of a second to several
seconds, jump cuts (the same clip, later), fades through black and dissolves, at several sizes and
frame rates, with every cut frame known exactly. Also fade-only videos in the style of
PySceneDetect's ``fades.mp4`` (fade to black and back), where any reported cut is false.

For each detector it reports precision / recall / F1 of the cuts at +-2 frames (a detection inside a
fade or dissolve is neither right nor wrong on the edited videos: those are transitions, not cuts),
the cuts it reports on the fade videos, and its wall time. For vidattn it also reports, with
``-k`` = the number of true shots, the share of shots of at least 1 s that get a key frame, and key
frames that are black/flat or inside a transition.

Detectors: vidattn (training-free, default options), PySceneDetect ContentDetector,
AdaptiveDetector and HashDetector with their defaults (``pip install scenedetect``; OpenCV needed).

Example:
    python scripts/eval_cuts.py --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TOLERANCE = 2

# Source clips (relative to realvids/), each long enough for a few shots. demo.mp4 has cuts of its own
# at frames 206 and 268 (all four detectors agree, and so does the eye): only its first shot is used.
SOURCES = [
    "mmaction2/demo.mp4:0:206",
    "mmaction2/test.mp4",
    "mmaction2/test_video_structuralize.mp4",
    "tiny-ucf101/abseiling_k400.mp4",
    "decord/flipping_a_pancake.mkv",
    "pysot/bag.avi",
    "tiny-ucf101/v_Basketball_g01_c01.avi",
    "mmaction2/test.avi",
    "mmaction2/S001C001P001R001A001_rgb.avi",
    "kinetics-i3d/v_CricketShot_g04_c01_rgb.gif",
]
# (width, height, fps, number of shots, joins other than cuts, seed): varied sizes, rates and lengths.
EDITED = [
    (320, 240, 25, 9, {"jump": 1}, 1),
    (426, 240, 30, 10, {"fade": 1}, 2),
    (640, 360, 30, 8, {"dissolve": 1}, 3),
    (854, 480, 25, 7, {"fade": 1, "dissolve": 1}, 4),
    (480, 360, 30, 12, {"jump": 1, "dissolve": 1}, 5),
    (640, 480, 25, 9, {"fade": 1, "jump": 1}, 6),
]
# Fade-only videos: (width, height, fps, fade frames, black hold frames, same clip after the fade).
FADES = [(640, 360, 30, 30, 15, False), (426, 240, 25, 12, 0, False), (480, 360, 30, 60, 20, True)]


def _load_clip(realvids: Path, source: str, width: int, height: int) -> list[np.ndarray]:
    """The frames of `source` (``path[:start:end]``), centre-cropped to the aspect and resized to ``width x height``."""
    import av
    from PIL import Image

    name, *span = source.split(":")
    start, end = (int(span[0]), int(span[1])) if span else (0, None)
    frames = []
    with av.open(str(realvids / name)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k < start or (end is not None and k >= end):
                continue
            image = frame.to_image()
            scale = max(width / image.width, height / image.height)
            w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
            image = image.resize((w, h), Image.BILINEAR)
            x, y = (w - width) // 2, (h - height) // 2
            frames.append(np.asarray(image.crop((x, y, x + width, y + height)).convert("RGB")))
    return frames


def _shot_lengths(rng: np.random.Generator, n: int, fps: int) -> list[int]:
    """Shot lengths: about a third under 1 s (down to 0.35 s), the rest 1-5 s."""
    out = []
    for i in range(n):
        if i % 3 == 1:
            out.append(int(rng.integers(int(0.35 * fps), fps)))
        else:
            out.append(int(rng.integers(fps, 5 * fps)))
    return out


def build_edited(cache: Path, realvids: Path, spec: tuple) -> tuple[Path, dict]:
    """One edited video (cached) and its truth."""
    from vidattn.keyframes.edits import Join, compose_edit

    width, height, fps, n_shots, extra, seed = spec
    path = cache / f"edited_{seed}_{width}x{height}_{fps}.mp4"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    rng = np.random.default_rng(seed)
    lengths = _shot_lengths(rng, n_shots, fps)
    kinds = ["cut"] * (n_shots - 1)
    slots = [i for i in range(n_shots - 1) if lengths[i] >= fps and lengths[i + 1] >= fps]
    for name, count in extra.items():
        for _ in range(count):
            j = slots.pop(int(rng.integers(len(slots))))
            slots = [i for i in slots if abs(i - j) > 1]  # a shot has at most one gradual join
            kinds[j] = name
    clips: dict[str, list[np.ndarray]] = {}
    order = [str(src) for src in rng.permutation(SOURCES)]
    shots: list[list[np.ndarray]] = []
    joins = []
    jump_start = None  # where the second half of a jump cut starts in its clip
    src = order[0]
    for i in range(n_shots):
        if jump_start is not None:  # the same clip, a second or more after the previous shot ends
            frames, start = clips[src], jump_start
            jump_start = None
        else:
            src = order[i % len(order)]
            if src not in clips:
                clips.clear()  # one decoded clip in memory at a time
                clips[src] = _load_clip(realvids, src, width, height)
            frames = clips[src]
            if i + 1 < n_shots and kinds[i] == "jump":
                room = len(frames) - fps  # both shots and the skipped second must fit
                lengths[i] = min(lengths[i], room // 2)
                lengths[i + 1] = min(lengths[i + 1], room - lengths[i])
                start = 0
                jump_start = lengths[i] + fps + int(rng.integers(0, room - lengths[i] - lengths[i + 1] + 1))
            else:
                start = int(rng.integers(0, max(len(frames) - lengths[i], 0) + 1))
        shots.append(frames[start : start + lengths[i]])
        if i < n_shots - 1:
            kind = kinds[i]
            if kind in ("fade", "dissolve"):
                joins.append(Join(kind, frames=int(0.6 * fps) if kind == "fade" else int(0.8 * fps), hold=fps // 4))
            else:
                joins.append(Join("cut"))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    truth = compose_edit(tmp, shots, joins, fps=fps).to_dict()
    os.replace(tmp, path)
    meta.write_text(json.dumps(truth))
    return path, truth


def build_fade(cache: Path, realvids: Path, spec: tuple, seed: int) -> tuple[Path, dict]:
    """One fade-only video: clip A, fade to black (and hold), fade in clip B (or A again)."""
    from vidattn.keyframes.edits import Join, compose_edit

    width, height, fps, fade, hold, same = spec
    path = cache / f"fades_{seed}_{width}x{height}_{fps}.mp4"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    a = _load_clip(realvids, SOURCES[seed % len(SOURCES)], width, height)
    b = a if same else _load_clip(realvids, SOURCES[(seed + 3) % len(SOURCES)], width, height)
    n = min(len(a) // 2, 3 * fps)
    shots = [a[:n], b[len(b) - n :] if same else b[:n]]
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    truth = compose_edit(tmp, shots, [Join("fade", frames=fade, hold=hold)], fps=fps).to_dict()
    os.replace(tmp, path)
    meta.write_text(json.dumps(truth))
    return path, truth


# ------------------------------------------------------------------------------------------------
# Detectors: path -> list of cut frames (first frame of each new shot)
# ------------------------------------------------------------------------------------------------
def _scenedetect(name: str) -> Callable[[Path], list[int]]:
    import scenedetect

    detector_cls = getattr(scenedetect, name)

    def run(path: Path) -> list[int]:
        scenes = scenedetect.detect(str(path), detector_cls())
        return [int(start.frame_num) for start, _ in scenes[1:]]

    return run


def detectors(names: list[str]) -> dict[str, Callable[[Path], list[int]]]:
    """The detectors to compare, by display name."""
    out: dict[str, Callable[[Path], list[int]]] = {}
    if "vidattn" in names:
        from vidattn.keyframes.pipeline import KeyframeOptions, score_video

        out["vidattn keyframes (4 fps sampling, default)"] = lambda p: [
            c["frame_index"] for c in score_video(p, KeyframeOptions())["cuts"]
        ]
    for name in ("ContentDetector", "AdaptiveDetector", "HashDetector"):
        if name in names:
            try:
                out[f"PySceneDetect {name}"] = _scenedetect(name)
            except ImportError as exc:
                print(f"skipping PySceneDetect {name}: {exc}", file=sys.stderr)
    return out


def match(found: list[int], truth: dict, tol: int = TOLERANCE) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives); a detection inside a transition is ignored."""
    cuts = sorted(truth["cuts"])
    free = list(cuts)
    tp = fp = 0
    for f in sorted(found):
        near = [c for c in free if abs(c - f) <= tol]
        if near:
            free.remove(min(near, key=lambda c: abs(c - f)))
            tp += 1
        elif any(t["start"] - tol <= f <= t["end"] + tol for t in truth["transitions"]):
            continue
        else:
            fp += 1
    return tp, fp, len(free)


def coverage(path: Path, truth: dict) -> dict:
    """vidattn with k = number of true shots: shots >= 1 s with a key frame, bad key frames."""
    from vidattn.data.decode import open_video
    from vidattn.keyframes.descriptors import describe_frames
    from vidattn.keyframes.pipeline import KeyframeOptions, score_video

    doc = score_video(path, KeyframeOptions(k=len(truth["shots"])))
    picks = [k["frame_index"] for k in doc["keyframes"]]
    long_shots = [s for s in truth["shots"] if s[1] - s[0] + 1 >= truth["fps"]]
    covered = sum(any(s[0] <= p <= s[1] for p in picks) for s in long_shots)
    in_transition = sum(any(t["start"] <= p <= t["end"] for t in truth["transitions"]) for p in picks)
    flat = 0
    if picks:
        with open_video(path, backend="pyav", size=160) as reader:
            stats = describe_frames(reader.get_frames(sorted(picks), numpy=True))
        flat = int(((stats.luma_std < 0.04) | (stats.luma_mean < 0.06)).sum())
    return {
        "shots_1s": len(long_shots),
        "covered": covered,
        "keyframes": len(picks),
        "in_transition": in_transition,
        "black_or_flat": flat,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--realvids", type=Path, default=root.parent / "shared" / "realvids")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/vidattn-eval-cuts"), help="generated videos")
    parser.add_argument(
        "--detectors", default="vidattn,ContentDetector,AdaptiveDetector,HashDetector", help="comma-separated"
    )
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--per-video", action="store_true", help="print each video's cuts and detections")
    args = parser.parse_args()
    if not args.realvids.is_dir():
        print(f"Error: {args.realvids} not found (the shared real videos)", file=sys.stderr)
        return 1

    t0 = time.perf_counter()
    edited = [build_edited(args.cache, args.realvids, spec) for spec in EDITED]
    fades = [build_fade(args.cache, args.realvids, spec, i) for i, spec in enumerate(FADES)]
    print(f"test videos ready in {time.perf_counter() - t0:.0f} s ({args.cache})", file=sys.stderr)
    n_cuts = sum(len(t["cuts"]) for _, t in edited)
    n_trans = sum(len(t["transitions"]) for _, t in edited)

    results = []
    for name, detect in detectors(args.detectors.split(",")).items():
        tp = fp = fn = 0
        wall = 0.0
        for path, truth in edited:
            start = time.perf_counter()
            found = detect(path)
            wall += time.perf_counter() - start
            a, b, c = match(found, truth)
            tp, fp, fn = tp + a, fp + b, fn + c
            if args.per_video:
                print(f"{name} {path.name}: truth {truth['cuts']} found {sorted(found)} -> tp {a} fp {b} fn {c}")
        fade_cuts = 0
        for path, _ in fades:
            start = time.perf_counter()
            found = detect(path)
            wall += time.perf_counter() - start
            fade_cuts += len(found)
            if args.per_video:
                print(f"{name} {path.name}: cuts {sorted(found)}")
        precision = tp / max(tp + fp, 1)
        recall = tp / max(tp + fn, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        results.append(
            {
                "detector": name,
                "precision": round(precision, 3),
                "recall": round(recall, 3),
                "f1": round(f1, 3),
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "cuts_on_fade_videos": fade_cuts,
                "wall_s": round(wall, 2),
            }
        )
    cover = None
    if "vidattn" in args.detectors.split(","):
        totals: dict[str, int] = {}
        for path, truth in [*edited, *fades]:
            for key, value in coverage(path, truth).items():
                totals[key] = totals.get(key, 0) + value
        cover = totals

    if args.markdown:
        print(
            f"| detector ({n_cuts} cuts, {n_trans} fades/dissolves, {len(edited)} edited videos) "
            f"| precision | recall | F1 +-{TOLERANCE} frames | cuts on {len(fades)} fade videos | wall s |"
        )
        print("|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['detector']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} "
                f"| {r['cuts_on_fade_videos']} | {r['wall_s']:.1f} |"
            )
        if cover:
            print()
            print(
                f"vidattn with -k = number of true shots: {cover['covered']} of {cover['shots_1s']} shots of "
                f">= 1 s have a key frame; {cover['keyframes']} key frames, {cover['in_transition']} inside a "
                f"transition, {cover['black_or_flat']} black or flat."
            )
    else:
        for r in results:
            print(json.dumps(r))
        if cover:
            print(json.dumps({"coverage": cover}))
    if args.json_out:
        args.json_out.write_text(json.dumps({"cuts": results, "coverage": cover}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
