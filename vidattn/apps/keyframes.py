"""`vidattn keyframes`: wiring from the command line to `vidattn.keyframes` (score, write, print).

The work lives in the domain package: `vidattn.keyframes.pipeline.score_video` scores and selects the
key frames of one video, `vidattn.keyframes.outputs.write_outputs` writes its files. This module
expands the inputs, loads a model when asked, runs both per video, and prints one line (or one JSON
document) per video and one error line per bad file.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import sys
import threading
from collections.abc import Callable, Sequence

from vidattn.apps import prepare_out_dir, report_failure
from vidattn.data.prefetch import PrefetchedFrames
from vidattn.errors import VidattnError
from vidattn.keyframes.outputs import clock, write_outputs
from vidattn.keyframes.pipeline import KeyframeOptions, expand_globs, score_video

__all__ = ["run_keyframes"]


def _fix_mmap_threshold() -> None:
    """Stop glibc's heap from growing with the video's length (Linux only; a no-op elsewhere).

    glibc raises its mmap threshold after a large block is freed (up to 32 MB), so afterwards the
    multi-MB per-batch buffers come from the heap, which fragments: RSS grew by about 1 MB per
    second of 1080p video (measured). A fixed threshold keeps big buffers in mmap, unmapped on free.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # musl or another libc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD


def run_keyframes(
    inputs: Sequence[str],
    *,
    options: KeyframeOptions | None = None,
    checkpoint: str | None = None,
    out_dir: str | None = None,
    as_json: bool = False,
    csv_out: bool = False,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = print,
    started: tuple[str, PrefetchedFrames] | None = None,
) -> int:
    """Key frames for every input; one error line per bad file, the others go on.

    `started` is ``(path, open_frames(path, options))`` when the caller already started decoding the
    first input (the CLI does, before importing this module); it is used for that path, or closed.

    Returns:
        The number of inputs that failed (the CLI exits non-zero when it is positive).
    """
    try:
        opts = options or KeyframeOptions()
        _fix_mmap_threshold()
        if out_dir is not None:
            from vidattn.viz import preload

            threading.Thread(target=preload, name="vidattn-preload", daemon=True).start()
        if csv_out and out_dir is None:
            raise VidattnError("--csv needs --out DIR")
        model = None
        if checkpoint:
            from vidattn.engine.distributed import resolve_device
            from vidattn.keyframes.model import KeyframeModel

            model = KeyframeModel.load(checkpoint, resolve_device(opts.device))
        if out_dir is not None:
            prepare_out_dir(out_dir)  # a read-only or full folder: one line naming it, before any decoding
        failures = 0
        used: set[str] = set()
        for path in expand_globs(inputs):
            frames = None
            if started is not None and started[0] == path and model is None:
                frames, started = started[1], None
            try:
                doc = score_video(path, opts, model, frames)
                folder = write_outputs(doc, out_dir, options=opts, csv_out=csv_out, used=used) if out_dir else None
            except VidattnError as exc:
                failures += 1
                report_failure(path, exc, as_json=as_json, out=out, err=err)
                continue
            except OSError as exc:  # disk full, permission denied on the output side
                failures += 1
                err(f"Error: {path}: {exc.strerror or exc}")
                continue
            if as_json:
                out(json.dumps(doc, ensure_ascii=False, allow_nan=False))
            else:
                where = f" -> {folder}" if folder is not None else ""
                out(f"{path}: {len(doc['keyframes'])} key frames, {doc['num_shots']} shots{where}")
                for key in doc["keyframes"]:
                    when = clock(key["time_s"])
                    out(f"  #{key['rank']:<3d} frame {key['frame_index']:>7d}  {when:>10s}  {key['score']:.3f}")
        return failures
    finally:
        if started is not None:  # not consumed (an early error, or the path was not among the inputs)
            started[1].close()
