#!/usr/bin/env python
"""Event-hit rate of model key frames on synthetic event videos (the issue's "with a model" figure).

For every video listed in ``SPLIT_DIR/events.csv`` (written by `vidattn synth` or by `vidattn train`'s
synthetic default, e.g. ``RUN/data/val``), the top-1 key frame of `vidattn keyframes --checkpoint`
must fall inside the recorded event window ``[event_start - tol, event_end + tol]``. Prints the hit
rate (target >= 0.95), and the same figure for the training-free scorer and for a uniformly random
frame, as references.

Example:
    vidattn train --out runs/synth
    python scripts/eval_keyframes.py runs/synth/checkpoints/best.pt runs/synth/data/val
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("split_dir", type=Path, help="folder with events.csv (e.g. RUN/data/val)")
    parser.add_argument("--tolerance", type=int, default=2, help="frames of slack around the event")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N videos")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    from vidattn.engine.distributed import resolve_device
    from vidattn.keyframes.model import KeyframeModel
    from vidattn.keyframes.pipeline import KeyframeOptions, score_video

    # Videos with no event (the generator's no_event class) have no window to hit: left out.
    rows = [r for r in csv.DictReader((args.split_dir / "events.csv").open()) if r["event_start"]][: args.limit]
    if not rows:
        print(f"no videos with an event listed in {args.split_dir / 'events.csv'}", file=sys.stderr)
        return 1
    model = KeyframeModel.load(args.checkpoint, resolve_device(args.device))
    opts = KeyframeOptions(k=1, min_gap_s=0.0)
    hits = {"model": 0, "training-free": 0, "random frame": 0.0}
    correct_class = 0
    empty = {"model": 0, "training-free": 0}  # videos where every frame fell below the quality floor

    def top_frame(doc: dict, name: str) -> int:
        if not doc["keyframes"]:
            empty[name] += 1
            return -(10**9)  # a miss
        return doc["keyframes"][0]["frame_index"]

    for row in rows:
        path = args.split_dir / row["path"]
        lo, hi = int(row["event_start"]) - args.tolerance, int(row["event_end"]) + args.tolerance
        doc = score_video(path, opts, model)
        top = top_frame(doc, "model")
        hits["model"] += lo <= top <= hi
        correct_class += doc["prediction"]["label"] == row["label"]
        free = top_frame(score_video(path, opts), "training-free")
        hits["training-free"] += lo <= free <= hi
        n = doc["num_frames"]
        hits["random frame"] += (min(hi, n - 1) - max(lo, 0) + 1) / n  # expected hit rate of a random pick
    n = len(rows)
    result = {name: round(h / n, 4) for name, h in hits.items()}
    result.update(
        videos=n,
        tolerance=args.tolerance,
        class_accuracy=round(correct_class / n, 4),
        no_keyframe=empty,
        checkpoint=str(args.checkpoint),
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(f"videos: {n}   tolerance: +-{args.tolerance} frames   window class accuracy: {correct_class / n:.3f}")
        for name in hits:
            print(f"top-1 key frame inside the event window, {name:>13s}: {result[name]:.3f}")
        print(f"videos with no key frame (all below the quality floor): {empty}")
    return 0 if result["model"] >= 0.95 else 2


if __name__ == "__main__":
    sys.exit(main())
