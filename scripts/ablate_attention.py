#!/usr/bin/env python
"""Attention ablation on long synthetic videos: the same budget for every variant, several seeds.

Variants: no attention at all (plain blocks, average-pooling head), a pooling head alone on plain blocks (the
attention-pooling head ``head``, the peak-pooling head ``peak``), then with the head `vidattn train` derives
(peak, from scratch): channel only (SE), spatial only, temporal only (gating), STC (all three, the default);
STC with the attention-pooling head (``stc-attn``, the default before peak pooling), and the two-stage glimpse
model (hard attention: a cheap scorer over the whole video, the STC backbone on the top-k glimpses only). Every
variant trains on the same data with whole-video coverage (the defaults of `vidattn train --data-root`), for the
same compute budget: a variant's epochs are its budget divided by its measured CPU seconds per epoch (a few
training steps are timed on one thread first), so a cheaper model gets more epochs, and every run's schedule
completes.
CPU time, not wall time, sets the budget because the machine may be shared; each run is pinned to
one thread so its CPU time is not inflated by threads waiting for each other.

The table gives, per variant, the median and the range (min-max) over the seeds of the best
validation top-1, the epochs the budget bought, and the CPU minutes actually spent. Example:

    python scripts/ablate_attention.py --data /tmp/long --budget-min 8 --seeds 0 1 2 --json ablate.json

``--data`` is generated first when it does not exist: issue 15's shape (48-192 frames, a 6-frame event, two
distractors, the four direction classes, 40 training and 12 validation videos each; `--classes`, `--per-class`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from vidattn.config import apply_overrides, load_config
from vidattn.data.synthetic import SynthSpec, generate_dataset
from vidattn.engine.train import derive_batch_size, train

# Variant name -> config overrides.
VARIANTS = {
    "none": ["model.attn=none", "model.head=avg"],
    "head": ["model.attn=none", "model.head=attn"],
    "peak": ["model.attn=none", "model.head=peak"],
    "channel": ["model.attn=se"],
    "spatial": ["model.attn=spatial"],
    "temporal": ["model.attn=temporal"],
    "stc": ["model.attn=stc"],
    "stc-attn": ["model.attn=stc", "model.head=attn"],
    "glimpse": ["model.name=r2plus1d_glimpse", "model.attn=stc"],
}


def cpu_s_per_step(overrides: list[str], clip_len: int, size: int, batch: int, num_classes: int) -> float:
    """CPU seconds of one training step (forward, backward, AdamW), on one thread, after a warm-up step."""
    from vidattn.engine.train import build_model

    cfg = apply_overrides(load_config(), overrides)
    torch.set_num_threads(1)
    model = build_model(cfg, num_classes)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(batch, 3, clip_len, size, size), torch.randint(0, num_classes, (batch,))
    times = []
    for _ in range(3):
        start = time.process_time()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.process_time() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/vidattn-ablate/data", help="dataset root (generated if missing)")
    parser.add_argument("--out", default="/tmp/vidattn-ablate", help="one run directory per variant and seed")
    parser.add_argument("--budget-min", type=float, default=8.0, help="CPU minutes of training per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (median, range)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--val-per-class", type=int, default=12)
    parser.add_argument("--classes", default="move_left,move_right,move_up,move_down", help="classes to generate")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("-o", "--override", action="append", default=[], help="extra config overrides key=value")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    data = Path(args.data)
    if not (data / "val" / "events.csv").is_file():
        spec = SynthSpec(min_frames=48, max_frames=192, min_event=6, max_event=6)
        generate_dataset(
            data,
            per_class=args.per_class,
            val_per_class=args.val_per_class,
            seed=0,
            spec=spec,
            classes=tuple(args.classes.split(",")),
        )
    out = Path(args.out)
    # The settings `vidattn train --data-root` derives, so the step timing uses the real clip.
    from vidattn.data import load_annotations
    from vidattn.data.profile import derive_data_settings, profile_videos

    records, classes = load_annotations(data, "train")
    base = load_config().data
    derived = derive_data_settings(base, profile_videos([r.path for r in records]))
    batch = derive_batch_size(len(records))
    steps_per_epoch = -(-len(records) // batch)
    rows = []
    for variant in args.variants:
        overrides = [*VARIANTS[variant], *args.override]
        step_s = cpu_s_per_step(overrides, derived["clip_len"], derived["crop_size"], batch, len(classes))
        # +15% for evaluation and data handling on top of the training steps.
        epochs = max(1, min(args.max_epochs, int(args.budget_min * 60 / (step_s * steps_per_epoch * 1.15))))
        best, cpu_min = [], []
        for seed in args.seeds:
            run = out / f"{variant}-seed{seed}"
            if run.exists():
                shutil.rmtree(run)
            cfg = apply_overrides(
                load_config(),
                [
                    f"data.root={data}",
                    f"train.epochs={epochs}",
                    f"train.seed={seed}",
                    "train.threads=1",
                    "train.progress=false",
                    *overrides,
                ],
            )
            start = time.process_time()
            metrics = train(cfg, run)
            cpu_min.append((time.process_time() - start) / 60)
            best.append(metrics["best_val_top1"])
            print(f"{variant}: seed {seed}: best {best[-1]:.3f} in {cpu_min[-1]:.1f} CPU min", file=sys.stderr)
        rows.append(
            {
                "attention": variant,
                "overrides": overrides,
                "best_val_top1_median": statistics.median(best),
                "best_val_top1_min": min(best),
                "best_val_top1_max": max(best),
                "best_val_top1": best,
                "epochs": epochs,
                "cpu_s_per_step": step_s,
                "cpu_min_median": statistics.median(cpu_min),
                "seeds": args.seeds,
            }
        )
    print("| attention | best val top-1, median (range) | epochs in the budget | CPU min per run |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['attention']} | {r['best_val_top1_median']:.3f} ({r['best_val_top1_min']:.3f}-"
            f"{r['best_val_top1_max']:.3f}) | {r['epochs']} | {r['cpu_min_median']:.1f} |"
        )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
