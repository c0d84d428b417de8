#!/usr/bin/env python
"""Does `vidattn explain` show the model looking at the target, at the right moment? (issue 20's figures)

On a synthetic split (`vidattn synth`, or `vidattn train`'s default data, e.g. ``RUN/data/val``), for every
video listed in ``events.csv``, the checkpoint is run through `vidattn.explainer.explain_video` (the same
code as `vidattn explain`) and measured against the generator's ground truth:

- **spatial**, per map layer: over the event's frames (``events.csv``; only sampled frames, at the model's
  stride), the fraction whose map peak (the highest cell) falls inside the target's box from ``boxes.jsonl``,
  grown by ``--margin`` cells (2) at the map's resolution. Next to it, the **chance** rate: the fraction of
  the map's cells inside that grown box (what a peak at a random cell would score; on a coarse map it is
  high, so read the two together).
- **temporal**: the fraction of videos whose highest temporal weight falls inside the event window (exact,
  and with ``--tolerance`` frames of slack as `scripts/eval_keyframes.py` counts key frames), next to the
  event's share of the video (a random frame's chance).
- the prediction's top-1 accuracy (as `vidattn score` computes it).

A split made before ``boxes.jsonl`` existed gets it first (the generator re-draws the same videos from
``synth.json``: the boxes only, the videos are not rewritten).

Example:
    vidattn synth data/ex --frames 24-32 --per-class 40 --val-per-class 10
    vidattn train --data-root data/ex --out runs/ex -o data.clip_len=32 -o data.stride=1
    python scripts/eval_explain.py runs/ex/checkpoints/best.pt data/ex/val
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np


def ensure_boxes(split_dir: Path) -> dict[str, list]:
    """``boxes.jsonl`` of the split as ``{path: boxes}``; written first from the dataset's ``synth.json`` if absent."""
    boxes_path = split_dir / "boxes.jsonl"
    if not boxes_path.is_file():
        from vidattn.data.synthetic import SynthSpec, generate_dataset

        meta_path = split_dir.parent / "synth.json"
        if not meta_path.is_file():
            raise SystemExit(f"{boxes_path} is missing and {meta_path} does not say how the data was made")
        meta = json.loads(meta_path.read_text())
        generate_dataset(
            split_dir.parent,
            per_class=meta["per_class"],
            val_per_class=meta["val_per_class"],
            seed=meta["seed"],
            spec=SynthSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["spec"].items()}),
            classes=tuple(meta["classes"]),
        )
    return {d["path"]: d["boxes"] for d in map(json.loads, boxes_path.read_text().splitlines()) if d}


def peak_hit(values: np.ndarray, box: list[int], seen: tuple[int, int, int], margin: float) -> tuple[bool, float]:
    """Whether the map's highest cell lies in the target's box grown by `margin` cells, and the chance of that.

    The map covers the centre square ``seen`` ``(x, y, side)`` of the frame; the box is in frame pixels.
    """
    h, w = values.shape
    x0, y0, side = seen
    sx, sy = w / side, h / side  # map cells per pixel
    left, right = (box[0] - x0) * sx - margin, (box[0] + box[2] - x0) * sx + margin
    top, bottom = (box[1] - y0) * sy - margin, (box[1] + box[3] - y0) * sy + margin
    cols, rows = np.arange(w) + 0.5, np.arange(h) + 0.5  # cell centres
    inside = ((rows >= top) & (rows <= bottom))[:, None] & ((cols >= left) & (cols <= right))[None, :]
    row, col = np.unravel_index(int(np.nanargmax(values)), values.shape)
    return bool(inside[row, col]), float(inside.mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("split_dir", type=Path, help="folder with events.csv (e.g. RUN/data/val)")
    parser.add_argument("--margin", type=float, default=2.0, help="cells of slack around the box, map resolution")
    parser.add_argument("--tolerance", type=int, default=2, help="frames of slack around the event (temporal)")
    parser.add_argument("--layers", nargs="*", default=(), help="map layers (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos of each class")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    from vidattn.explainer.video import ExplainModel, ExplainOptions, explain_video

    # Videos with no event (the generator's no_event class) have no target to find: left out.
    rows = [r for r in csv.DictReader((args.split_dir / "events.csv").open()) if r["event_start"]]
    if args.limit is not None:  # the first N of each class, so every class is measured
        kept: dict[str, int] = {}
        for r in list(rows):
            kept[r["label"]] = kept.get(r["label"], 0) + 1
            if kept[r["label"]] > args.limit:
                rows.remove(r)
    if not rows:
        print(f"no videos with an event listed in {args.split_dir / 'events.csv'}", file=sys.stderr)
        return 1
    boxes = ensure_boxes(args.split_dir)
    opts = ExplainOptions(layers=tuple(args.layers), device=args.device)
    model = ExplainModel.load(args.checkpoint, opts)
    spatial: dict[str, list[tuple[bool, float]]] = {layer.name: [] for layer in model.layers}
    temporal = {"exact": 0, "tolerance": 0, "chance": 0.0}
    correct = 0
    sizes: dict[str, list[int]] = {}
    for row in rows:
        ex = explain_video(args.split_dir / row["path"], model, opts)
        start, end = int(row["event_start"]), int(row["event_end"])
        truth = boxes[row["path"]]
        for pos, index in enumerate(ex.indices.tolist()):
            if not start <= index <= end or truth[index] is None:
                continue
            for name, maps in ex.maps.items():
                sizes[name] = list(maps.shape[1:])
                if not np.isnan(maps[pos]).all():
                    spatial[name].append(peak_hit(maps[pos], truth[index], ex.seen_box, args.margin))
        top = int(ex.indices[int(np.argmax(ex.weights))])
        temporal["exact"] += start <= top <= end
        temporal["tolerance"] += start - args.tolerance <= top <= end + args.tolerance
        temporal["chance"] += (end - start + 1) / ex.info.num_frames
        correct += ex.topk[0][0] == row["label"]
    n = len(rows)
    result = {
        "checkpoint": str(args.checkpoint),
        "split": str(args.split_dir),
        "videos": n,
        "top1": round(correct / n, 4),
        "margin_cells": args.margin,
        "spatial": {
            name: {
                "event_frames": len(hits),
                "peak_on_target": round(float(np.mean([h for h, _ in hits])), 4) if hits else None,
                "chance": round(float(np.mean([c for _, c in hits])), 4) if hits else None,
                "map_size": sizes.get(name),
            }
            for name, hits in spatial.items()
        },
        "temporal_peak_in_event": round(temporal["exact"] / n, 4),
        f"temporal_peak_in_event_pm{args.tolerance}": round(temporal["tolerance"] / n, 4),
        "temporal_chance": round(temporal["chance"] / n, 4),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{n} videos of {args.split_dir}, checkpoint {args.checkpoint}; top-1 {result['top1']:.3f}")
    print(f"spatial: peak inside the target's box +-{args.margin:g} cells, over the event's sampled frames")
    for name, r in result["spatial"].items():
        if r["peak_on_target"] is None:
            print(f"  {name:<28s} no event frames")
            continue
        size = "x".join(map(str, r["map_size"]))
        hit, chance, count = r["peak_on_target"], r["chance"], r["event_frames"]
        print(f"  {name:<24s} {size:>5s}  {hit:.3f}  (chance {chance:.3f}, {count} frames)")
    print(
        f"temporal: peak inside the event {result['temporal_peak_in_event']:.3f}, "
        f"+-{args.tolerance} frames {result[f'temporal_peak_in_event_pm{args.tolerance}']:.3f} "
        f"(chance {result['temporal_chance']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
