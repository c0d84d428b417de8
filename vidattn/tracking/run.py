"""One tracking run over a frame stream, and its outputs (`track.json`, OTB text per target).

The output contract (MISSION.md): ``DIR/track.json`` with ``{"num_frames", "fps", "targets":
[{"id", "boxes", "scores"}]}``, one ``[x, y, w, h]`` box (pixels, top-left origin) and one
confidence in [0, 1] per frame and target, a per-frame ``lost`` flag (the tracker does not see the
target: it holds the last box and searches wider), and ``DIR/target_<id>.txt`` in OTB format.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidattn._io import atomic_write_text
from vidattn.tracking.dcf import DCFTracker
from vidattn.tracking.otb import format_boxes

__all__ = ["TrackRun", "track_stream", "write_outputs"]


@dataclass
class TrackRun:
    """What a run produced: ``boxes`` (N, T, 4), ``scores`` and ``lost`` (N, T), and the time spent in the tracker."""

    boxes: np.ndarray
    scores: np.ndarray
    lost: np.ndarray
    track_time_s: float

    @property
    def num_frames(self) -> int:
        return int(self.boxes.shape[1])

    @property
    def tracking_fps(self) -> float | None:
        """Frames per second of the tracker alone (the first frame's initialisation excluded)."""
        n = self.num_frames - 1
        return n / self.track_time_s if n > 0 and self.track_time_s > 0 else None

    def document(self, fps: float, width: int, height: int, source: str) -> dict:
        """The ``track.json`` document."""
        return {
            "source": source,
            "num_frames": self.num_frames,
            "fps": round(fps, 3),
            "width": width,
            "height": height,
            "targets": [
                {
                    "id": i,
                    "boxes": [[round(float(v), 2) for v in box] for box in self.boxes[i]],
                    "scores": [round(float(v), 4) for v in self.scores[i]],
                    "lost": [bool(v) for v in self.lost[i]],
                }
                for i in range(self.boxes.shape[0])
            ],
        }


def track_stream(
    tracker: DCFTracker,
    first: torch.Tensor,
    frames: Iterable[torch.Tensor],
    init: np.ndarray,
    on_frame: Callable[[torch.Tensor, np.ndarray, np.ndarray], None] | None = None,
) -> TrackRun:
    """Initialise ``tracker`` on ``first`` with ``init`` (N, 4) and track through ``frames``.

    Args:
        tracker: A fresh tracker.
        first: The first frame, ``(H, W, 3)`` uint8.
        frames: The following frames.
        init: Initial boxes ``x, y, w, h`` pixels, one row per target.
        on_frame: Called with ``(frame, boxes (N, 4), scores (N,))`` for every frame, the first included
            (rendering, progress); not counted in the tracking time.
    """
    all_boxes = [np.asarray(init, dtype=np.float64).copy()]
    all_scores = [np.ones(len(init))]
    all_lost = [np.zeros(len(init), dtype=bool)]
    if on_frame is not None:
        on_frame(first, all_boxes[0], all_scores[0])
    t = time.perf_counter()
    tracker.init(first, torch.from_numpy(all_boxes[0]).float())
    track_time = time.perf_counter() - t
    for frame in frames:
        t = time.perf_counter()
        b, s = tracker.update(frame)
        b_np, s_np = b.cpu().double().numpy(), s.cpu().double().numpy()
        track_time += time.perf_counter() - t
        all_boxes.append(b_np)
        all_scores.append(s_np)
        all_lost.append(tracker.lost.cpu().numpy().copy())
        if on_frame is not None:
            on_frame(frame, b_np, s_np)
    return TrackRun(np.stack(all_boxes, 1), np.stack(all_scores, 1), np.stack(all_lost, 1), track_time)


def write_outputs(out: Path, doc: dict) -> None:
    """Write ``out/track.json`` and ``out/target_<id>.txt`` for the document ``doc``."""
    atomic_write_text(out / "track.json", json.dumps(doc) + "\n")
    for t in doc["targets"]:
        atomic_write_text(out / f"target_{t['id']}.txt", format_boxes(np.asarray(t["boxes"]).reshape(-1, 4)))
