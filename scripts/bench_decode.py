#!/usr/bin/env python
"""Clips per second: the vidattn dataset + loader against raw decord, raw torchcodec and naive PyAV.

Every method decodes the same clips (the same files, the same frame indices): ``--clip-len``
frames every ``--stride`` frames at random starts drawn from ``--seed`` with vidattn's own
`RandomClipSampler` and `make_rng(seed, epoch=0, index)`, exactly what `VideoDataset` draws.

Methods:

- ``vidattn w=N``: `VideoDataset` + `build_loader(num_workers=N)` with ``--backend`` (default
  "auto": decord, or PyAV for HEVC, H.264, MPEG-4 part 2, GIF and files decord gets wrong), decoding at full size
  (``size`` = the video's short side, so no resize happens) with a centre crop to a square, in batches
  of ``--batch-size`` (the reader copies only the crop, straight into the batch). The timed epoch follows a
  warm-up epoch with persistent workers, so each worker's reader cache already holds the file, as in training.
  Workers start with ``--start-method`` (forkserver: forked workers of this long-lived process,
  which has run many decoders by then, segfaulted intermittently).
- ``decord (reader reused)``: one ``decord.VideoReader`` per file, opened once and reused, then
  ``get_batch(indices)`` per clip: the limit, and the fair comparison for vidattn's per-worker
  reader cache.
- ``decord (open per clip)``: a new ``decord.VideoReader`` for every clip.
- ``torchcodec exact|approx (reused / per clip)``: torchcodec's ``VideoDecoder`` (when installed) in its
  exact and approximate seek modes, ``get_frames_at(indices)``, opened once per file or once per clip.
- ``decord | tc exact | tc approx + crop/batch``: the reused raw readers doing the ``vidattn w=0`` row's
  work too: the same centre crop, stacked into batches of ``--batch-size`` (the crop copied into a
  preallocated batch with numpy, the fastest way measured). ``vidattn w=0`` is compared with these too.
- ``vidattn per clip``: `open_video` + `get_frames` for every clip (``--backend``), as a dataset that
  opens a new file per clip does; compared with the per-clip rows of decord and torchcodec.
- ``vidattn reader reused``: one `open_video` reader per file, opened once, then `get_frames` per clip:
  the same work as the raw reused rows (no crop, no batch), where ``vidattn w=0`` adds the loader's.
- ``naive PyAV``: open the file, decode every frame and convert it to RGB, then index (what a
  naive dataset does; to spare this machine's memory only the clip's frames are kept, which
  changes nothing in the time). It is slow, so it runs on the first ``--naive-clips`` clips only;
  the rate is comparable.

Each figure is the median over ``--repeats`` rounds; a round times every method once, one after
the other, so that load from other processes falls on all of them alike. Each pass starts once this
process's threads are idle: raw decord decodes on past each read (seconds of both cores on a long
file), which the next method would otherwise pay for. The generated videos, written once into
``--cache-dir``: 720p H.264 with B-frames (60 s, x264 "veryfast"), and with the ffmpeg CLI 1080p HEVC
(x265, B-frames), a 320x240 XviD AVI (MPEG-4 part 2, the UCF101 format) and a 320x240 GIF.

The ratios: vidattn w=0 over the best raw reused row (torchcodec in either mode, decord), issue 18's
criterion, and over the best of the "+ crop/batch" rows (the peers doing the same work); vidattn's reader
reused over the best raw reused row; and vidattn per clip over the best per-clip row of those.

Example:
    python scripts/bench_decode.py --json bench_decode.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidattn.data import RandomClipSampler, VideoDataset, VideoDecodeError, VideoRecord, build_loader, make_rng
from vidattn.data.decode import open_video
from vidattn.testing import shared_dir

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".gif", ".webm"}


def make_bench_video(cache_dir: Path, seconds: int = 60, fps: int = 30, width: int = 1280, height: int = 720) -> Path:
    """A 720p H.264 clip with real motion (moving gradients + an index band), written once."""
    import av

    path = cache_dir / f"h264_{height}p_{seconds}s.mp4"
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 2 * fps  # a key frame every 2 s, typical of camera/web video
        for i in range(seconds * fps):
            frame = np.empty((height, width, 3), dtype=np.uint8)
            frame[..., 0] = (xx + 4 * i) % 256
            frame[..., 1] = (yy + 2 * i) % 256
            frame[..., 2] = ((xx + yy) // 4 + i) % 256
            frame[: height // 8, :, :] = 255 * ((xx[: height // 8] // (width // 12)) % 2 == (i // 30) % 2)[..., None]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


#: ffmpeg CLI recipes of the other generated file classes: name -> (size, seconds, encoder arguments).
FFMPEG_CLASSES = {
    "hevc_1080p.mp4": (
        "1920x1080",
        10,
        ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=60:bframes=3:log-level=error"],
    ),
    "xvid_240p.avi": ("320x240", 20, ["-c:v", "mpeg4", "-vtag", "XVID", "-q:v", "4", "-bf", "2"]),
    "anim_240p.gif": ("320x240", 10, ["-r", "15"]),
}


def make_ffmpeg_video(cache_dir: Path, name: str) -> Path:
    """One of `FFMPEG_CLASSES`, from ffmpeg's moving test pattern, written once."""
    import subprocess

    path = cache_dir / name
    if path.exists() and path.stat().st_size > 0:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    size, seconds, codec = FFMPEG_CLASSES[name]
    tmp = path.with_name(f"tmp_{name}")
    src = f"testsrc2=size={size}:rate=30:duration={seconds}"
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src, *codec, str(tmp)]
    subprocess.run(cmd, check=True)
    tmp.rename(path)
    return path


