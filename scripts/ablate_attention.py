#!/usr/bin/env python
"""Train the same tiny backbone with different attention, equal budgets, on the synthetic data.

Variants: no attention, channel only (SE), spatial only, temporal only (gating), STC. Every run
uses the same data, seed, epochs and schedule; the table reports best and final val top-1 and
wall time. Example:

    python scripts/ablate_attention.py --epochs 12 --out /tmp/vidattn-ablate --json ablate.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from vidattn.config import apply_overrides, load_config
from vidattn.data.synthetic import generate_dataset
from vidattn.engine.train import train

# Variant name -> `model.attn` value.
VARIANTS = {"none": "none", "channel": "se", "spatial": "spatial", "temporal": "temporal", "stc": "stc"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/vidattn-ablate", help="working folder (data + one run per variant)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--val-per-class", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (median over them)")
    parser.add_argument("--model", default="r2plus1d_tiny")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("-o", "--override", action="append", default=[], help="extra config overrides key=value")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    out = Path(args.out)
    data = generate_dataset(out / "data", per_class=args.per_class, val_per_class=args.val_per_class, seed=0)
    rows = []
    for variant in args.variants:
        best, final, wall = [], [], []
        for seed in args.seeds:
            run = out / f"{variant}-seed{seed}"
            if run.exists():
                shutil.rmtree(run)
            cfg = apply_overrides(
                load_config(),
                [
                    f"data.root={data}",
                    f"model.name={args.model}",
                    f"model.attn={VARIANTS[variant]}",
                    f"train.epochs={args.epochs}",
                    f"train.seed={seed}",
                    "train.progress=false",
                    *args.override,
                ],
            )
            start = time.perf_counter()
            metrics = train(cfg, run)
            wall.append(time.perf_counter() - start)
            best.append(metrics["best_val_top1"])
            final.append(metrics["val_top1"])
            print(
                f"{variant}: seed {seed}: best {best[-1]:.3f} final {final[-1]:.3f} in {wall[-1]:.0f}s", file=sys.stderr
            )
        rows.append(
            {
                "attention": variant,
                "attn": VARIANTS[variant],
                "best_val_top1": statistics.median(best),
                "final_val_top1": statistics.median(final),
                "wall_s": statistics.median(wall),
                "seeds": args.seeds,
                "epochs": args.epochs,
            }
        )
    print("| attention | best val top-1 | final val top-1 | wall time (s) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['attention']} | {r['best_val_top1']:.3f} | {r['final_val_top1']:.3f} | {r['wall_s']:.0f} |")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
