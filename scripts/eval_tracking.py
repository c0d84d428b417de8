#!/usr/bin/env python
"""Benchmark vidattn's tracker against OpenCV CSRT and KCF on OTB sequences and generated ones.

Reports OTB success AUC (21 IoU thresholds), precision@20 px and FPS for every tracker on the same
frames, in the same run. Frames are decoded into memory first, so FPS counts tracking only (the
per-frame ``update`` calls, not the first-frame ``init`` and not JPEG decoding). Trackers are run
in turn ``--repeats`` times and the median time is reported, because a shared machine makes single
timings noisy.

Examples:
    python scripts/eval_tracking.py ../shared/tracking/Crossing
    python scripts/eval_tracking.py --synthetic 8 --batch-timing
    python scripts/eval_tracking.py ../shared/tracking/Crossing --synthetic 8 --json results.json

OpenCV trackers need the `bench` extra (opencv-contrib-python-headless); without it they are
skipped with a note.
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


# --------------------------------------------------------------------------------- trackers
def run_vidattn(frames: list[np.ndarray], init: np.ndarray, device: str) -> tuple[np.ndarray, float]:
    """Track ``init`` (N, 4) through ``frames``; returns boxes (N, T, 4) and the update time in s."""
    trk = DCFTracker(DCFConfig(), device=device)
    tensors = [torch.from_numpy(f) for f in frames]
    trk.init(tensors[0], init)
    out = [np.asarray(init, dtype=np.float64)]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for f in tensors[1:]:
        boxes, _ = trk.update(f)
        out.append(boxes.cpu().numpy())  # the copy also synchronises a GPU each frame, as a user would
    dt = time.perf_counter() - t0
    return np.stack(out, 1), dt


def opencv_factory(name: str) -> Callable[[], object] | None:
    try:
        import cv2
    except ImportError:
        return None
    for mod in (cv2, getattr(cv2, "legacy", None)):
        fn = getattr(mod, f"Tracker{name}_create", None) if mod is not None else None
        if fn is not None:
            return fn
    return None


def run_opencv(name: str, frames: list[np.ndarray], init: np.ndarray) -> tuple[np.ndarray, float]:
    """One OpenCV tracker per target, as OpenCV has no batched tracker."""
    create = opencv_factory(name)
    bgr = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames]
    trackers = []
    for box in np.asarray(init).reshape(-1, 4):
        trk = create()
        trk.init(bgr[0], tuple(int(round(v)) for v in box))
        trackers.append(trk)
    out = [np.asarray(init, dtype=np.float64).reshape(-1, 4)]
    last = out[0].copy()
    t0 = time.perf_counter()
    for f in bgr[1:]:
        row = []
        for k, trk in enumerate(trackers):
            ok, box = trk.update(f)
            row.append(box if ok else last[k])
        last = np.asarray(row, dtype=np.float64)
        out.append(last)
    dt = time.perf_counter() - t0
    return np.stack(out, 1), dt


def bench_sequence(
    name: str, frames: list[np.ndarray], gt: np.ndarray, trackers: list[str], repeats: int, device: str
) -> list[dict]:
    """All trackers on one sequence; accuracy from the first run, FPS = median over ``repeats`` runs."""
    times: dict[str, list[float]] = {t: [] for t in trackers}
    metrics: dict[str, dict] = {}
    for rep in range(repeats):
        for trk in trackers:
            if trk == "vidattn":
                boxes, dt = run_vidattn(frames, gt[:1], device)
            else:
                boxes, dt = run_opencv(trk.upper(), frames, gt[:1])
            times[trk].append(dt)
            if rep == 0:
                metrics[trk] = evaluate(boxes[0], gt)
    rows = []
    for trk in trackers:
        fps = (len(frames) - 1) / statistics.median(times[trk])
        rows.append({"sequence": name, "tracker": trk, **metrics[trk], "fps": fps, "frames": len(frames)})
    return rows


def batch_timing(repeats: int, device: str, num_targets: int = 4, seed: int = 0) -> dict:
    """Time 1 target vs ``num_targets`` targets on the same generated sequence (median of runs)."""
    seq = make_sequence(seed, num_frames=60, num_targets=num_targets)
    frames = list(seq.frames)
    one, many = [], []
    for _ in range(repeats):
        one.append(run_vidattn(frames, seq.boxes[:1, 0], device)[1])
        many.append(run_vidattn(frames, seq.boxes[:, 0], device)[1])
    t1, tn = statistics.median(one), statistics.median(many)
    return {
        "targets": num_targets,
        "frames": len(frames),
        "ms_per_frame_1": 1000 * t1 / (len(frames) - 1),
        f"ms_per_frame_{num_targets}": 1000 * tn / (len(frames) - 1),
        "ratio": tn / t1,
    }


# --------------------------------------------------------------------------------- output
def markdown(rows: list[dict]) -> str:
    lines = ["| sequence | tracker | success AUC | precision@20 | FPS |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['sequence']} | {r['tracker']} | {r['auc']:.3f} | {r['precision20']:.3f} | {r['fps']:.0f} |")
    return "\n".join(lines)


def summarise(rows: list[dict], label: str) -> list[dict]:
    """Mean over sequences per tracker (FPS: median)."""
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
                "frames": int(sum(r["frames"] for r in sel)),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seq_dirs", nargs="*", type=Path, help="OTB folders (img/0001.jpg..., groundtruth_rect.txt)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="also run N generated sequences (seeds)")
    p.add_argument("--seed0", type=int, default=0, help="first seed of the generated sequences")
    p.add_argument("--frames", type=int, default=100, help="length of each generated sequence")
    p.add_argument("--trackers", default="vidattn,csrt,kcf", help="comma-separated: vidattn, csrt, kcf, mil")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per tracker and sequence (median FPS)")
    p.add_argument("--device", default="cpu", help="torch device for vidattn")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads outside the tracker (it uses 1 itself)")
    p.add_argument("--cv-threads", type=int, default=-1, help="OpenCV threads (cv2.setNumThreads; -1: OpenCV default)")
    p.add_argument("--batch-timing", action="store_true", help="time 4 targets at once vs 1 target")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if not args.seq_dirs and not args.synthetic and not args.batch_timing:
        p.error("give SEQ_DIRs, --synthetic N or --batch-timing")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    trackers = [t.strip().lower() for t in args.trackers.split(",") if t.strip()]
    notes = []
    for t in list(trackers):
        if t != "vidattn" and opencv_factory(t.upper()) is None:
            notes.append(f"{t}: OpenCV tracker unavailable (pip install opencv-contrib-python-headless); skipped")
            trackers.remove(t)

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
    for d in args.seq_dirs:
        frames, gt = load_sequence(d)
        rows += bench_sequence(d.name, frames, gt, trackers, args.repeats, args.device)
    syn_rows: list[dict] = []
    for seed in range(args.seed0, args.seed0 + args.synthetic):
        seq = make_sequence(seed, num_frames=args.frames)
        syn_rows += bench_sequence(
            f"synthetic-{seed} ({seq.background})", list(seq.frames), seq.boxes[0], trackers, args.repeats, args.device
        )
    table = rows + syn_rows
    if syn_rows:
        table += summarise(syn_rows, f"synthetic mean ({args.synthetic} seeds)")
    result["rows"] = table
    if table:
        print(markdown(table))
    if args.batch_timing:
        bt = batch_timing(args.repeats, args.device)
        result["batch_timing"] = bt
        n = bt["targets"]
        print(
            f"\nbatched targets: 1 target {bt['ms_per_frame_1']:.2f} ms/frame, {n} targets "
            f"{bt[f'ms_per_frame_{n}']:.2f} ms/frame -> {bt['ratio']:.2f}x the cost of one"
        )
    for n in notes:
        print(f"note: {n}")
    print("\n" + json.dumps(result, indent=None))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
