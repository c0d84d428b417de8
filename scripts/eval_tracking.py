#!/usr/bin/env python
"""Benchmark vidattn's tracker against OpenCV CSRT, KCF and (optionally) NanoTrack on OTB sequences.

Every sequence folder given (or found one level below a folder given) is run by every tracker in
the same process: OTB success AUC (21 IoU thresholds), precision@20 px and FPS per sequence, then
the mean per tracker. Frames are decoded into memory first, so FPS counts tracking only: the
per-frame ``update`` calls, not the first-frame ``init`` (model loading, start-up) and not JPEG
decoding, measured the same way for every tracker, as wall time (FPS) and as the process's CPU time
per frame (user + sys over all its threads). Trackers run in turn ``--repeats`` times and
the median time is reported, because a shared machine makes single timings noisy.

Generated checks (``--scenarios``), on sequences with exact ground truth:
    - ``grow``: a 10 px target that grows 4x: the share of frames whose box area is within 1.5x
      of the truth;
    - ``leave`` / ``lookalike``: the target leaves the frame, or vanishes while a look-alike
      appears beside it: median confidence on frames with IoU < 0.1 (should be low) and > 0.5.
``--batch-timing`` times four targets with none lost against four with one lost (it vanishes
after frame 3), and counts the wide re-detection searches (target-frames).

Examples:
    python scripts/eval_tracking.py ../shared/tracking
    python scripts/eval_tracking.py ../shared/tracking --nano models/nanotrack --json results.json
    python scripts/eval_tracking.py --scenarios --batch-timing --synthetic 8

OpenCV trackers need the `bench` extra (opencv-contrib-python-headless); without it they are
skipped with a note. ``--nano DIR`` expects NanoTrack v2's ``nanotrack_backbone_sim.onnx`` and
``nanotrack_head_sim.onnx`` (from the OpenCV zoo) in DIR.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidattn.tracking import DCFConfig, DCFTracker, evaluate, make_sequence  # noqa: E402
from vidattn.tracking.otb import load_sequence  # noqa: E402

SCENARIOS = {
    "grow": {"num_frames": 100, "size": 10, "growth": 4.0, "occlusion": False},
    "leave": {"num_frames": 60, "leave_frame": True, "occlusion": False},
    "lookalike": {"num_frames": 80, "lookalike": True, "occlusion": False},
}


def find_sequences(roots: list[Path]) -> list[Path]:
    """OTB folders: each root that has ``groundtruth_rect.txt``, else its sub-folders that do."""
    out = []
    for root in roots:
        if (root / "groundtruth_rect.txt").is_file():
            out.append(root)
        elif root.is_dir():
            out += sorted(p for p in root.iterdir() if (p / "groundtruth_rect.txt").is_file())
        else:
            raise SystemExit(f"{root}: not a folder")
    if roots and not out:
        raise SystemExit("no sequence folder (with groundtruth_rect.txt) found under " + ", ".join(map(str, roots)))
    return out


# --------------------------------------------------------------------------------- trackers
def run_vidattn(frames: list[np.ndarray], init: np.ndarray, device: str) -> dict:
    """Track ``init`` (N, 4) through ``frames``: boxes (N, T, 4), scores (N, T), update time, wide searches."""
    trk = DCFTracker(DCFConfig(), device=device)
    tensors = [torch.from_numpy(f) for f in frames]
    trk.init(tensors[0], init)
    boxes, scores = [np.asarray(init, dtype=np.float64).reshape(-1, 4)], [np.ones(len(init))]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for f in tensors[1:]:
        b, s = trk.update(f)
        boxes.append(b.cpu().numpy())  # the copy also synchronises a GPU each frame, as a user would
        scores.append(s.cpu().numpy())
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "boxes": np.stack(boxes, 1),
        "scores": np.stack(scores, 1),
        "time": dt,
        "cpu": cpu,
        "wide": trk.wide_searches,
    }


def opencv_factory(name: str, nano_dir: Path | None = None) -> Callable[[], object] | None:
    """A constructor for OpenCV tracker ``name`` (CSRT, KCF, MIL, NANO), or None when unavailable."""
    try:
        import cv2
    except ImportError:
        return None
    if name == "NANO":
        if nano_dir is None:
            return None
        params = cv2.TrackerNano_Params()
        params.backbone = str(nano_dir / "nanotrack_backbone_sim.onnx")
        params.neckhead = str(nano_dir / "nanotrack_head_sim.onnx")
        return lambda: cv2.TrackerNano_create(params)
    for mod in (cv2, getattr(cv2, "legacy", None)):
        fn = getattr(mod, f"Tracker{name}_create", None) if mod is not None else None
        if fn is not None:
            return fn
    return None


def run_opencv(create: Callable[[], object], frames: list[np.ndarray], init: np.ndarray) -> dict:
    """One OpenCV tracker per target, as OpenCV has no batched tracker; a failed update keeps the last box."""
    bgr = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames]
    trackers = []
    for box in np.asarray(init).reshape(-1, 4):
        trk = create()
        trk.init(bgr[0], tuple(int(round(v)) for v in box))
        trackers.append(trk)
    out = [np.asarray(init, dtype=np.float64).reshape(-1, 4)]
    last = out[0].copy()
    t0, c0 = time.perf_counter(), time.process_time()
    for f in bgr[1:]:
        row = []
        for k, trk in enumerate(trackers):
            ok, box = trk.update(f)
            row.append(box if ok else last[k])
        last = np.asarray(row, dtype=np.float64)
        out.append(last)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"boxes": np.stack(out, 1), "time": dt, "cpu": cpu}


def bench_sequence(
    name: str, frames: list[np.ndarray], gt: np.ndarray, trackers: dict[str, Callable | None], repeats: int, device: str
) -> list[dict]:
    """All trackers on one sequence; accuracy from the first run, FPS and CPU time = medians over ``repeats`` runs.

    CPU time (user + sys of the whole process, all threads, per frame) is the fairer comparison on a
    shared machine: wall time counts the waits for a busy core, and OpenCV spreads a frame over
    several threads where vidattn uses one.
    """
    times: dict[str, list[float]] = {t: [] for t in trackers}
    cpus: dict[str, list[float]] = {t: [] for t in trackers}
    metrics: dict[str, dict] = {}
    for rep in range(repeats):
        for trk, create in trackers.items():
            res = run_vidattn(frames, gt[:1], device) if create is None else run_opencv(create, frames, gt[:1])
            times[trk].append(res["time"])
            cpus[trk].append(res["cpu"])
            if rep == 0:
                metrics[trk] = evaluate(res["boxes"][0], gt)
    return [
        {
            "sequence": name,
            "tracker": trk,
            **metrics[trk],
            "fps": (len(frames) - 1) / statistics.median(times[trk]),
            "cpu_ms": 1000 * statistics.median(cpus[trk]) / (len(frames) - 1),
            "frames": len(frames),
        }
        for trk in trackers
    ]


# --------------------------------------------------------------------------------- generated checks
def scenario(kind: str, seeds: range, device: str) -> dict:
    """vidattn on generated ``kind`` sequences: area-follow share (grow) and confidence medians."""
    within, low, high, aucs = [], [], [], []
    for seed in seeds:
        seq = make_sequence(seed, **SCENARIOS[kind])
        res = run_vidattn(list(seq.frames), seq.boxes[:1, 0], device)
        boxes, scores = res["boxes"][0], res["scores"][0]
        iou = seq.truth_iou(boxes)
        ratio = boxes[:, 2] * boxes[:, 3] / (seq.boxes[0, :, 2] * seq.boxes[0, :, 3])
        within.append(float(np.mean((ratio <= 1.5) & (ratio >= 1 / 1.5))))
        low += scores[iou < 0.1].tolist()
        high += scores[iou > 0.5].tolist()
        aucs.append(float(np.mean([(iou > t).mean() for t in np.linspace(0, 1, 21)])))
    med = lambda v: float(np.median(v)) if v else float("nan")  # noqa: E731
    return {
        "scenario": kind,
        "seeds": len(seeds),
        "auc": float(np.mean(aucs)),
        "area_within_1.5": float(np.mean(within)),
        "area_within_1.5_min": float(np.min(within)),
        "conf_iou_lt_0.1": med(low),
        "frames_iou_lt_0.1": len(low),
        "conf_iou_gt_0.5": med(high),
        "frames_iou_gt_0.5": len(high),
    }


def batch_timing(repeats: int, device: str, num_targets: int = 4, seed: int = 0) -> dict:
    """ms/frame of ``num_targets`` targets with none lost vs one lost (it vanishes after frame 3)."""
    opts = {"num_frames": 60, "occlusion": False}
    full = make_sequence(seed, num_targets=num_targets, **opts)
    rest = make_sequence(seed, num_targets=num_targets - 1, **opts)  # the same targets but the last
    vanish = np.concatenate([full.frames[:3], rest.frames[3:]])
    runs: dict[str, list[dict]] = {"none_lost": [], "one_lost": []}
    for _ in range(repeats):
        runs["none_lost"].append(run_vidattn(list(full.frames), full.boxes[:, 0], device))
        runs["one_lost"].append(run_vidattn(list(vanish), full.boxes[:, 0], device))
    out: dict = {"targets": num_targets, "frames": full.num_frames}
    for key, rs in runs.items():
        out[f"ms_per_frame_{key}"] = 1000 * statistics.median(r["time"] for r in rs) / (full.num_frames - 1)
        out[f"wide_searches_{key}"] = rs[0]["wide"]
    out["ratio"] = out["ms_per_frame_one_lost"] / out["ms_per_frame_none_lost"]
    return out


# --------------------------------------------------------------------------------- output
def markdown(rows: list[dict]) -> str:
    lines = [
        "| sequence | tracker | success AUC | precision@20 | FPS | CPU ms/frame |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sequence']} | {r['tracker']} | {r['auc']:.3f} | {r['precision20']:.3f} | {r['fps']:.0f}"
            f" | {r['cpu_ms']:.2f} |"
        )
    return "\n".join(lines)


def summarise(rows: list[dict], label: str) -> list[dict]:
    """Mean over sequences per tracker (FPS and CPU time: median)."""
    out = []
    for trk in dict.fromkeys(r["tracker"] for r in rows):
        sel = [r for r in rows if r["tracker"] == trk]
        out.append(
            {
                "sequence": label,
                "tracker": trk,
                "auc": float(np.mean([r["auc"] for r in sel])),
                "precision20": float(np.mean([r["precision20"] for r in sel])),
                "fps": float(np.median([r["fps"] for r in sel])),
                "cpu_ms": float(np.median([r["cpu_ms"] for r in sel])),
                "frames": int(sum(r["frames"] for r in sel)),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "roots", nargs="*", type=Path, help="OTB folders, or folders of them (img/0001.jpg..., groundtruth_rect.txt)"
    )
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="also run N generated sequences (seeds)")
    p.add_argument("--seed0", type=int, default=0, help="first seed of the generated sequences")
    p.add_argument("--frames", type=int, default=100, help="length of each generated sequence")
    p.add_argument("--trackers", default="vidattn,csrt,kcf", help="comma-separated: vidattn, csrt, kcf, mil")
    p.add_argument("--nano", type=Path, metavar="DIR", help="also run cv2.TrackerNano with the ONNX files in DIR")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per tracker and sequence (median FPS)")
    p.add_argument("--device", default="cpu", help="torch device for vidattn")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads outside the tracker (it uses 1 itself)")
    p.add_argument("--cv-threads", type=int, default=-1, help="OpenCV threads (cv2.setNumThreads; -1: OpenCV default)")
    p.add_argument("--scenarios", action="store_true", help="generated checks: grow, leave, lookalike")
    p.add_argument("--scenario-seeds", type=int, default=4, help="seeds per generated check")
    p.add_argument("--batch-timing", action="store_true", help="time 4 targets with none lost vs one lost")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if not args.roots and not args.synthetic and not args.batch_timing and not args.scenarios:
        p.error("give sequence folders, --synthetic N, --scenarios or --batch-timing")
    if args.nano is not None and not (args.nano / "nanotrack_backbone_sim.onnx").is_file():
        p.error(f"--nano {args.nano}: nanotrack_backbone_sim.onnx not found there")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    names = [t.strip().lower() for t in args.trackers.split(",") if t.strip()] + (["nano"] if args.nano else [])
    notes = []
    trackers: dict[str, Callable | None] = {}
    for t in names:
        if t == "vidattn":
            trackers[t] = None
        elif (create := opencv_factory(t.upper(), args.nano)) is not None:
            trackers[t] = create
        else:
            notes.append(f"{t}: OpenCV tracker unavailable (pip install opencv-contrib-python-headless); skipped")

    result: dict = {"device": args.device, "torch_threads": torch.get_num_threads(), "notes": notes}
    try:
        import cv2

        if args.cv_threads >= 0:
            cv2.setNumThreads(args.cv_threads)
        result["opencv"] = cv2.__version__
        result["opencv_threads"] = cv2.getNumThreads()
    except ImportError:
        pass

    rows: list[dict] = []
    for d in find_sequences(args.roots):
        frames, gt = load_sequence(d)
        rows += bench_sequence(d.name, frames, gt, trackers, args.repeats, args.device)
    syn_rows: list[dict] = []
    for seed in range(args.seed0, args.seed0 + args.synthetic):
        seq = make_sequence(seed, num_frames=args.frames)
        syn_rows += bench_sequence(
            f"synthetic-{seed} ({seq.background})", list(seq.frames), seq.boxes[0], trackers, args.repeats, args.device
        )
    table = list(rows)
    if rows:
        table += summarise(rows, f"**mean ({len(rows) // len(trackers)} sequences)**")
    table += syn_rows
    if syn_rows:
        table += summarise(syn_rows, f"synthetic mean ({args.synthetic} seeds)")
    result["rows"] = table
    if table:
        print(markdown(table))
    if args.scenarios:
        seeds = range(args.seed0, args.seed0 + args.scenario_seeds)
        result["scenarios"] = [scenario(kind, seeds, args.device) for kind in SCENARIOS]
        print(
            "\n| generated check | seeds | AUC | area within 1.5x | conf, IoU<0.1 (frames) | conf, IoU>0.5 (frames) |"
        )
        print("|---|---|---|---|---|---|")
        for s in result["scenarios"]:
            print(
                f"| {s['scenario']} | {s['seeds']} | {s['auc']:.3f} | {s['area_within_1.5']:.2f}"
                f" (min {s['area_within_1.5_min']:.2f}) | {s['conf_iou_lt_0.1']:.2f} ({s['frames_iou_lt_0.1']})"
                f" | {s['conf_iou_gt_0.5']:.2f} ({s['frames_iou_gt_0.5']}) |"
            )
    if args.batch_timing:
        bt = batch_timing(args.repeats, args.device)
        result["batch_timing"] = bt
        print(
            f"\n{bt['targets']} targets: none lost {bt['ms_per_frame_none_lost']:.2f} ms/frame"
            f" ({bt['wide_searches_none_lost']} wide searches), one lost {bt['ms_per_frame_one_lost']:.2f} ms/frame"
            f" ({bt['wide_searches_one_lost']} wide searches) -> {bt['ratio']:.2f}x"
        )
    for n in notes:
        print(f"note: {n}")
    print("\n" + json.dumps(result, indent=None))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
