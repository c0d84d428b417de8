#!/usr/bin/env python
"""Benchmark the registered vidattn models with and without attention.

For each (model, attention) pair: parameters, GFLOPs per clip
(``torch.utils.flop_counter.FlopCounterMode``, convolutions and matmuls; elementwise
ops such as gates are not counted), CPU latency at each batch size (median of repeated
forward passes, ``torch.inference_mode``), and on CUDA (when available) fp32 and bf16
throughput in clips/s. Prints a markdown table; ``--json PATH`` also writes the raw
numbers. Latency runs alternate between the variants of one model, so a busy machine
slows them alike and the relative overhead stays fair.

Examples:
    python scripts/bench_models.py --help
    python scripts/bench_models.py --models r2plus1d_18 --attn none,stc --json bench.json
    python scripts/bench_models.py --models 'r*_tiny' --frames 16 --size 64
    python scripts/bench_models.py --models all --no-latency     # params + FLOPs only
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidattn.models import create_model, list_models  # noqa: E402

DEFAULT_MODELS = "r2plus1d_18,r3d_18,mc3_18,r2plus1d_tiny,r3d_tiny,mc3_tiny"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # what to measure
    p.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated names or globs, or 'all'")
    p.add_argument("--attn", default="none,stc", help="comma-separated attention names ('none' = plain model)")
    p.add_argument("--num-classes", type=int, default=400)
    # input
    p.add_argument("--frames", type=int, default=16, help="clip length T")
    p.add_argument("--size", type=int, default=112, help="frame height = width")
    p.add_argument("--batch-sizes", default="1,8", help="CPU latency batch sizes")
    # timing
    p.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-latency", action="store_true", help="only parameters and FLOPs")
    p.add_argument("--train-step", action="store_true", help="also time forward+backward+SGD step at the largest batch")
    p.add_argument("--cuda-batch", type=int, default=32, help="batch size for CUDA throughput")
    # output
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    return p.parse_args(argv)


def resolve_models(spec: str) -> list[str]:
    names = list_models()
    if spec == "all":
        return names
    out: list[str] = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        matched = fnmatch.filter(names, part) if any(c in part for c in "*?[") else [part]
        out.extend(m for m in matched if m not in out)
    return out


def count_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def time_once(model: torch.nn.Module, x: torch.Tensor, sync: bool = False) -> float:
    start = time.perf_counter()
    model(x)
    if sync:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def cpu_latencies(
    models: dict[str, torch.nn.Module], x: torch.Tensor, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per forward for each model (all runs), interleaving the models run by run."""
    for _ in range(warmup):
        for m in models.values():
            time_once(m, x)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            times[k].append(time_once(m, x))
    return times


def train_step_latencies(
    models: dict[str, torch.nn.Module], x: torch.Tensor, repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds per forward + backward + SGD step (train mode), interleaved like :func:`cpu_latencies`."""
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(k: str) -> float:
        m = models[k].train()
        start = time.perf_counter()
        m(x).logsumexp(1).mean().backward()
        opts[k].step()
        opts[k].zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for _ in range(warmup):
        for k in models:
            step(k)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k in models:
            times[k].append(step(k))
    for m in models.values():
        m.eval()
    return {k: statistics.median(v) for k, v in times.items()}


def cuda_throughput(model: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype, repeats: int) -> float:
    model = model.cuda()
    x = x.cuda()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        for _ in range(3):
            time_once(model, x, sync=True)
        t = statistics.median(time_once(model, x, sync=True) for _ in range(max(repeats, 5)))
    model.cpu()
    return x.shape[0] / t


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    attns = [a.strip() for a in args.attn.split(",") if a.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    shape = (3, args.frames, args.size, args.size)
    rows: list[dict] = []
    for name in resolve_models(args.models):
        variants = {
            a: create_model(name, num_classes=args.num_classes, attn=None if a == "none" else a).eval() for a in attns
        }
        base = None
        per_variant: dict[str, dict] = {}
        for a, model in variants.items():
            per_variant[a] = {
                "model": name,
                "attn": a,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "gflops": count_gflops(model, torch.randn(1, *shape)),
            }
        if not args.no_latency:
            for b in batch_sizes:
                lat = cpu_latencies(variants, torch.randn(b, *shape), args.repeats, args.warmup)
                for a in attns:
                    per_variant[a][f"cpu_ms_b{b}"] = statistics.median(lat[a]) * 1e3
                    per_variant[a][f"cpu_ms_b{b}_min"] = min(lat[a]) * 1e3
        if args.train_step:
            b = max(batch_sizes)
            lat = train_step_latencies(variants, torch.randn(b, *shape), args.repeats, args.warmup)
            for a in attns:
                per_variant[a][f"cpu_train_ms_b{b}"] = lat[a] * 1e3
        if torch.cuda.is_available():
            for a, model in variants.items():
                for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    x = torch.randn(args.cuda_batch, *shape)
                    per_variant[a][f"cuda_{label}_clips_s"] = cuda_throughput(model, x, dtype, args.repeats)
        base = per_variant[attns[0]]
        for a in attns:
            row = per_variant[a]
            row["params_rel"] = row["params_m"] / base["params_m"] - 1
            row["gflops_rel"] = row["gflops"] / base["gflops"] - 1
            for b in batch_sizes:
                key = f"cpu_ms_b{b}"
                if key in row:
                    row[f"{key}_rel"] = row[key] / base[key] - 1
            rows.append(row)
        print(f"measured {name}", file=sys.stderr, flush=True)

    cols = ["model", "attn", "params (M)", "GFLOPs"]
    if not args.no_latency:
        cols += [f"CPU ms b={b}" for b in batch_sizes]
    train_key = f"cpu_train_ms_b{max(batch_sizes)}"
    if args.train_step:
        cols += [f"CPU train step ms b={max(batch_sizes)}"]
    if torch.cuda.is_available():
        cols += ["CUDA fp32 clips/s", "CUDA bf16 clips/s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        rel = r["attn"] != attns[0]

        def with_rel(v: float, key: str, spec: str, r: dict = r, rel: bool = rel) -> str:
            return f"{v:{spec}} ({r[key]:+.1%})" if rel else f"{v:{spec}}"

        cells = [
            r["model"],
            r["attn"],
            with_rel(r["params_m"], "params_rel", ".2f"),
            with_rel(r["gflops"], "gflops_rel", ".2f"),
        ]
        if not args.no_latency:
            cells += [with_rel(r[f"cpu_ms_b{b}"], f"cpu_ms_b{b}_rel", ".0f") for b in batch_sizes]
        if args.train_step:
            cells += [fmt(r.get(train_key), ".0f")]
        if torch.cuda.is_available():
            cells += [fmt(r.get("cuda_fp32_clips_s"), ".0f"), fmt(r.get("cuda_bf16_clips_s"), ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    setting = (
        f"input (B, 3, {args.frames}, {args.size}, {args.size}); {torch.get_num_threads()} CPU threads; "
        f"median of {args.repeats}; torch {torch.__version__}; {platform.processor() or platform.machine()}"
    )
    print("\n".join(lines))
    print(f"\n{setting}")
    if args.json:
        doc = {
            "setting": {
                "frames": args.frames,
                "size": args.size,
                "batch_sizes": batch_sizes,
                "repeats": args.repeats,
                "threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            },
            "results": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
