"""The PyAV reader with and without leaving unreferenced pictures out of the decoder, side by side.

For each H.264 / HEVC file (the generated 720p clip of `bench_decode.py` and ../shared/realvids),
the same strided clips as `bench_decode.py` (``--clip-len`` frames every ``--stride``, random starts
from ``--seed``) are read in order through one PyAV reader per method, opened and indexed before the
clock starts (as a worker's reader cache holds them):

- ``leave out``: what `open_video(..., backend="pyav")` does: pictures nothing references, and that
  a read does not return, never reach the decoder;
- ``decode all``: the same reader with that switched off (every picture between the key frame and
  the last wanted frame is decoded, as before);
- ``decord``: raw ``decord.VideoReader.get_batch`` on the same clips, for reference.

It prints clips/s (median of ``--repeats`` interleaved rounds, each pass starting with this process
idle, as in `bench_decode.py`), the pictures each PyAV method sent through the decoder, and the
one-time index pass (demux + NAL header scan) in ms.

Example:
    python scripts/bench_pyav_skip.py --repeats 5 --json skip.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench_decode import add_input_args, clip_indices, interleaved_rates, make_bench_video, realvids_files

from vidattn.data import VideoDecodeError, open_video


def _pyav_pass(path: Path, clips: list[list[int]], leave_out: bool) -> tuple[Callable[[], int], list[int], float]:
    """A timed pass over `clips` on one indexed PyAV reader; a counter of decoded pictures; index ms."""
    reader = open_video(path, backend="pyav")
    t0 = time.perf_counter()
    reader.can_seek()  # the demux pass that builds the seek index and reads the NAL headers
    index_ms = 1e3 * (time.perf_counter() - t0)
    if not leave_out:
        reader._nonref = frozenset()  # the reader as it was before it left pictures out
    decoded = [0]
    real = reader._decode

    def counting():  # pass-through: counts the frames the real decoder outputs
        for frame in real():
            decoded[0] += 1
            yield frame

    reader._decode = counting
    reader._restart(force=True)

    def run() -> int:
        for idx in clips:
            reader.get_frames(idx, numpy=True)
        return len(clips)

    return run, decoded, index_ms


def _decord_pass(path: Path, clips: list[list[int]]) -> Callable[[], int]:
    import decord

    vr = decord.VideoReader(str(path))

    def run() -> int:
        for idx in clips:
            vr.get_batch(idx).asnumpy()
        return len(clips)

    return run


def bench_file(path: Path, num_clips: int, args: argparse.Namespace) -> dict | None:
    with open_video(path, backend="pyav") as reader:
        codec, n, size = reader.codec, reader.num_frames, f"{reader.width}x{reader.height}"
    span = (args.clip_len - 1) * args.stride + 1
    if codec not in ("h264", "hevc") or n < span:
        return None
    clips = clip_indices(n, num_clips, args.clip_len, args.stride, args.seed)
    leave, leave_count, index_ms = _pyav_pass(path, clips, True)
    full, full_count, _ = _pyav_pass(path, clips, False)
    passes = {"leave_out": leave, "decode_all": full}
    with contextlib.suppress(ImportError):  # decord2 has no wheel on some platforms
        passes["decord"] = _decord_pass(path, clips)
    row = {"file": path.name, "codec": codec, "size": size, "frames": n, "clips": len(clips)}
    row.update(interleaved_rates(passes, args.repeats))
    row["decoded_leave_out"] = leave_count[0] // args.repeats
    row["decoded_all"] = full_count[0] // args.repeats
    row["index_ms"] = index_ms
    row["speedup"] = row["leave_out"] / row["decode_all"]
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| file | codec | size | leave out | decode all | decord | speed-up | pictures decoded | index pass |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        decord = f"{r['decord']:.1f}" if "decord" in r else "-"
        lines.append(
            f"| {r['file']} | {r['codec']} | {r['size']} | {r['leave_out']:.1f} | {r['decode_all']:.1f} | {decord} "
            f"| {r['speedup']:.2f}x | {r['decoded_leave_out']} / {r['decoded_all']} | {r['index_ms']:.0f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(parser)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    files: list[tuple[Path, int]] = []
    if not args.no_generated:
        files.append((make_bench_video(args.cache_dir), args.clips))
    files += [(p, args.clips_real) for p in realvids_files(args)]
    rows = []
    for path, num_clips in files:
        try:
            row = bench_file(path, num_clips, args)
        except VideoDecodeError as exc:
            print(f"skip {path.name}: {exc.reason}", file=sys.stderr)
            continue
        if row is not None:
            rows.append(row)
            print(f"done {path.name}", file=sys.stderr)
    table = markdown(rows)
    print(f"clips/s ({args.clip_len} frames, stride {args.stride}, seed {args.seed}; median of {args.repeats})\n")
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