def clip_indices(num_frames: int, num_clips: int, clip_len: int, stride: int, seed: int) -> list[list[int]]:
    """The clips `VideoDataset` draws for records 0..num_clips-1 of this file in epoch 0."""
    sampler = RandomClipSampler(clip_len, stride)
    return [list(sampler(num_frames, make_rng(seed, 0, k))[0].frame_indices) for k in range(num_clips)]


def settle(max_s: float = 10.0) -> None:
    """Wait until this process's own threads are idle before the next timed pass.

    After a read, raw decord's threads go on decoding the rest of the file (seconds of both cores on
    a long file); timed right after, the next method would pay for it.
    """
    deadline = time.perf_counter() + max_s
    while time.perf_counter() < deadline:
        t0 = time.process_time()
        time.sleep(0.05)
        if time.process_time() - t0 < 0.005:
            return


def interleaved_rates(
    passes: dict[str, Callable[[], int]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Median clips/s of each pass, timed round-robin so that load from other processes hits all alike.

    `clock` is wall time by default; ``time.process_time`` (``--cpu-time``) counts this process's CPU
    seconds, all threads together, which other processes on a shared machine do not stretch.
    """
    rates: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(repeats):
        for name, fn in passes.items():
            settle()
            t0 = clock()
            n = fn()
            rates[name].append(n / (clock() - t0))
    return {name: statistics.median(r) for name, r in rates.items()}


def bench_vidattn(path: Path, clips: list[list[int]], args: argparse.Namespace, workers: int) -> Callable[[], int]:
    backend = args.backend
    with open_video(path, backend=backend) as reader:
        short = min(reader.width, reader.height)
    records = [VideoRecord(str(path), 0)] * len(clips)
    sampler = RandomClipSampler(args.clip_len, args.stride)
    ds = VideoDataset(records, ["x"], sampler, size=short, crop="center", seed=args.seed, backend=backend)
    loader = build_loader(
        ds,
        args.batch_size,
        num_workers=workers,
        persistent_workers=True,
        pin_memory=False,
        multiprocessing_context=args.start_method if workers else None,
    )
    expected = np.array(clips)

    def epoch(check: bool = False) -> int:
        n = 0
        for batch in loader:
            if batch["errors"]:
                raise RuntimeError(f"vidattn failed on {batch['errors']}")
            if check:
                got = batch["frame_indices"][:, 0].numpy()
                if not (got == expected[batch["index"].numpy()]).all():
                    raise RuntimeError("vidattn decoded different frame indices than the other methods")
            n += batch["video"].shape[0]
        return n

    # Warm-up: start workers, fill their reader caches, and check the clips are the other methods' (every epoch
    # draws the same ones); the timed epochs check nothing, as the other methods' do not.
    epoch(check=True)
    return epoch


def bench_decord_reused(path: Path, clips: list[list[int]], args: argparse.Namespace) -> Callable[[], int]:
    import decord

    vr = decord.VideoReader(str(path))
    vr.get_batch(clips[0]).asnumpy()  # warm-up, as for vidattn

    def run() -> int:
        for idx in clips:
            vr.get_batch(idx).asnumpy()
        return len(clips)

    return run


def crop_batches(
    decode: Callable[[list[int]], np.ndarray], clips: list[list[int]], batch_size: int, size: int
) -> Callable[[], int]:
    """A peer's decoder (`decode(indices)` -> ``(T, H, W, 3)``) doing the loader's work: the centre
    ``size x size`` crop of every clip, stacked into batches of `batch_size` as vidattn's ``w=0`` row returns
    them. Done the fastest way measured: the crop copied straight into a preallocated batch with numpy
    (`torch.stack` of the cropped views cost 3x that on 320x240 clips: its copy waits for intra-op threads).
    """
    import torch

    def run() -> int:
        for start in range(0, len(clips), batch_size):
            part = clips[start : start + batch_size]
            batch = torch.empty((len(part), len(part[0]), size, size, 3), dtype=torch.uint8).numpy()
            for k, idx in enumerate(part):
                frames = decode(idx)
                h, w = frames.shape[1:3]
                top, left = (h - size) // 2, (w - size) // 2
                np.copyto(batch[k], frames[:, top : top + size, left : left + size])
        return len(clips)

    return run


def bench_decord_batch(path: Path, clips: list[list[int]], args: argparse.Namespace, size: int) -> Callable[[], int]:
    import decord

    vr = decord.VideoReader(str(path))
    vr.get_batch(clips[0]).asnumpy()  # warm-up, as for vidattn
    return crop_batches(lambda idx: vr.get_batch(idx).asnumpy(), clips, args.batch_size, size)


def bench_torchcodec_batch(
    path: Path, clips: list[list[int]], mode: str, args: argparse.Namespace, size: int
) -> Callable[[], int]:
    from torchcodec.decoders import VideoDecoder

    # Full frames, cropped after: torchcodec's own CenterCrop decoder transform was 30x slower on a 320x240 AVI.
    decoder = VideoDecoder(str(path), seek_mode=mode, dimension_order="NHWC")
    decoder.get_frames_at(clips[0])  # warm-up, as for vidattn
    return crop_batches(lambda idx: decoder.get_frames_at(idx).data.numpy(), clips, args.batch_size, size)


def bench_decord_per_clip(path: Path, clips: list[list[int]], args: argparse.Namespace) -> Callable[[], int]:
    import decord

    def run() -> int:
        for idx in clips:
            decord.VideoReader(str(path)).get_batch(idx).asnumpy()
        return len(clips)

    return run


def bench_vidattn_per_clip(path: Path, clips: list[list[int]], args: argparse.Namespace) -> Callable[[], int]:
    def run() -> int:
        for idx in clips:
            with open_video(path, backend=args.backend) as reader:
                reader.get_frames(idx, numpy=True)
        return len(clips)

    return run


def bench_vidattn_reader(path: Path, clips: list[list[int]], args: argparse.Namespace) -> Callable[[], int]:
    reader = open_video(path, backend=args.backend)
    reader.get_frames(clips[0], numpy=True)  # warm-up, as for the others

    def run() -> int:
        for idx in clips:
            reader.get_frames(idx, numpy=True)
        return len(clips)

    return run


def bench_torchcodec(path: Path, clips: list[list[int]], mode: str, *, reuse: bool) -> Callable[[], int]:
    from torchcodec.decoders import VideoDecoder

    def open_decoder() -> VideoDecoder:
        return VideoDecoder(str(path), seek_mode=mode, dimension_order="NHWC")

    decoder = open_decoder() if reuse else None
    if decoder is not None:
        decoder.get_frames_at(clips[0])  # warm-up, as for vidattn

    def run() -> int:
        for idx in clips:
            (decoder or open_decoder()).get_frames_at(idx).data.numpy()
        return len(clips)

    return run


def has_torchcodec() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchcodec") is not None


def bench_naive_pyav(path: Path, clips: list[list[int]], args: argparse.Namespace) -> Callable[[], int]:
    import av

    def run() -> int:
        for idx in clips:
            wanted, kept = set(idx), {}
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    array = frame.to_ndarray(format="rgb24")  # every frame decoded and converted...
                    if i in wanted:  # ...but only the clip's kept: a 720p minute is 5 GB of RGB
                        kept[i] = array
            np.stack([kept[i] for i in idx])
        return len(clips)

    return run


def bench_file(path: Path, num_clips: int, args: argparse.Namespace) -> dict:
    with open_video(path, backend="decord") as reader:
        num_frames, w, h = reader.num_frames, reader.width, reader.height
        span = (args.clip_len - 1) * args.stride + 1
        if num_frames < span:
            raise VideoDecodeError(path, f"{num_frames} frames, shorter than one clip ({span})")
        clips = clip_indices(num_frames, num_clips, args.clip_len, args.stride, args.seed)
        reader.get_frames(sorted({i for c in clips for i in c}))  # every file must decode these frames
    with open_video(path, backend=args.backend) as reader:
        decoder = reader.backend  # the one vidattn's loader uses for this file
    row = {"file": str(path), "size": f"{w}x{h}", "decoder": decoder, "frames": num_frames, "clips": len(clips)}
    passes = {f"vidattn_w{workers}": bench_vidattn(path, clips, args, workers) for workers in args.workers}
    passes["decord_batch"] = bench_decord_batch(path, clips, args, min(w, h))
    passes["vidattn_reader"] = bench_vidattn_reader(path, clips, args)
    passes["decord_reused"] = bench_decord_reused(path, clips, args)
    passes["decord_per_clip"] = bench_decord_per_clip(path, clips, args)
    passes["vidattn_per_clip"] = bench_vidattn_per_clip(path, clips, args)
    if has_torchcodec():
        for mode, short_mode in (("exact", "exact"), ("approximate", "approx")):
            passes[f"tc_{short_mode}_batch"] = bench_torchcodec_batch(path, clips, mode, args, min(w, h))
            passes[f"tc_{short_mode}_reused"] = bench_torchcodec(path, clips, mode, reuse=True)
            passes[f"tc_{short_mode}_per_clip"] = bench_torchcodec(path, clips, mode, reuse=False)
    passes["naive_pyav"] = bench_naive_pyav(path, clips[: args.naive_clips], args)
    row.update(interleaved_rates(passes, args.repeats, time.process_time if args.cpu_time else time.perf_counter))
    return row


def methods(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(result key, column title) of every timed method, in table order."""
    out = [(f"vidattn_w{w}", f"vidattn w={w}") for w in args.workers]
    out += [("decord_batch", "decord + crop/batch")]
    if has_torchcodec():
        out += [("tc_exact_batch", "tc exact + crop/batch"), ("tc_approx_batch", "tc approx + crop/batch")]
    out += [("vidattn_reader", "vidattn reader reused"), ("decord_reused", "decord reused")]
    if has_torchcodec():
        out += [("tc_exact_reused", "tc exact reused"), ("tc_approx_reused", "tc approx reused")]
    out += [("vidattn_per_clip", "vidattn per clip"), ("decord_per_clip", "decord per clip")]
    if has_torchcodec():
        out += [("tc_exact_per_clip", "tc exact per clip"), ("tc_approx_per_clip", "tc approx per clip")]
    return out + [("naive_pyav", "naive PyAV")]


def _ratios(row: dict) -> None:
    reused = [row[k] for k in ("decord_reused", "tc_exact_reused", "tc_approx_reused") if k in row]
    per_clip = [row[k] for k in ("decord_per_clip", "tc_exact_per_clip", "tc_approx_per_clip") if k in row]
    batched = [row[k] for k in ("decord_batch", "tc_exact_batch", "tc_approx_batch") if k in row]
    row["w0_vs_best"] = row["vidattn_w0"] / max(reused)  # issue 18's criterion, against the raw decoders
    row["w0_vs_best_batch"] = row["vidattn_w0"] / max(batched)
    row["reader_vs_best"] = row["vidattn_reader"] / max(reused)
    row["per_clip_vs_best"] = row["vidattn_per_clip"] / max(per_clip)
    row["w0_vs_naive"] = row["vidattn_w0"] / row["naive_pyav"]


def summarise(rows: list[dict], keys: list[str]) -> dict:
    """Ratios per file and, over files, total clips / total time (a clip-weighted rate)."""
    for row in rows:
        _ratios(row)
    if not rows:
        return {}
    # Time to decode one clip of each file, summed: the rate over a set with one clip per file.
    total = {k: sum(1 / r[k] for r in rows) for k in keys}
    out = {k: len(rows) / total[k] for k in keys}
    _ratios(out)
    return out


def markdown(rows: list[dict], summary: dict | None, cols: list[tuple[str, str]]) -> str:
    ratios = [
        ("w0_vs_best", "w=0 / best(tc, decord)", ".2f"),
        ("w0_vs_best_batch", "w=0 / best + crop/batch", ".2f"),
        ("reader_vs_best", "reader reused / best", ".2f"),
        ("per_clip_vs_best", "per clip / best", ".2f"),
        ("w0_vs_naive", "w=0 / naive", ".1f"),
    ]
    titles = [t for _, t in cols] + [t for _, t, _ in ratios]
    lines = [
        "| file | size | vidattn decoder | clips | " + " | ".join(titles) + " |",
        "|---|---|---|---|" + "---|" * len(titles),
    ]

    def fmt(row: dict, name: str, size: str, decoder: str, clips: str) -> str:
        vals = [f"{row[k]:.1f}" for k, _ in cols] + [f"{row[k]:{spec}}x" for k, _, spec in ratios]
        return f"| {name} | {size} | {decoder} | {clips} | " + " | ".join(vals) + " |"

    for row in rows:
        lines.append(fmt(row, Path(row["file"]).name, row["size"], row["decoder"], str(row["clips"])))
    if summary:
        lines.append(fmt(summary, "**realvids (one clip per file)**", "mixed", "-", "-"))
    return "\n".join(lines)


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """Options shared with the other decode benchmarks: which files, which clips, how many rounds."""
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/vidattn-bench"), help="generated video cache")
    parser.add_argument("--realvids", type=Path, default=None, help="default: <shared>/realvids when present")
    parser.add_argument("--no-generated", action="store_true", help="only the realvids files")
    parser.add_argument("--clips", type=int, default=24, help="clips from the generated video")
    parser.add_argument("--clips-real", type=int, default=8, help="clips from each realvids file")
    parser.add_argument("--clip-len", type=int, default=16)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)


def realvids_files(args: argparse.Namespace) -> list[Path]:
    """The video files under ``--realvids`` (default: the shared folder's realvids, when present)."""
    root = args.realvids or ((shared_dir() or Path("/nonexistent")) / "realvids")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTS) if root.is_dir() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(parser)
    parser.add_argument("--no-realvids", action="store_true", help="only the generated 720p clip")
    parser.add_argument("--naive-clips", type=int, default=2, help="clips naive PyAV decodes per file")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "decord", "pyav", "torchcodec"], help="the loader's decoder"
    )
    parser.add_argument(
        "--start-method",
        default="forkserver",
        choices=["fork", "forkserver", "spawn"],
        help="loader worker start method; this long-lived process forks after many decoders ran",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="clips per CPU second of this process (all threads) instead of per wall second: for a shared machine",
    )
    args = parser.parse_args(argv)
    if 0 not in args.workers:
        args.workers = [0, *args.workers]
    keys = [k for k, _ in methods(args)]

    result: dict = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": _cpus()},
        "generated": [],
        "realvids": [],
        "skipped": [],
    }
    if not args.no_generated:
        t0 = time.perf_counter()
        videos = [make_bench_video(args.cache_dir)] + [make_ffmpeg_video(args.cache_dir, n) for n in FFMPEG_CLASSES]
        print(f"generated videos in {args.cache_dir} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        for video in videos:
            result["generated"].append(bench_file(video, args.clips, args))
            print(f"done {video.name}", file=sys.stderr)
            save_partial(result, args)
        summarise(result["generated"], keys)
    real = [] if args.no_realvids else realvids_files(args)
    if real:
        for path in real:
            try:
                row = bench_file(path, args.clips_real, args)
            except (VideoDecodeError, RuntimeError) as exc:
                result["skipped"].append({"file": str(path), "reason": str(exc)})
                print(f"skip {path}: {exc}", file=sys.stderr)
                continue
            result["realvids"].append(row)
            print(f"done {path.name}", file=sys.stderr)
            save_partial(result, args)
        result["realvids_summary"] = summarise(result["realvids"], keys)

    table = markdown(result["generated"] + result["realvids"], result.get("realvids_summary"), methods(args))
    unit = "clips per CPU second" if args.cpu_time else "clips/s"
    print(f"{unit} ({args.clip_len} frames, stride {args.stride}, seed {args.seed}; median of {args.repeats})\n")
    print(table)
    result["markdown"] = table
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def save_partial(result: dict, args: argparse.Namespace) -> None:
    """Write the rows so far to ``--json``: a long run stopped part-way keeps what it measured."""
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
