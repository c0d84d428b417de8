"""Edited videos with known shot boundaries, for tests and `scripts/eval_cuts.py`.

`compose_edit` joins shots (sequences of RGB frames) with hard cuts, fades through black and
dissolves, writes the video and returns where every boundary really is: the exact first frame of
each new shot after a hard cut, and the first and last frame of each gradual transition.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["Join", "EditTruth", "compose_edit"]


@dataclass(frozen=True)
class Join:
    """How one shot leads into the next.

    Attributes:
        kind: "cut", "fade" (the outgoing shot fades to black over `frames`, then `hold` black frames,
            then the next shot fades in over `frames`) or "dissolve" (`frames` frames blend the last
            frames of the outgoing shot into the first frames of the next).
        frames: length of each gradual part (ignored for a cut).
        hold: black frames between a fade-out and the fade-in.
    """

    kind: str = "cut"
    frames: int = 0
    hold: int = 0


@dataclass
class EditTruth:
    """Where the boundaries of a composed video are (frame indices, 0-based).

    Attributes:
        num_frames, fps: of the written video.
        cuts: first frame of each shot that starts with a hard cut.
        transitions: ``{"kind", "start", "end"}`` with `end` inclusive, for fades and dissolves.
        shots: ``[start, end]`` (inclusive) of each shot's frames that are not part of a transition.
    """

    num_frames: int = 0
    fps: float = 25.0
    cuts: list[int] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    shots: list[list[int]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _frames_and_truth(shots: Sequence[Sequence[np.ndarray]], joins: Sequence[Join], truth: EditTruth) -> Iterator:
    """Yield the composed frames in order, filling `truth` as it goes."""
    if len(joins) != max(len(shots) - 1, 0):
        raise ValueError(f"{len(shots)} shots need {max(len(shots) - 1, 0)} joins, got {len(joins)}")
    pos = 0
    carry = 0  # frames at the start of this shot already used by a dissolve
    for s, shot in enumerate(shots):
        frames = [np.asarray(f) for f in shot]
        join_in = joins[s - 1] if s > 0 else None
        join_out = joins[s] if s < len(joins) else None
        tail = join_out.frames if join_out is not None and join_out.kind in ("fade", "dissolve") else 0
        if carry + tail > len(frames):
            raise ValueError(f"shot {s} has {len(frames)} frames, fewer than its transitions use")
        first_clean = pos
        if join_in is not None and join_in.kind == "fade":
            first_clean = pos + join_in.frames
        body_end = len(frames) - tail
        for j in range(carry, body_end):
            frame = frames[j]
            if join_in is not None and join_in.kind == "fade" and j < join_in.frames:
                frame = (frame.astype(np.float32) * ((j + 1) / (join_in.frames + 1))).astype(np.uint8)
            yield frame
            pos += 1
        last_clean = pos - 1
        truth.shots.append([first_clean, last_clean])
        carry = 0
        if join_out is None:
            continue
        if join_out.kind == "cut":
            truth.cuts.append(pos)
        elif join_out.kind == "fade":
            start = pos
            for j in range(tail):
                alpha = 1 - (j + 1) / (tail + 1)
                yield (frames[body_end + j].astype(np.float32) * alpha).astype(np.uint8)
                pos += 1
            for _ in range(join_out.hold):
                yield np.zeros_like(frames[0])
                pos += 1
            # The fade-in frames are the next shot's first `frames` frames (darkened there).
            truth.transitions.append({"kind": "fade", "start": start, "end": pos + join_out.frames - 1})
        elif join_out.kind == "dissolve":
            nxt = [np.asarray(f) for f in shots[s + 1][:tail]]
            start = pos
            for j in range(tail):
                alpha = (j + 1) / (tail + 1)
                mix = frames[body_end + j].astype(np.float32) * (1 - alpha) + nxt[j].astype(np.float32) * alpha
                yield mix.round().astype(np.uint8)
                pos += 1
            truth.transitions.append({"kind": "dissolve", "start": start, "end": pos - 1})
            carry = tail
        else:
            raise ValueError(f"unknown join kind {join_out.kind!r}")
    truth.num_frames = pos


def compose_edit(
    path: str | os.PathLike,
    shots: Sequence[Sequence[np.ndarray]],
    joins: Sequence[Join],
    *,
    fps: float = 25.0,
    crf: int = 20,
) -> EditTruth:
    """Write the shots joined by `joins` to `path` (H.264) and return the truth.

    The file is reproducible (`write_video`'s ``reproducible``): the same shots and joins give the same
    bytes in every run, so a test or an evaluation on it does not depend on the encoder's state.

    Args:
        path: output video.
        shots: each shot's RGB uint8 frames, all of one size (even width and height).
        joins: ``len(shots) - 1`` joins; a fade or dissolve uses `frames` frames of both shots.
        fps: frame rate of the output.
        crf: x264 quality.
    """
    from vidattn.data.encode import write_video

    truth = EditTruth(fps=float(fps))
    write_video(path, _frames_and_truth(shots, joins, truth), fps=fps, crf=crf, reproducible=True)
    return truth
