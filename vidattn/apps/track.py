"""`vidattn track`: follow objects from their first-frame boxes through a video or a frame folder.

Inputs are a video file (decoded with :func:`vidattn.data.open_video`, streamed frame by frame)
or a folder of frames in the OTB layout (``img/0001.jpg...``, or the images directly in the
folder). Initial boxes come from ``--box x,y,w,h`` (one per target) or from ``--init FILE``: an
OTB ``groundtruth_rect.txt`` (its first line; tab, comma or space separated) or JSON.

Outputs in ``DIR``:
    - ``track.json``: ``{"num_frames", "fps", "targets": [{"id", "boxes", "scores"}]}``, one
      ``[x, y, w, h]`` box (pixels, top-left origin) and one confidence in [0, 1] per frame;
    - ``target_<id>.txt``: the boxes in OTB format, ``x,y,w,h`` per line;
    - ``overlay.mp4`` with ``--render``: the frames with boxes, ids and confidences.

The tracker is :class:`vidattn.tracking.DCFTracker`, all targets in one batch.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidattn._io import atomic_write_text
from vidattn.errors import VidattnError

__all__ = [
    "BoxError",
    "FrameSource",
    "open_frames",
    "parse_box",
    "read_boxes_file",
    "run_track",
    "validate_boxes",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FOLDER_FPS = 30.0  # frame folders carry no rate; OTB sequences are nominally 30 fps
LOW_CONFIDENCE = 0.25  # below this a target is reported as (probably) lost


class BoxError(VidattnError):
    """A malformed or impossible initial box."""


# --------------------------------------------------------------------------------- boxes
def parse_box(text: str) -> tuple[float, float, float, float]:
    """Parse ``"x,y,w,h"`` (commas, tabs or spaces) into four floats.

    Raises:
        BoxError: not four numbers, a non-finite value, or a width/height that is not positive.
    """
    parts = [p for p in re.split(r"[,\s;]+", str(text).strip()) if p]
    if len(parts) != 4:
        raise BoxError(f"box {text!r}: expected 4 numbers x,y,w,h, got {len(parts)}")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise BoxError(f"box {text!r}: x,y,w,h must be numbers") from None
    return _check_box((x, y, w, h), repr(text))


def _check_box(box: Sequence[float], what: str) -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise BoxError(f"box {what}: expected 4 numbers x,y,w,h, got {len(box)}")
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        raise BoxError(f"box {what}: x,y,w,h must be numbers") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise BoxError(f"box {what}: values must be finite")
    if w <= 0 or h <= 0:
        raise BoxError(f"box {what}: width and height must be positive (got w={w:g}, h={h:g})")
    return x, y, w, h


def read_boxes_file(path: str | os.PathLike, all_lines: bool = False) -> list[tuple[float, float, float, float]]:
    """Initial boxes from a file.

    Accepted formats:
        - text, OTB ``groundtruth_rect.txt``: one ``x y w h`` box per line, tab, comma or space
          separated; the first line is the initial box of one target (``all_lines`` returns every
          line instead, for evaluation);
        - JSON: ``[x, y, w, h]``, ``[[x, y, w, h], ...]`` (one per target), ``{"boxes": [...]}``,
          or a ``track.json`` (``{"targets": [{"boxes": [[...], ...]}]}``; each target's first box).

    Raises:
        BoxError: unreadable file, no box, or a malformed box.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise BoxError(f"{p}: cannot read boxes file ({exc.strerror or exc})") from None
    stripped = text.strip()
    if not stripped:
        raise BoxError(f"{p}: boxes file is empty")
    if p.suffix.lower() == ".json" or stripped[0] in "[{":
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise BoxError(f"{p}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        boxes = _boxes_from_json(doc, p)
        return [_check_box(b, f"{i} in {p}") for i, b in enumerate(boxes)]
    lines = [ln for ln in stripped.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not all_lines:
        lines = lines[:1]
    out = []
    for k, line in enumerate(lines, 1):
        try:
            out.append(parse_box(line))
        except BoxError as exc:
            raise BoxError(f"{p} line {k}: {exc}") from None
    return out


def _boxes_from_json(doc: object, p: Path) -> list:
    if isinstance(doc, dict):
        if "targets" in doc and isinstance(doc["targets"], list):
            boxes = []
            for t in doc["targets"]:
                if isinstance(t, dict) and isinstance(t.get("boxes"), list) and t["boxes"]:
                    boxes.append(t["boxes"][0])
                elif isinstance(t, dict) and "box" in t:
                    boxes.append(t["box"])
                else:
                    raise BoxError(f"{p}: each target needs 'boxes' or 'box'")
            doc = boxes
        elif "boxes" in doc:
            doc = doc["boxes"]
        elif "box" in doc:
            doc = doc["box"]
        else:
            raise BoxError(f"{p}: JSON object needs 'boxes', 'box' or 'targets'")
    if isinstance(doc, list) and doc and all(isinstance(v, (int, float)) for v in doc):
        doc = [doc]
    if not isinstance(doc, list) or not doc or not all(isinstance(b, (list, tuple)) for b in doc):
        raise BoxError(f"{p}: expected a box [x, y, w, h] or a list of boxes")
    return doc


def validate_boxes(boxes: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """Check initial boxes against the frame size; returns them as ``(N, 4)`` float64.

    A box may stick out of the frame, but it must overlap it by at least 2x2 pixels: the tracker
    needs to see the target in the first frame.

    Raises:
        BoxError: no boxes, a non-positive size, or a box (almost) entirely outside the frame.
    """
    if len(boxes) == 0:
        raise BoxError("no initial box given (use --box x,y,w,h or --init FILE)")
    arr = np.asarray([_check_box(b, str(i)) for i, b in enumerate(boxes)], dtype=np.float64)
    for i, (x, y, w, h) in enumerate(arr):
        ix = min(x + w, width) - max(x, 0.0)
        iy = min(y + h, height) - max(y, 0.0)
        if ix < 2 or iy < 2:
            raise BoxError(
                f"box {i} ({x:g},{y:g},{w:g},{h:g}) lies outside the {width}x{height} frame"
                " (x,y is the top-left corner in pixels)"
            )
    return arr


# --------------------------------------------------------------------------------- input
@dataclass
class FrameSource:
    """Frames of a video or a folder, streamed: ``frames`` yields ``(H, W, 3)`` uint8 tensors."""

    path: Path
    kind: str  # "video" or "folder"
    num_frames: int  # announced count (the video header's, corrected as decoding goes)
    fps: float
    width: int
    height: int
    frames: Iterator[torch.Tensor]


def _folder_images(root: Path) -> list[Path]:
    img = root / "img"
    folder = img if img.is_dir() else root
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).copy())
    except (OSError, UnidentifiedImageError) as exc:
        raise VidattnError(f"{path}: cannot read image ({exc})") from None


def open_frames(source: str | os.PathLike) -> FrameSource:
    """Open a video file or a frame folder for streaming.

    Raises:
        VidattnError: missing path, empty folder, unreadable video.
    """
    path = Path(source)
    if not path.exists():
        raise VidattnError(f"{path}: no such file or directory")
    if path.is_dir():
        files = _folder_images(path)
        if not files:
            raise VidattnError(f"{path}: no frames found (expected img/0001.jpg... or images in the folder)")
        first = _read_image(files[0])
        h, w = int(first.shape[0]), int(first.shape[1])

        def gen() -> Iterator[torch.Tensor]:
            yield first
            for f in files[1:]:
                frame = _read_image(f)
                if tuple(frame.shape[:2]) != (h, w):
                    raise VidattnError(f"{f}: frame size {frame.shape[1]}x{frame.shape[0]} differs from {w}x{h}")
                yield frame

        return FrameSource(path, "folder", len(files), FOLDER_FPS, w, h, gen())

    from vidattn.data import open_video

    reader = open_video(path)

    def gen_video() -> Iterator[torch.Tensor]:
        with reader:
            for _, frame in reader.iter_frames():
                yield frame

    return FrameSource(path, "video", reader.num_frames, float(reader.fps), reader.width, reader.height, gen_video())


def _default_out(path: Path) -> Path:
    return Path(f"track_{path.stem or path.name}")


# --------------------------------------------------------------------------------- run
def run_track(
    source: str | os.PathLike,
    boxes: Sequence[Sequence[float]] | None = None,
    init_file: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    render: bool = False,
    config: object | None = None,
    progress: bool = False,
) -> dict:
    """Track the given targets through a video or frame folder and write the outputs.

    Args:
        source: Video file or frame folder.
        boxes: Initial boxes ``x, y, w, h`` in pixels, one per target (ids follow this order).
        init_file: Alternatively, a file with the initial boxes (see :func:`read_boxes_file`).
        out_dir: Output folder; default ``./track_<stem>``.
        device: ``auto``, ``cpu`` or ``cuda``.
        render: Also write ``overlay.mp4`` with boxes, ids and confidences.
        config: A :class:`vidattn.tracking.DCFConfig`; default settings when None.
        progress: Print a progress bar to stderr.

    Returns:
        The ``track.json`` document, plus ``out_dir``, ``elapsed_s``, ``tracking_fps`` and
        ``overlay`` (path or None) for the caller's convenience (not written to the file).

    Raises:
        VidattnError: bad input path, unreadable video, bad or missing boxes.
    """
    from vidattn.tracking import DCFConfig, DCFTracker

    if (boxes is None or len(boxes) == 0) == (init_file is None):
        raise BoxError("give the initial boxes with --box x,y,w,h (repeatable) or --init FILE, not both")
    init_boxes = list(boxes) if boxes else read_boxes_file(init_file)  # type: ignore[arg-type]
    from vidattn.engine.distributed import resolve_device

    dev = resolve_device(device)
    src = open_frames(source)
    out = Path(out_dir) if out_dir is not None else _default_out(src.path)
    frames = src.frames
    first = next(frames, None)
    if first is None:
        raise VidattnError(f"{src.path}: no decodable frames")
    height, width = int(first.shape[0]), int(first.shape[1])
    init = validate_boxes(init_boxes, width, height)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidattnError(f"{out}: cannot create output folder ({exc.strerror or exc})") from None

    n_targets = len(init)
    tracker = DCFTracker(config if isinstance(config, DCFConfig) else DCFConfig(), device=dev)
    all_boxes: list[np.ndarray] = [init.copy()]
    all_scores: list[np.ndarray] = [np.ones(n_targets)]
    writer = None
    overlay = out / "overlay.mp4"
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=src.num_frames or None, unit="frame", desc=f"track {src.path.name}", leave=False)
    t0 = time.perf_counter()
    track_time = 0.0
    try:
        if render:
            from vidattn.viz import VideoWriter

            writer = VideoWriter(overlay, fps=src.fps)
            writer.write(_overlay(first, init, all_scores[0]))
        t = time.perf_counter()
        tracker.init(first, torch.from_numpy(init).float())
        track_time += time.perf_counter() - t
        if bar is not None:
            bar.update(1)
        for frame in frames:
            t = time.perf_counter()
            b, s = tracker.update(frame)
            b_np, s_np = b.cpu().double().numpy(), s.cpu().double().numpy()
            track_time += time.perf_counter() - t
            all_boxes.append(b_np)
            all_scores.append(s_np)
            if writer is not None:
                writer.write(_overlay(frame, b_np, s_np))
            if bar is not None:
                bar.update(1)
    finally:
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()

    num_frames = len(all_boxes)
    boxes_arr = np.stack(all_boxes, 1)  # (N, T, 4)
    scores_arr = np.stack(all_scores, 1)  # (N, T)
    doc = {
        "source": str(src.path),
        "num_frames": num_frames,
        "fps": round(src.fps, 3),
        "width": width,
        "height": height,
        "targets": [
            {
                "id": i,
                "boxes": [[round(float(v), 2) for v in box] for box in boxes_arr[i]],
                "scores": [round(float(v), 4) for v in scores_arr[i]],
            }
            for i in range(n_targets)
        ],
    }
    atomic_write_text(out / "track.json", json.dumps(doc) + "\n")
    for i in range(n_targets):
        lines = [",".join(f"{v:.2f}" for v in box) for box in boxes_arr[i]]
        atomic_write_text(out / f"target_{i}.txt", "\n".join(lines) + "\n")
    elapsed = time.perf_counter() - t0
    return {
        **doc,
        "out_dir": str(out),
        "elapsed_s": elapsed,
        "tracking_fps": (num_frames - 1) / track_time if num_frames > 1 and track_time > 0 else None,
        "overlay": str(overlay) if render else None,
        "device": str(dev),
    }


def _overlay(frame: torch.Tensor, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    from vidattn.viz import color_for, draw_boxes

    labels = [f"{i} {s:.2f}" + (" lost?" if s < LOW_CONFIDENCE else "") for i, s in enumerate(scores)]
    colors = [color_for(i) if s >= LOW_CONFIDENCE else (128, 128, 128) for i, s in enumerate(scores)]
    return draw_boxes(frame.numpy(), boxes, labels, colors)
