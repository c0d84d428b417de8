#!/usr/bin/env python
"""Benchmark `vidattn score`: videos/s with 0, 1 and 2 decoding workers, with and without a checkpoint.

``--engines local ray`` also runs the Ray engine (decode tasks + model actors, `--workers` of each) on
the same files in the same run, and prints its videos/s next to the local engine's. Without
``--ray-address`` one local Ray cluster (token authentication) is started before the runs, and a
warm-up run on 4 tiny clips starts its worker processes and model actors (``--cold`` skips it), so the
figures are the steady state of a long job, not its start-up. Run it where Ray's traffic stays on
loopback, e.g. ``unshare -n sh -c 'ip link set lo up && python scripts/bench_score.py ...'`` as root.

Datasets:
- ``realvids``: ../shared/realvids repeated ``--repeat`` times (through symlinks, so every copy is a
  distinct input; the bad file in it stays an error row);
- ``generated``: ``--num-generated`` H.264 clips of ``--frames`` frames at ``--height`` x ``--width``.

For each run: videos/s (wall clock, excluding start-up: inputs, model load and the DB open are
inside the run, interpreter start-up is not), decode seconds summed over workers, model seconds in
the main process, and the share of (decode + model) time spent decoding. The checkpoint, when not
given, is a freshly initialised `r2plus1d_tiny` (16 frames at 64 px), which costs the same as a
trained one. Prints a markdown table, then the JSON of every run.

Example:
    python scripts/bench_score.py --repeat 2 --num-generated 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

from vidattn.apps.score import run_score
from vidattn.data.datasets import VIDEO_EXTENSIONS
from vidattn.testing import make_index_video, shared_dir


def make_checkpoint(path: Path, clip_len: int, size: int) -> Path:
    from vidattn.config import Config
    from vidattn.engine.checkpoint import atomic_save
    from vidattn.models import create_model

    cfg = Config()
    cfg.data.clip_len, cfg.data.size, cfg.data.crop_size = clip_len, size, size
    classes = [f"class{i}" for i in range(10)]
    torch.manual_seed(0)
    model = create_model(cfg.model.name, num_classes=len(classes), attn=cfg.model.attn, head=cfg.model.head)
    state = {"format": "vidattn-checkpoint/1", "model": model.state_dict(), "classes": classes}
    atomic_save({**state, "config": cfg.to_dict()}, path)
    return path


def repeated_realvids(src: Path, dst: Path, repeat: int) -> int:
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    for r in range(repeat):
        for f in files:
            link = dst / f"copy{r}" / f.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
    return len(files) * repeat


def generated(dst: Path, n: int, frames: int, height: int, width: int) -> int:
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_index_video(dst / f"gen{i:03d}.mp4", frames, height=height, width=width)
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--realvids", type=Path, default=None, help="default: ../shared/realvids")
    parser.add_argument("--repeat", type=int, default=2, help="copies of realvids")
    parser.add_argument("--num-generated", type=int, default=32)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a fresh r2plus1d_tiny")
    parser.add_argument("--no-model", action="store_true", help="only runs without a checkpoint")
    parser.add_argument("--datasets", nargs="+", default=["realvids", "generated"])
    parser.add_argument("--engines", nargs="+", choices=["local", "ray"], default=["local"])
    parser.add_argument("--ray-address", default=None, help="existing Ray cluster [default: start a local one]")
    parser.add_argument("--cold", action="store_true", help="no warm-up: the first runs pay worker start-up")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_score_") as tmp:
        tmp = Path(tmp)
        data: dict[str, tuple[Path, int]] = {}
        if "realvids" in args.datasets:
            src = args.realvids or ((shared_dir() or Path("/nonexistent")) / "realvids")
            if src.is_dir():
                data["realvids"] = (tmp / "realvids", repeated_realvids(src, tmp / "realvids", args.repeat))
            else:
                print(f"skipping realvids: {src} not found", file=sys.stderr)
        if "generated" in args.datasets:
            n = generated(tmp / "generated", args.num_generated, args.frames, args.height, args.width)
            data["generated"] = (tmp / "generated", n)
        ckpt = None
        if not args.no_model:
            ckpt = args.checkpoint or make_checkpoint(tmp / "tiny.pt", clip_len=16, size=64)
        if "ray" in args.engines:
            from vidattn.scoring.ray_engine import connect

            connect(args.ray_address, num_cpus=os.cpu_count())  # once: cluster start-up is not a run's cost
            if not args.cold:  # start the job's worker processes and actors once, as a long run does
                warm = tmp / "warmup"
                generated(warm, 4, 16, 64, 64)
                run_score([str(warm)], tmp / "warm.sqlite", checkpoint=ckpt, progress=False, log=lambda _: None)
                run_score(
                    [str(warm)],
                    tmp / "warm-ray.sqlite",
                    checkpoint=ckpt,
                    progress=False,
                    log=lambda _: None,
                    engine="ray",
                    ray_address=args.ray_address,
                )
        plan = [(e, w) for e in args.engines for w in args.workers if not (e == "ray" and w == 0)]
        for name, (root, n) in data.items():
            for model in [None, ckpt] if ckpt else [None]:
                for engine, workers in plan:
                    db = tmp / f"{name}-{engine}-{workers}-{'m' if model else 'n'}.sqlite"
                    s = run_score(
                        [str(root)],
                        db,
                        checkpoint=model,
                        workers=workers,
                        progress=False,
                        log=lambda _: None,
                        engine=engine,
                        ray_address=args.ray_address,
                    )
                    busy = s.decode_s + s.infer_s
                    runs.append(
                        {
                            "dataset": name,
                            "videos": n,
                            "checkpoint": bool(model),
                            "engine": engine,
                            "workers": workers,
                            "videos_per_s": round(s.videos_per_s, 3),
                            "wall_s": round(s.wall_s, 2),
                            "decode_s": round(s.decode_s, 2),
                            "infer_s": round(s.infer_s, 2),
                            "decode_share": round(s.decode_s / busy, 3) if busy else None,
                            "ok": s.ok,
                            "errors": s.errors,
                        }
                    )
                    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)

    local = [r for r in runs if r["engine"] == "local"]
    base = {(r["dataset"], r["checkpoint"]): r["videos_per_s"] for r in local if r["workers"] == 0}
    same = {(r["dataset"], r["checkpoint"], r["workers"]): r["videos_per_s"] for r in local}
    cpu = f"{os.cpu_count()} CPUs, torch {torch.__version__}, {platform.processor() or platform.machine()}"
    print(f"\n`vidattn score` throughput ({cpu})\n")
    print(
        "| dataset | videos | checkpoint | engine | workers | videos/s | vs local workers=0 | vs local same workers "
        "| decode s | model s | decode share |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        ref = base.get((r["dataset"], r["checkpoint"]))
        peer = same.get((r["dataset"], r["checkpoint"], r["workers"]))
        speedup = f"{r['videos_per_s'] / ref:.2f}x" if ref else "-"
        vs_local = f"{r['videos_per_s'] / peer:.2f}x" if peer and r["engine"] != "local" else "-"
        print(
            f"| {r['dataset']} | {r['videos']} | {'yes' if r['checkpoint'] else 'no'} | {r['engine']} | "
            f"{r['workers']} | {r['videos_per_s']:.2f} | {speedup} | {vs_local} | {r['decode_s']:.1f} | "
            f"{r['infer_s']:.1f} | {r['decode_share'] if r['decode_share'] is not None else '-'} |"
        )
    result = {"machine": cpu, "runs": runs}
    print("\n" + json.dumps(result, indent=1))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
