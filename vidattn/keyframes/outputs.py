"""Writing the key frames of one video: JPEGs, contact sheet, score plot, ``keyframes.json``, ``scores.csv``.

Every file is written atomically (temp file + rename) and only inside ``out_dir/<safe stem>``.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from vidattn._io import atomic_write_bytes
from vidattn.data.decode import open_video
from vidattn.errors import VidattnError
from vidattn.keyframes.pipeline import SCORER_FREE
from vidattn.keyframes.stream import KeyframeOptions, decoder_backend

__all__ = ["clock", "safe_stem", "video_dir", "write_outputs"]


_UNSAFE = re.compile(r"[^\w.\-]+", flags=re.UNICODE)


def safe_stem(path: str | os.PathLike, limit: int = 100) -> str:
    """A folder name made from a video's file name: no separators, no leading dots, not empty."""
    stem = Path(os.fspath(path)).stem
    cleaned = _UNSAFE.sub("_", stem).strip("._-")
    return cleaned[:limit] or "video"


def _inside(child: Path, root: Path) -> bool:
    try:
        child.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def video_dir(out_dir: Path, stem: str, used: set[str]) -> Path:
    """``out_dir/<stem>`` (``<stem>-2``, ... when taken in this run or by a file or link), created; never outside."""
    name, n = stem, 1

    def taken(candidate: str) -> bool:
        target = out_dir / candidate
        return candidate in used or target.is_symlink() or (target.exists() and not target.is_dir())

    while taken(name):
        n += 1
        name = f"{stem}-{n}"
    used.add(name)
    target = out_dir / name
    if not _inside(target, out_dir):  # defence in depth: safe_stem already removed separators and dots
        raise VidattnError(f"refusing to write outside {out_dir}: {target}")
    target.mkdir(parents=True, exist_ok=True)
    return target


_THUMB_WIDTH = 320  # contact-sheet thumbnails


def _write_image(path: Path, frame: np.ndarray) -> np.ndarray:
    """Write ``frame`` as the JPEG ``path``; return its contact-sheet thumbnail (runs in a worker thread)."""
    from vidattn.viz import thumbnail

    atomic_write_bytes(path, _jpeg(frame))
    return thumbnail(frame, _THUMB_WIDTH)


def _jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _read_frames(video: str, indices: list[int], opts: KeyframeOptions, *, reference: bool) -> dict[int, np.ndarray]:
    """The key frames at ``image_size`` (exact frames), by index.

    ``reference``: the frames came from a pass that skipped non-reference frames (the training-free
    scorer's), so the decoder may skip them too on its way (exact either way; see `get_frames`).
    With PyAV two readers decode at once, the earlier half of the frames and the later half, each from
    its own key frame on: this read is the command's tail, after the whole video, and one decoder that
    reads only reference frames leaves cores idle (each frame waits for the one it refers to; on an idle
    2-core machine the whole command averaged 1.4 cores on the 10-minute benchmark clip, ffmpeg 1.6).
    """
    backend = decoder_backend(opts.backend)

    def read(part: list[int]) -> dict[int, np.ndarray]:
        with open_video(video, backend=backend, size=opts.image_size, timeout_s=opts.timeout_s) as reader:
            return dict(zip(part, reader.get_frames(part, numpy=True, skip_nonref=reference), strict=True))

    if backend != "pyav" or len(indices) < 2:  # decord: a second reader costs hundreds of MB
        return read(indices)
    half = len(indices) // 2
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidattn-keyframe-read") as pool:
        later = pool.submit(read, indices[half:])
        frames = read(indices[:half])
        frames.update(later.result())
    return frames


def write_outputs(
    doc: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    options: KeyframeOptions | None = None,
    csv_out: bool = False,
    used: set[str] | None = None,
) -> Path:
    """Write JPEGs, contact sheet, score plot, ``keyframes.json`` (and ``scores.csv``) for one video.

    Fills the ``image``, ``contact_sheet`` and ``plot`` fields of `doc` (paths relative to the
    video's folder) and returns that folder, ``out_dir/<safe stem>``.
    """
    from vidattn.viz import contact_sheet, plot_keyframe_scores

    opts = options or KeyframeOptions()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    folder = video_dir(root, safe_stem(doc["video"]), used if used is not None else set())
    keys = doc["keyframes"]
    wanted = sorted({k["frame_index"] for k in keys})
    names = {k["frame_index"]: f"keyframe_{k['rank']:02d}_f{k['frame_index']:07d}.jpg" for k in keys}
    # Two threads: the key frames are re-decoded (FFmpeg releases the GIL) while the score plot renders here,
    # then each frame's JPEG and thumbnail are made and written two at a time (Pillow releases the GIL
    # while it encodes and resizes, the OS while it syncs): this is the command's tail, after the video is read.
    with cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="vidattn-keyframe-images") as pool:
        reference = doc["scorer"] == SCORER_FREE
        pending = pool.submit(_read_frames, doc["video"], wanted, opts, reference=reference) if wanted else None
        plot = plot_keyframe_scores(
            [s["time_s"] for s in doc["scores"]],
            [s["score"] for s in doc["scores"]],
            keyframes=[(k["time_s"], k["score"], k["rank"]) for k in keys],
            cuts=[c["time_s"] for c in doc.get("cuts", [])],
            title=f"{Path(doc['video']).name}  ({doc['scorer']})",
            threshold=opts.threshold,
        )
        images = pending.result() if pending is not None else {}
        thumbs = {i: pool.submit(_write_image, folder / names[i], images.pop(i)) for i in wanted}
        thumbs = {i: job.result() for i, job in thumbs.items()}
    for key in keys:
        key["image"] = names[key["frame_index"]]
    written = set(names.values())
    for stale in folder.glob("keyframe_*.jpg"):  # from an earlier run with other settings
        if stale.name not in written:
            stale.unlink(missing_ok=True)

    by_time = sorted(keys, key=lambda k: k["frame_index"])
    sheet = contact_sheet(
        [thumbs[k["frame_index"]] for k in by_time],
        [f"#{k['rank']}  {clock(k['time_s'])}  {k['score']:.2f}" for k in by_time],
        thumb_width=_THUMB_WIDTH,
    )
    atomic_write_bytes(folder / "contact_sheet.png", _png(sheet))
    doc["contact_sheet"] = "contact_sheet.png"
    atomic_write_bytes(folder / "scores.png", plot)
    doc["plot"] = "scores.png"
    if csv_out:
        rank_of = {k["frame_index"]: k["rank"] for k in keys}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["frame_index", "time_s", "score", "keyframe_rank"])
        for s in doc["scores"]:
            writer.writerow([s["frame_index"], s["time_s"], s["score"], rank_of.get(s["frame_index"], "")])
        atomic_write_bytes(folder / "scores.csv", buf.getvalue().encode())
        doc["csv"] = "scores.csv"
    atomic_write_bytes(folder / "keyframes.json", (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())
    return folder


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # zlib level 1: a third of the time of the default level 6 on sheets of video frames, sizes within ~10 % of it.
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def clock(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m}:{s:05.2f}"
