#!/usr/bin/env python
"""Cut detection of `vidattn keyframes` against known cuts, next to PySceneDetect, in one run.

Builds (once, cached under ``--cache``) edited videos by concatenating different real clips from
``../shared/realvids`` (never copied into the project): shots from a third of a second to several
seconds, jump cuts (the same clip, later), fades through black and dissolves, at several sizes and
frame rates, with every cut frame known exactly. Also fade-only videos in the style of
PySceneDetect's ``fades.mp4`` (fade to black and back), where any reported cut is false, and
jump-cut videos: each real clip (and each sequence of ``../shared/tracking``) with stretches of
half a second to 1.5 s left out, so the shots on both sides of a cut show the same scene (static
cameras, fast motion, camera shake, a drone), plus each clip uncut, where any reported cut is false.
The encoder runs without x264's macroblock tree, so the same frames always give the same file.

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
# Jump-cut videos: every source above plus these sequences of ../shared/tracking (bag is pysot/bag.avi).
TRACKING = ["Crossing", "ball1", "car1", "person12_1"]
JUMP_SIZES = [(320, 240, 25), (426, 240, 30), (480, 360, 25), (640, 360, 30)]
# Bump when the way test videos are encoded changes, so a cache of older files is not reused.
ENCODING = "r1"


def _load_clip(realvids: Path, source: str, width: int, height: int) -> list[np.ndarray]:
    """The frames of `source` (``path[:start:end]``, or a folder of JPEGs), centre-cropped to the aspect and
    resized to ``width x height``."""
    import av
    from PIL import Image

    name, *span = source.split(":")
    start, end = (int(span[0]), int(span[1])) if span else (0, None)
    path = realvids / name
    if path.is_dir():
        images = (Image.open(p) for p in sorted(path.glob("*.jpg")))
    else:
        container = av.open(str(path))
        images = (frame.to_image() for frame in container.decode(video=0))
    frames = []
    for k, image in enumerate(images):
        if k < start or (end is not None and k >= end):
            continue
        scale = max(width / image.width, height / image.height)
        w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
        image = image.resize((w, h), Image.BILINEAR)
        x, y = (w - width) // 2, (h - height) // 2
        frames.append(np.asarray(image.crop((x, y, x + width, y + height)).convert("RGB")))
    if not path.is_dir():
        container.close()
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
    path = cache / f"edited_{seed}_{width}x{height}_{fps}_{ENCODING}.mp4"
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
    path = cache / f"fades_{seed}_{width}x{height}_{fps}_{ENCODING}.mp4"
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


def build_jumps(cache: Path, root: Path, source: str, seed: int) -> list[tuple[Path, dict]]:
    """Two videos of one clip (cached): with jump cuts (stretches of 0.5-1.5 s left out between shots of
    1-2.5 s, as many as fit) and uncut (the whole clip, where every reported cut is false)."""
    from vidattn.keyframes.edits import Join, compose_edit

    width, height, fps = JUMP_SIZES[seed % len(JUMP_SIZES)]
    name = source.split(":")[0].removesuffix("/img")  # a tracking sequence is named by its folder
    stem = f"{Path(name).stem}_{width}x{height}_{fps}_{ENCODING}"
    paths = [cache / f"jumps_{stem}.mp4", cache / f"uncut_{stem}.mp4"]
    if all(p.exists() and p.with_suffix(".json").exists() for p in paths):
        return [(p, json.loads(p.with_suffix(".json").read_text())) for p in paths]
    frames = _load_clip(root, source, width, height)
    rng = np.random.default_rng(100 + seed)
    shots, pos = [], 0
    while True:
        length = int(rng.integers(fps, int(2.5 * fps) + 1))
        if shots and pos + length > len(frames):
            break
        shots.append(frames[pos : pos + length])
        pos += length + int(rng.integers(fps // 2, int(1.5 * fps) + 1))
    if len(shots) < 2:  # too short for a jump of half a second between shots of 1 s: halve the shots
        half = len(frames) // 2
        shots = [frames[: half - fps // 4], frames[half + fps // 4 :]]
    out = []
    cache.mkdir(parents=True, exist_ok=True)
    for path, (clip_shots, joins) in zip(paths, [(shots, [Join()] * (len(shots) - 1)), ([frames], [])], strict=True):
        tmp = path.with_suffix(".tmp.mp4")
        truth = compose_edit(tmp, clip_shots, joins, fps=fps).to_dict()
        os.replace(tmp, path)
        path.with_suffix(".json").write_text(json.dumps(truth))
        out.append((path, truth))
    return out


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


def _score(found: list[list[int]], videos: list[tuple[Path, dict]]) -> dict:
    """Precision / recall / F1 over `videos` (``found`` per video), and every cut counted as found."""
    tp = fp = fn = 0
    for cuts, (_, truth) in zip(found, videos, strict=True):
        a, b, c = match(cuts, truth)
        tp, fp, fn = tp + a, fp + b, fn + c
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--realvids", type=Path, default=root.parent / "shared" / "realvids")
    parser.add_argument("--tracking", type=Path, default=root.parent / "shared" / "tracking", help="more clips")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/vidattn-eval-cuts"), help="generated videos")
    parser.add_argument(
        "--detectors", default="vidattn,ContentDetector,AdaptiveDetector,HashDetector", help="comma-separated"
    )
    parser.add_argument("--no-jumps", action="store_true", help="leave out the jump-cut and uncut videos")
    parser.add_argument("--jump-clips", type=int, default=None, help="jump-cut videos from the first N clips only")
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
    jumps: list[tuple[Path, dict]] = []
    uncut: list[tuple[Path, dict]] = []
    if not args.no_jumps:
        sources = [(args.realvids, src) for src in SOURCES]
        if args.tracking.is_dir():
            sources += [(args.tracking, f"{name}/img") for name in TRACKING if (args.tracking / name).is_dir()]
        for seed, (where, src) in enumerate(sources[: args.jump_clips]):
            jump, plain = build_jumps(args.cache, where, src, seed)
            jumps.append(jump)
            uncut.append(plain)
    print(f"test videos ready in {time.perf_counter() - t0:.0f} s ({args.cache})", file=sys.stderr)
    n_cuts = sum(len(t["cuts"]) for _, t in edited)
    n_trans = sum(len(t["transitions"]) for _, t in edited)
    n_jumps = sum(len(t["cuts"]) for _, t in jumps)

    results = []
    for name, detect in detectors(args.detectors.split(",")).items():
        found: dict[str, list[list[int]]] = {}
        wall = 0.0
        for group, videos in (("edited", edited), ("fades", fades), ("jumps", jumps), ("uncut", uncut)):
            found[group] = []
            for path, truth in videos:
                start = time.perf_counter()
                cuts = sorted(detect(path))
                wall += time.perf_counter() - start
                found[group].append(cuts)
                if args.per_video:
                    a, b, c = match(cuts, truth)
                    print(f"{name} {path.name}: truth {truth['cuts']} found {cuts} -> tp {a} fp {b} fn {c}")
        row = {"detector": name, **_score(found["edited"], edited)}
        row["cuts_on_fade_videos"] = sum(len(c) for c in found["fades"])
        if jumps:
            row["jumps"] = _score(found["jumps"], jumps)
            row["cuts_on_uncut_clips"] = sum(len(c) for c in found["uncut"])
        row["wall_s"] = round(wall, 2)
        results.append(row)
    cover = None
    if "vidattn" in args.detectors.split(","):
        totals: dict[str, int] = {}
        for path, truth in [*edited, *fades, *jumps, *uncut]:
            for key, value in coverage(path, truth).items():
                totals[key] = totals.get(key, 0) + value
        cover = totals

    if args.markdown:
        print(
            f"| detector ({n_cuts} cuts, {n_trans} fades/dissolves, {len(edited)} edited videos) "
            f"| precision | recall | F1 +-{TOLERANCE} frames | cuts on {len(fades)} fade videos | wall s (all videos) |"
        )
        print("|---|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['detector']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} "
                f"| {r['cuts_on_fade_videos']} | {r['wall_s']:.1f} |"
            )
        if jumps:
            print()
            print(
                f"| detector ({n_jumps} jump cuts in {len(jumps)} clips) | precision | recall "
                f"| F1 +-{TOLERANCE} frames | cuts on the {len(uncut)} clips uncut |"
            )
            print("|---|---|---|---|---|")
            for r in results:
                j = r["jumps"]
                print(
                    f"| {r['detector']} | {j['precision']:.2f} | {j['recall']:.2f} | {j['f1']:.2f} "
                    f"| {r['cuts_on_uncut_clips']} |"
                )
        if cover:
            print()
            print(
                f"vidattn with -k = number of true shots, on all {len(edited) + len(fades) + len(jumps) + len(uncut)} "
                f"videos: {cover['covered']} of {cover['shots_1s']} shots of >= 1 s have a key frame; "
                f"{cover['keyframes']} key frames, {cover['in_transition']} inside a transition, "
                f"{cover['black_or_flat']} black or flat."
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
