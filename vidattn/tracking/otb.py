"""Boxes and sequences in the OTB layout, read and written in one place.

The OTB benchmark (Wu, Lim and Yang, "Object Tracking Benchmark", TPAMI 2015) stores a sequence as
a folder of frames ``img/0001.jpg...`` and a ``groundtruth_rect.txt`` with one ``x y w h`` box per
line (tab, comma or space separated; pixels, top-left origin). `vidattn track` reads such folders
and the first box of such files, writes each target's boxes in the same text format, and the
evaluation script and the sequence generator read and write whole sequences with it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vidattn.errors import VidattnError

__all__ = [
    "BoxError",
    "IMAGE_EXTENSIONS",
    "MIN_BOX_SIDE",
    "format_boxes",
    "frame_paths",
    "load_sequence",
    "parse_box",
    "read_boxes_file",
    "read_image",
    "validate_boxes",
    "write_sequence",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MIN_BOX_SIDE = 2.0  # pixels of a box that must lie inside the first frame: the tracker needs to see the target

Box = tuple[float, float, float, float]


class BoxError(VidattnError):
    """A malformed or impossible initial box."""


# --------------------------------------------------------------------------------- boxes
def parse_box(text: str) -> Box:
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


def _check_box(box: Sequence[float], what: str) -> Box:
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


def validate_boxes(
    boxes: Sequence[Sequence[float]], width: int, height: int, note: Callable[[str], None] | None = None
) -> np.ndarray:
    """Check initial boxes against the frame size and clip them to it; returns ``(N, 4)`` float64.

    A box that sticks out of the frame is clipped to the part inside (``note`` is told, with the box
    before and after). The part inside must be at least ``MIN_BOX_SIDE`` pixels on each side.

    Args:
        boxes: ``x, y, w, h`` pixels per target.
        width: Frame width in pixels.
        height: Frame height in pixels.
        note: Called with one line per clipped box (None: clip silently).

    Raises:
        BoxError: no boxes, a non-positive size, a box entirely outside the frame, or one whose
            part inside the frame is smaller than the minimum size.
    """
    if len(boxes) == 0:
        raise BoxError("no initial box given (use --box x,y,w,h or --init FILE)")
    arr = np.asarray([_check_box(b, str(i)) for i, b in enumerate(boxes)], dtype=np.float64)
    out = arr.copy()
    for i, (x, y, w, h) in enumerate(arr):
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(width)), min(y + h, float(height))
        given = f"box {i} ({x:g},{y:g},{w:g},{h:g})"
        if x1 <= x0 or y1 <= y0:
            raise BoxError(f"{given} lies outside the {width}x{height} frame (x,y is the top-left corner in pixels)")
        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            inside = "" if (x0, y0, x1, y1) == (x, y, x + w, y + h) else " inside the frame"
            raise BoxError(
                f"{given} is {x1 - x0:g}x{y1 - y0:g} px{inside}: the minimum target size is"
                f" {MIN_BOX_SIDE:g}x{MIN_BOX_SIDE:g} px"
            )
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            out[i] = (x0, y0, x1 - x0, y1 - y0)
            if note is not None:
                note(
                    f"{given} sticks out of the {width}x{height} frame; tracking the part inside:"
                    f" {x0:g},{y0:g},{x1 - x0:g},{y1 - y0:g}"
                )
    return out


def format_boxes(boxes: np.ndarray) -> str:
    """One target's boxes ``(T, 4)`` as OTB text: ``x,y,w,h`` per line, two decimals."""
    return "".join(",".join(f"{v:.2f}" for v in box) + "\n" for box in np.asarray(boxes, dtype=np.float64))


# --------------------------------------------------------------------------------- files
def read_boxes_file(path: str | os.PathLike, all_lines: bool = False) -> list[Box]:
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


def frame_paths(root: str | os.PathLike) -> list[Path]:
    """The frames of a sequence folder in order: ``root/img/*`` when there is ``img/``, else ``root/*``."""
    root = Path(root)
    img = root / "img"
    folder = img if img.is_dir() else root
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (a writable array).

    Raises:
        VidattnError: the file cannot be read or decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise VidattnError(f"{path}: cannot read image ({exc})") from None


def load_sequence(root: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (RGB uint8) and ground truth ``(T, 4)`` of an OTB folder, cut to the shorter of the two.

    Raises:
        VidattnError: no frames, or an unreadable ``groundtruth_rect.txt``.
    """
    root = Path(root)
    paths = frame_paths(root)
    if not paths:
        raise VidattnError(f"{root}: no frames found (expected img/0001.jpg... or images in the folder)")
    gt = read_boxes_file(root / "groundtruth_rect.txt", all_lines=True)
    n = min(len(paths), len(gt))
    return [read_image(p) for p in paths[:n]], np.asarray(gt[:n], dtype=np.float64)


def write_sequence(out_dir: str | os.PathLike, frames: Sequence[np.ndarray], boxes: np.ndarray) -> Path:
    """Write an OTB folder: ``img/0001.jpg...`` (JPEG quality 95) and ``groundtruth_rect.txt`` of ``boxes`` (T, 4)."""
    from PIL import Image

    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(np.asarray(frame)).save(out / "img" / f"{i + 1:04d}.jpg", quality=95)
    (out / "groundtruth_rect.txt").write_text(format_boxes(boxes))
    return out
