"""Synthetic motion videos: the embedded default dataset.

Each video is a real MP4 on a textured background, of varied length (24 to 160 frames by default,
longer than a training clip). A target object (random colour, shape and size) is on screen only
during one short *event* at a random moment, of varied duration, and what it does there decides
the class:

- ``move_left`` / ``move_right`` / ``move_up`` / ``move_down``: it glides in that direction;
- ``appear`` / ``disappear``: it fades in / fades out on the spot;
- ``no_event``: no target at all, only the clutter.

Every class is the time-reversal of another (left/right, up/down, appear/disappear), so no single
frame tells the class: only the order of the event's frames does. Outside the event there is no
target, so a model has to search the whole video for the event (which is what its temporal attention
is for). The ``no_event`` class is what makes every event class a search: without it a classifier
needs only five detectors and can call the sixth class "none of the others" (a model trained on the
six event classes alone predicts ``appear`` for 90% of videos whose event was cut out, so its
attention on ``appear`` videos points anywhere). Distractors (other objects that jitter back and
forth, sensor noise, brightness flicker) make static cues useless; *decoys* (`SynthSpec.num_decoys`,
the ``hard`` preset) look like the target and have a burst of their own, but a time-symmetric one
(out and back, or fade in and out), so only the real event's direction tells the class. The event's
frames are written to ``events.csv`` (``path,label,event_start,event_end``, inclusive frame indices;
empty for ``no_event``), the ground truth for key frames, and the target's box in every frame to
``boxes.jsonl`` (``{"path", "boxes": [[x, y, w, h] or null per frame]}`` per video), the ground
truth for spatial attention (`vidattn explain`, ``scripts/eval_explain.py``).

Layout written by `generate_dataset`::

    OUT/train/<class>/<class>_0000.mp4 ...   OUT/train/events.csv   OUT/train/boxes.jsonl
    OUT/val/<class>/...                      OUT/val/events.csv     OUT/val/boxes.jsonl
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidattn._io import atomic_open, atomic_path, ensure_output_dir
from vidattn.data.encode import write_video

__all__ = [
    "CLASSES",
    "EVENT_CLASSES",
    "NO_EVENT",
    "PRESETS",
    "SynthSpec",
    "render_video",
    "render_video_boxes",
    "generate_dataset",
]

EVENT_CLASSES = ("appear", "disappear", "move_down", "move_left", "move_right", "move_up")
NO_EVENT = "no_event"
CLASSES = (*EVENT_CLASSES, NO_EVENT)
_DIRECTIONS = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}


@dataclass(frozen=True)
class SynthSpec:
    """Size and timing of the synthetic videos (object sizes and speeds scale with the frame)."""

    min_frames: int = 24  # each video's length is drawn uniformly from [min_frames, max_frames]
    max_frames: int = 160
    height: int = 32
    width: int = 32
    fps: float = 12.0
    min_event: int = 6  # the decisive event lasts between min_event and max_event frames
    max_event: int = 12
    num_distractors: int = 2  # small objects jittering back and forth for the whole video
    num_decoys: int = 0  # target look-alikes with a time-symmetric burst of their own (no class information)

    def __post_init__(self) -> None:
        if not 1 <= self.min_event <= self.max_event:
            raise ValueError(f"need 1 <= min_event <= max_event, got {self.min_event}, {self.max_event}")
        if not self.max_event + 2 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"need max_event + 2 <= min_frames <= max_frames, got {self.max_event}, {self.min_frames}, "
                f"{self.max_frames}"
            )
        if self.num_distractors < 0 or self.num_decoys < 0 or min(self.height, self.width) < 16:
            raise ValueError("need num_distractors, num_decoys >= 0 and frames at least 16x16")


#: Named generator settings: the embedded default, and a harder set (longer videos, a short
#: fixed-length event, more distractors and two decoys per video).
PRESETS = {
    "default": SynthSpec(),
    "hard": SynthSpec(min_frames=96, max_frames=384, min_event=6, max_event=6, num_distractors=4, num_decoys=2),
}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random texture: low-resolution noise upsampled, so it is not flat."""
    cell = max(2, min(h, w) // 8)
    small = rng.uniform(40, 140, size=(h // cell + 1, w // cell + 1, 3))
    big = np.kron(small, np.ones((cell, cell, 1)))[:h, :w]
    tint = rng.uniform(0.7, 1.2, size=3)
    return np.clip(big * tint, 0, 255).astype(np.float32)


def _stamp(frame: np.ndarray, cx: float, cy: float, r: int, color: np.ndarray, alpha: float, disc: bool) -> None:
    """Alpha-blend a square or disc of radius `r` centred at (cx, cy) into `frame` (in place)."""
    h, w = frame.shape[:2]
    x0, x1 = int(round(cx - r)), int(round(cx + r)) + 1
    y0, y1 = int(round(cy - r)), int(round(cy + r)) + 1
    xs0, xs1, ys0, ys1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    if xs0 >= xs1 or ys0 >= ys1 or alpha <= 0:
        return
    patch = frame[ys0:ys1, xs0:xs1]
    mask = np.ones(patch.shape[:2], dtype=np.float32)
    if disc:
        yy, xx = np.mgrid[ys0:ys1, xs0:xs1]
        mask = (((xx - cx) ** 2 + (yy - cy) ** 2) <= r * r).astype(np.float32)
    a = (alpha * mask)[..., None]
    patch[:] = patch * (1 - a) + color * a


def _symmetric(progress: float) -> float:
    """0 -> 1 -> 0 over a burst: the same played forwards and backwards."""
    return 1.0 - abs(2.0 * progress - 1.0)


def _make_decoys(
    rng: np.random.Generator,
    spec: SynthSpec,
    t_len: int,
    target_look: Callable[[], tuple[int, np.ndarray, bool, float]],
    path_start: Callable[[int, float, int, int], tuple[float, float]],
) -> list[dict]:
    """Look-alike targets with a burst of their own that looks the same played backwards (no class)."""
    decoys = []
    for _ in range(spec.num_decoys):
        d_radius, d_color, d_disc, d_travel = target_look()
        d_dx, d_dy = _DIRECTIONS[str(rng.choice(list(_DIRECTIONS)))]
        d_x, d_y = path_start(d_radius, d_travel / 2, d_dx, d_dy)
        d_len = int(rng.integers(spec.min_event, spec.max_event + 1))
        d_start = int(rng.integers(0, t_len - d_len + 1))
        decoys.append(
            dict(
                r=d_radius,
                color=d_color,
                disc=d_disc,
                travel=d_travel / 2,
                dx=d_dx,
                dy=d_dy,
                x=d_x,
                y=d_y,
                start=d_start,
                len=d_len,
                blink=bool(rng.random() < 0.5),
            )  # fmt: skip
        )
    return decoys


def _make_distractors(rng: np.random.Generator, count: int, h: int, w: int) -> list[dict]:
    """Small squares that jitter back and forth for the whole video: motion with no net direction."""
    return [
        dict(
            x=rng.uniform(8, w - 8),
            y=rng.uniform(8, h - 8),
            r=int(rng.integers(2, 5)),
            color=rng.uniform(60, 255, size=3).astype(np.float32),
            amp=rng.uniform(1, 3),
            period=rng.uniform(3, 7),
            phase=rng.uniform(0, 2 * np.pi),
            axis=rng.integers(0, 2),
        )
        for _ in range(count)
    ]


def _draw_clutter(frame: np.ndarray, t: int, distractors: list[dict], decoys: list[dict]) -> None:
    """Stamp the distractors and the decoys active at frame `t` onto `frame` (float, in place)."""
    for d in distractors:
        off = d["amp"] * np.sin(2 * np.pi * t / d["period"] + d["phase"])
        cx, cy = d["x"] + (off if d["axis"] == 0 else 0), d["y"] + (off if d["axis"] == 1 else 0)
        _stamp(frame, cx, cy, d["r"], d["color"], 1.0, disc=False)
    for d in decoys:
        if d["start"] <= t < d["start"] + d["len"]:
            bump = _symmetric((t - d["start"] + 0.5) / d["len"])
            if d["blink"]:  # fades in and out on the spot
                _stamp(frame, d["x"], d["y"], d["r"], d["color"], bump, d["disc"])
            else:  # glides out and back
                off = d["travel"] * bump
                _stamp(frame, d["x"] + d["dx"] * off, d["y"] + d["dy"] * off, d["r"], d["color"], 1.0, d["disc"])


def render_video(
    label: str, rng: np.random.Generator, spec: SynthSpec = SynthSpec()
) -> tuple[np.ndarray, int | None, int | None]:
    """Render one video of class `label` (its length and event drawn from `spec`'s ranges).

    Returns:
        frames uint8 ``(T, H, W, 3)``, and the event's first and last frame (inclusive; None for `NO_EVENT`).
    """
    frames, start, end, _ = render_video_boxes(label, rng, spec)
    return frames, start, end


def render_video_boxes(
    label: str, rng: np.random.Generator, spec: SynthSpec = SynthSpec()
) -> tuple[np.ndarray, int | None, int | None, list[list[int] | None]]:
    """`render_video`, plus the target's box in every frame: the ground truth of where to look.

    The same random draws in the same order as `render_video`, so the frames are identical.

    Returns:
        frames, event start and end (as `render_video`), and per frame the target's box ``[x, y, w, h]``
        (pixels, top-left origin, clipped to the frame: the pixels it is drawn on), or None when it is not
        on screen (outside the event, or fully transparent).
    """
    if label not in CLASSES:
        raise ValueError(f"unknown synthetic class {label!r}")
    h, w = spec.height, spec.width
    t_len = int(rng.integers(spec.min_frames, spec.max_frames + 1))
    event_len = int(rng.integers(spec.min_event, spec.max_event + 1))
    bg = _background(rng, h, w)
    start = int(rng.integers(1, t_len - event_len))
    end = start + event_len - 1
    side = min(h, w)

    def target_look() -> tuple[int, np.ndarray, bool, float]:
        radius = max(2, int(round(side * rng.uniform(0.09, 0.13))))
        color = rng.uniform(190, 255, size=3).astype(np.float32) * rng.permutation([1.0, 1.0, 0.35])
        return radius, color, bool(rng.random() < 0.5), side * rng.uniform(0.35, 0.45)

    def path_start(radius: int, travel: float, dx: int, dy: int) -> tuple[float, float]:
        # Choose the start so the whole path stays inside the frame.
        margin = radius + 2
        lo_x, hi_x = margin + max(0, -dx) * travel, w - margin - max(0, dx) * travel
        lo_y, hi_y = margin + max(0, -dy) * travel, h - margin - max(0, dy) * travel
        return rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)

    radius, color, disc, travel = target_look()  # travel: distance covered during the event
    dx, dy = _DIRECTIONS.get(label, (0, 0))
    x, y = path_start(radius, travel, dx, dy)

    decoys = _make_decoys(rng, spec, t_len, target_look, path_start)
    distractors = _make_distractors(rng, spec.num_distractors, h, w)
    frames = np.empty((t_len, h, w, 3), dtype=np.uint8)
    boxes: list[list[int] | None] = []
    for t in range(t_len):
        frame = bg * rng.uniform(0.92, 1.08)  # brightness flicker
        _draw_clutter(frame, t, distractors, decoys)
        # The target exists only during the event, so the event frames are the only ones that tell the class
        # (a model cannot just compare the first and the last frame).
        inside = start <= t <= end and label != NO_EVENT  # the same draws for every class, no target for NO_EVENT
        progress = (t - start + 1) / event_len if inside else 0.0
        if label in _DIRECTIONS:
            cx, cy, alpha = x + dx * travel * progress, y + dy * travel * progress, float(inside)
        else:
            cx, cy = x, y
            alpha = progress if label == "appear" else (1.0 - progress + 1.0 / event_len) * inside
        _stamp(frame, cx, cy, radius, color, alpha, disc)
        boxes.append(_stamp_box(cx, cy, radius, w, h) if alpha > 0 else None)
        frame += rng.normal(0, 4, size=frame.shape)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return (frames, None, None, boxes) if label == NO_EVENT else (frames, start, end, boxes)


def _stamp_box(cx: float, cy: float, r: int, w: int, h: int) -> list[int] | None:
    """``[x, y, w, h]`` of the pixels `_stamp` covers for a shape of radius `r` at (cx, cy), clipped to the frame."""
    x0, x1 = max(int(round(cx - r)), 0), min(int(round(cx + r)) + 1, w)
    y0, y1 = max(int(round(cy - r)), 0), min(int(round(cy + r)) + 1, h)
    return [x0, y0, x1 - x0, y1 - y0] if x0 < x1 and y0 < y1 else None


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    per_class: int = 80,
    val_per_class: int = 20,
    seed: int = 0,
    spec: SynthSpec = SynthSpec(),
    classes: tuple[str, ...] = CLASSES,
) -> Path:
    """Write ``OUT/{train,val}/<class>/*.mp4`` plus ``events.csv`` per split; returns OUT.

    Generation is deterministic in `seed`. A finished split (its ``events.csv`` exists and lists the
    expected number of videos, made with the same `spec` and `classes`) is kept as is, so re-running is cheap and an
    interrupted run resumes.

    Raises:
        OutputError: `out_dir` cannot be created or written (checked before any video is rendered).
    """
    out = ensure_output_dir(out_dir)
    spec_dict = dataclasses.asdict(spec)
    previous = out / "synth.json"
    try:
        record = json.loads(previous.read_text())
        same_spec = record.get("spec") == spec_dict and record.get("classes") == list(classes)
    except (OSError, ValueError, AttributeError):
        same_spec = False
    for split, count, split_seed in (("train", per_class, seed), ("val", val_per_class, seed + 1_000_003)):
        split_dir = out / split
        events_path = split_dir / "events.csv"
        expected = count * len(classes)
        done = same_spec and events_path.is_file() and sum(1 for _ in events_path.open()) - 1 == expected
        if done and (split_dir / "boxes.jsonl").is_file():
            continue
        rows, box_lines = [], []
        for ci, label in enumerate(classes):
            (split_dir / label).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                rng = np.random.default_rng([split_seed, ci, k])
                frames, start, end, boxes = render_video_boxes(label, rng, spec)
                rel = f"{label}/{label}_{k:04d}.mp4"
                if not done:  # a finished split made before boxes.jsonl existed only gets the boxes
                    with atomic_path(split_dir / rel, suffix=".tmp.mp4") as tmp:  # the muxer picks MP4 from the name
                        write_video(tmp, frames, fps=spec.fps, codec="libx264", crf=12)
                rows.append((rel, label, start, end))
                box_lines.append(json.dumps({"path": rel, "boxes": boxes}, separators=(",", ":")))
        if not done:
            with atomic_open(events_path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["path", "label", "event_start", "event_end"])
                writer.writerows(rows)
        with atomic_open(split_dir / "boxes.jsonl", "w") as f:
            f.write("\n".join(box_lines) + "\n")
    (out / "synth.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "per_class": per_class,
                "val_per_class": val_per_class,
                "classes": list(classes),
                "spec": spec_dict,
            },
            indent=1,
        )
    )
    return out
