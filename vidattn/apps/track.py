"""`vidattn track`: follow objects from their first-frame boxes through a video or a frame folder.

Inputs are a video file or a folder of frames in the OTB layout (:mod:`vidattn.tracking.source`).
Initial boxes come from ``--box x,y,w,h`` (one per target) or from ``--init FILE``: an OTB
``groundtruth_rect.txt`` (its first line) or JSON (:func:`vidattn.tracking.otb.read_boxes_file`).

Outputs in ``DIR`` (:mod:`vidattn.tracking.run`): ``track.json``, ``target_<id>.txt`` in OTB format,
and with ``--render`` ``overlay.mp4`` (the frames with boxes, ids and confidences).

The tracker is :class:`vidattn.tracking.DCFTracker`, all targets in one batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vidattn.errors import VidattnError
from vidattn.tracking.otb import BoxError, read_boxes_file, validate_boxes
from vidattn.tracking.source import open_frame_source

__all__ = ["run_track"]


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
        The ``track.json`` document, plus ``out_dir``, ``elapsed_s``, ``tracking_fps``, ``overlay``
        (path or None), ``device`` and ``notes`` (boxes clipped to the frame) for the caller's
        convenience (not written to the file).

    Raises:
        VidattnError: bad input path, unreadable video, bad or missing boxes.
    """
    from vidattn.engine.distributed import resolve_device
    from vidattn.tracking import DCFConfig, DCFTracker, track_stream, write_outputs

    if (boxes is None or len(boxes) == 0) == (init_file is None):
        raise BoxError("give the initial boxes with --box x,y,w,h (repeatable) or --init FILE, not both")
    init_boxes = list(boxes) if boxes else read_boxes_file(init_file)  # type: ignore[arg-type]
    dev = resolve_device(device)
    src = open_frame_source(source)
    out = Path(out_dir) if out_dir is not None else Path(f"track_{src.path.stem or src.path.name}")
    first = next(src.frames, None)
    if first is None:
        raise VidattnError(f"{src.path}: no decodable frames")
    height, width = int(first.shape[0]), int(first.shape[1])
    notes: list[str] = []
    init = validate_boxes(init_boxes, width, height, note=notes.append)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidattnError(f"{out}: cannot create output folder ({exc.strerror or exc})") from None

    tracker = DCFTracker(config if isinstance(config, DCFConfig) else DCFConfig(), device=dev)
    overlay = out / "overlay.mp4"
    writer = bar = None
    t0 = time.perf_counter()
    try:
        if render:
            from vidattn.viz import VideoWriter

            writer = VideoWriter(overlay, fps=src.fps)
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=src.num_frames or None, unit="frame", desc=f"track {src.path.name}", leave=False)

        def on_frame(frame: torch.Tensor, b: np.ndarray, s: np.ndarray) -> None:
            if writer is not None:
                writer.write(_overlay(frame, b, s, tracker))
            if bar is not None:
                bar.update(1)

        run = track_stream(tracker, first, src.frames, init, on_frame)
    finally:
        if writer is not None:
            writer.close()
        if bar is not None:
            bar.close()

    doc = run.document(src.fps, width, height, str(src.path))
    write_outputs(out, doc)
    return {
        **doc,
        "out_dir": str(out),
        "elapsed_s": time.perf_counter() - t0,
        "tracking_fps": run.tracking_fps,
        "overlay": str(overlay) if render else None,
        "device": str(dev),
        "notes": notes,
    }


def _overlay(frame: torch.Tensor, boxes: np.ndarray, scores: np.ndarray, tracker: object) -> np.ndarray:
    from vidattn.viz import color_for, draw_boxes

    lost = getattr(tracker, "lost", None)
    lost = [False] * len(scores) if lost is None else lost.tolist()  # None before the first update
    labels = [f"{i} {s:.2f}" + (" lost" if lost[i] else "") for i, s in enumerate(scores)]
    colors = [(128, 128, 128) if lost[i] else color_for(i) for i in range(len(scores))]
    return draw_boxes(frame.numpy(), boxes, labels, colors)
