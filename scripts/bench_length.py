#!/usr/bin/env python
"""Cost per video against the video's length: dense whole-video coverage vs the glimpse model.

For each length (default 48, 192, 768 frames) and model: GFLOPs per video
(``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls) and CPU time per video
(median of ``--repeats`` forward passes, batch 1, ``torch.inference_mode``). Dense coverage runs
the attention 3D-CNN on every frame; the glimpse model runs its cheap scorer on every frame and the
same 3D-CNN on its ``k`` glimpses only, so only the scorer's part grows with the length.

CPU time is measured as process time on ``--threads`` threads (default 1), which is the latency on
an idle core and is not inflated when other jobs share the machine (wall time is printed too).

Examples:
    python scripts/bench_length.py
    python scripts/bench_length.py --lengths 48,192,768 --size 32 --json bench_length.json
    python scripts/bench_length.py --dense r2plus1d_18 --glimpse r2plus1d_18_glimpse --size 112 --attn none
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidattn.models import create_model  # noqa: E402


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def cpu_and_wall(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median CPU seconds and wall seconds of one forward pass (after a warm-up pass)."""
    cpu, wall = [], []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            c, w = time.process_time(), time.perf_counter()
            model(x)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="48,192,768", help="video lengths in frames")
    p.add_argument("--dense", default="r2plus1d_tiny", help="the dense model (every frame)")
    p.add_argument("--glimpse", default="r2plus1d_glimpse", help="the glimpse model")
    p.add_argument("--attn", default="stc", help="attention in the 3D-CNN of both")
    p.add_argument("--size", type=int, default=32, help="frame height = width")
    p.add_argument("--num-classes", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    attn = None if args.attn == "none" else args.attn
    models = {
        "dense": create_model(args.dense, num_classes=args.num_classes, attn=attn).eval(),
        "glimpse": create_model(args.glimpse, num_classes=args.num_classes, attn=attn).eval(),
    }
    rows = []
    for length in [int(v) for v in args.lengths.split(",")]:
        x = torch.randn(1, 3, length, args.size, args.size)
        row = {"frames": length}
        for kind, model in models.items():
            cpu, wall = cpu_and_wall(model, x, args.repeats)
            row[kind] = {"gflops": gflops(model, x), "cpu_s": cpu, "wall_s": wall}
        row["flops_ratio"] = row["glimpse"]["gflops"] / row["dense"]["gflops"]
        row["cpu_ratio"] = row["glimpse"]["cpu_s"] / row["dense"]["cpu_s"]
        rows.append(row)
        print(f"{length} frames done", file=sys.stderr)
    print(f"{args.dense} vs {args.glimpse}, attn={args.attn}, {args.size}x{args.size}, {args.threads} thread(s)\n")
    print("| frames | dense GFLOPs | glimpse GFLOPs | FLOPs ratio | dense CPU ms | glimpse CPU ms | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        d, g = r["dense"], r["glimpse"]
        print(
            f"| {r['frames']} | {d['gflops']:.3f} | {g['gflops']:.3f} | {r['flops_ratio']:.2f}x "
            f"| {d['cpu_s'] * 1e3:.0f} | {g['cpu_s'] * 1e3:.0f} | {r['cpu_ratio']:.2f}x |"
        )
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
