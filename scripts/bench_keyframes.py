#!/usr/bin/env python
"""Benchmark `vidattn keyframes` against the decode limit (`ffmpeg -threads 0 -i X -f null -`).

Generates (once, cached) a 1080p H.264 clip of 60 s and one of 10 minutes, then times, side by
side and alternating so machine load hits both alike:

- ``ffmpeg -threads 0 -i X -f null -``: decoding every frame, the floor for any tool that reads
  the whole video;
- ``vidattn keyframes X --out TMP`` (the whole command: start-up, decode, scoring, JPEGs, plot),
  once per decoder backend.

Wall time and peak RSS come from the child process itself (``os.wait4``). The 10-minute clip is
the 60 s encode remuxed ten times back to back (no re-encoding), so it is a genuine 10-minute
H.264 stream at the same bitrate.

Example:
    python scripts/bench_keyframes.py --repeats 3 --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _frames(width: int, height: int, fps: int, seconds: float, seed: int = 0):
    """Camera-like synthetic footage: panning textured scenes, moving objects, a cut every ~6 s."""
    rng = np.random.default_rng(seed)
    n = int(round(fps * seconds))
    scenes = []
    for _ in range(6):
        small = rng.uniform(0, 255, size=(height // 24 + 2, width // 24 + 2, 3)).astype(np.float32)
        big = np.kron(small, np.ones((24, 24, 1), dtype=np.float32))[: height + 48, : width + 48]
        grain = rng.normal(0, 10, size=big.shape).astype(np.float32)  # texture the encoder must code
        scenes.append(np.clip(big + grain, 0, 255).astype(np.uint8))
    shot_len = fps * 6
    for i in range(n):
        scene = scenes[(i // shot_len) % len(scenes)]
        t = i % shot_len
        dx, dy = (t * 3) % 48, (t * 2) % 48  # slow pan
        frame = scene[dy : dy + height, dx : dx + width].copy()
        for k in range(3):
            x = int((width - 200) * (0.5 + 0.45 * np.sin(0.05 * i + 2 * k)))
            y = int((height - 200) * (0.5 + 0.45 * np.cos(0.07 * i + k)))
            frame[y : y + 200, x : x + 200] = (80 * k + 60, 200 - 60 * k, 120)
        yield frame


def make_clip(
    path: Path,
    seconds: float,
    *,
    width: int = 1920,
    height: int = 1080,
    fps: int = 30,
    preset: str = "veryfast",
    crf: int = 23,
) -> Path:
    """Encode a synthetic 1080p H.264 clip with PyAV (x264 `preset`), atomically."""
    import av

    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": preset, "crf": str(crf)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for array in _frames(width, height, fps, seconds):
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    os.replace(tmp, path)
    return path


def repeat_clip(src: Path, dst: Path, times: int) -> Path:
    """Remux `src` `times` times back to back into `dst` (stream copy, shifted timestamps)."""
    import av

    tmp = dst.with_suffix(".tmp.mp4")
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        duration = None
        with av.open(str(tmp), mode="w") as out:
            vout = out.add_stream_from_template(vin)
            for rep in range(times):
                inp.seek(0)
                last = 0
                for packet in inp.demux(vin):
                    if packet.dts is None:
                        continue
                    shift = rep * (duration or 0)
                    last = max(last, packet.pts + (packet.duration or 0))
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = vout
                    out.mux(packet)
                if duration is None:
                    duration = last
    os.replace(tmp, dst)
    return dst


def measure(cmd: list[str]) -> dict:
    """Run `cmd`, return wall seconds, peak RSS (MiB) of that process and its exit code."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.stderr.close()
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        print(f"command failed ({rc}): {' '.join(cmd)}\n{stderr}", file=sys.stderr)
    return {"wall_s": wall, "rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime, "rc": rc}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "vidattn-bench",
        help="where the generated clips are kept between runs",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (medians reported)")
    parser.add_argument("--long-repeats", type=int, default=1, help="runs per command on the 10-minute clip")
    parser.add_argument("--backends", default="pyav,decord", help="decoder backends to time")
    parser.add_argument(
        "--decoders",
        default="2",
        help="decoder counts of the sampled pass to time (comma list; 1 = one decoder, 2 = the default halves)",
    )
    parser.add_argument("--preset", default="veryfast", help="x264 preset for the generated clip")
    parser.add_argument("--skip-long", action="store_true", help="only the 60 s clip")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--json", dest="json_out", type=Path, default=None, help="also write results as JSON")
    args = parser.parse_args()

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print(
            "ffmpeg CLI not found: the decode limit cannot be measured (apt-get install ffmpeg); timing vidattn only.",
            file=sys.stderr,
        )
    args.cache.mkdir(parents=True, exist_ok=True)
    short = args.cache / f"bench_1080p_60s_{args.preset}.mp4"
    if not short.exists():
        t = time.perf_counter()
        make_clip(short, 60, preset=args.preset)
        print(f"generated {short} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    clips = [("1080p 60 s", short)]
    if not args.skip_long:
        long = args.cache / f"bench_1080p_10min_{args.preset}.mp4"
        if not long.exists():
            repeat_clip(short, long, 10)
        clips.append(("1080p 10 min", long))

    vidattn = [sys.executable, "-m", "vidattn.cli"]
    results = []
    for label, clip in clips:
        commands: dict[str, list[str]] = {}
        if ffmpeg:
            commands["ffmpeg -threads 0 -f null (decode limit)"] = [
                ffmpeg,
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-threads",
                "0",
                "-i",
                str(clip),
                "-f",
                "null",
                "-",
            ]
        out = Path(tempfile.mkdtemp(prefix="vidattn-bench-out-"))
        for backend in [b for b in args.backends.split(",") if b]:
            for decoders in [d for d in args.decoders.split(",") if d]:
                name = (
                    f"vidattn keyframes ({backend})"
                    if decoders == "2"
                    else f"vidattn keyframes ({backend}, {decoders} decoder)"
                )
                commands[name] = [
                    *vidattn,
                    "keyframes",
                    str(clip),
                    "--out",
                    str(out / f"{backend}{decoders}"),
                    "--backend",
                    backend,
                    "--decoders",
                    decoders,
                ]
        runs: dict[str, list[dict]] = {name: [] for name in commands}
        for _ in range(args.repeats if clip == short else args.long_repeats):
            for name, cmd in commands.items():  # alternate, so load drifts hit every command alike
                runs[name].append(measure(cmd))
        shutil.rmtree(out, ignore_errors=True)
        limit = None
        for name, rs in runs.items():
            row = {
                "clip": label,
                "command": name,
                "wall_s": statistics.median(r["wall_s"] for r in rs),
                "wall_runs": [round(r["wall_s"], 2) for r in rs],
                "cpu_s": statistics.median(r["cpu_s"] for r in rs),
                "peak_rss_mib": max(r["rss_mib"] for r in rs),
                "ok": all(r["rc"] == 0 for r in rs),
            }
            if name.startswith("ffmpeg"):
                limit = row["wall_s"]
            row["x_ffmpeg"] = row["wall_s"] / limit if limit else None
            results.append(row)

    if args.markdown:
        print("| clip | command | wall s (median) | runs | CPU s | x ffmpeg | peak RSS MiB |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            ratio = f"{r['x_ffmpeg']:.2f}" if r["x_ffmpeg"] is not None else "n/a"
            runs_s = ", ".join(f"{w:.1f}" for w in r["wall_runs"])
            print(
                f"| {r['clip']} | {r['command']} | {r['wall_s']:.1f} | {runs_s} | {r['cpu_s']:.1f} | {ratio} "
                f"| {r['peak_rss_mib']:.0f} |"
            )
    else:
        for r in results:
            print(json.dumps(r))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
