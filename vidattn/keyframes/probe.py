"""A cheap look at every decoded frame, for frame-exact cuts at sparse-sampling cost.

The sampled pass (`stream.open_frames`) decodes far more frames than it scores: every reference
frame on the way from one sample to the next. `FrameProbe` is called by the decoder for each of them
(``iter_frames(on_decoded=...)``) and keeps five numbers per frame, computed from the luma plane
without any colour conversion or resize (about 3,000 sampled pixels, some 30 us at 1080p):

- ``step``: the distance of its luma signature to the previous decoded frame's; a hard cut is one
  step that dwarfs the steps around it, motion and gradual transitions spread the change;
- ``mean``, ``std``: luma statistics in [0, 1], which see a fade pass through black;
- ``time``: the frame's presentation time (from its timestamp), so the times of variable-frame-rate
  video need no second look at the file.

- ``change``: the share of the sampled pixels whose contrast-normalised luma changed by more than
  one standard deviation since the previous decoded frame. It sees what the step averages away:
  a jump cut inside one static scene (the people moved, the room did not) changes few pixels a lot,
  once, where the frames around it change almost none.

The signature is a 16-bin histogram (Hellinger) plus a 6 x 8 grid of block means of the luma
normalised to zero mean and unit variance, so the step reacts both to what is in the picture and to
where it is, but not to a fade, which only scales the picture. Memory is 32 bytes per decoded frame.

Where no probe ran (decord, a model's exact frames, files without reliable timestamps), `luma_steps`
computes the same numbers from decoded RGB frames.
"""

from __future__ import annotations

import array
import bisect
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DenseSteps", "FrameProbe", "luma_steps"]

_ROWS, _COLS = 48, 64  # sampled pixels per frame
_GRID_R, _GRID_C = 6, 8  # block means over the sampled pixels
_BINS = 16
_Z_RANGE = 2.5  # the histogram covers +-2.5 standard deviations of luma
_LUMA_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
_RGB_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHANGE_Z = 1.0  # a pixel changed: its normalised luma moved by more than one standard deviation (noise: far less)


@dataclass
class DenseSteps:
    """Per decoded frame, in index order: ``index``, ``step`` (to the previous decoded frame; 0 for the
    first), ``mean`` and ``std`` of luma in [0, 1], ``time`` (presentation time in seconds from the
    first frame; None where unknown) and ``change`` (share of pixels that changed since the previous
    decoded frame; None where not measured)."""

    index: np.ndarray
    step: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    time: np.ndarray | None = None
    change: np.ndarray | None = None

    def between(self, lo: int, hi: int) -> DenseSteps:
        """The frames with ``lo < index <= hi``."""
        a, b = np.searchsorted(self.index, [lo, hi], side="right")
        time = None if self.time is None else self.time[a:b]
        change = None if self.change is None else self.change[a:b]
        return DenseSteps(self.index[a:b], self.step[a:b], self.mean[a:b], self.std[a:b], time, change)

    def __len__(self) -> int:
        return int(self.index.shape[0])


def _signature(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """(sqrt histogram, grid means, mean, std, normalised pixels) of a 2-D uint8 luma image, from a fixed
    grid of pixels."""
    h, w = luma.shape
    ys = (np.arange(_ROWS) * h + h // 2) // _ROWS
    xs = (np.arange(_COLS) * w + w // 2) // _COLS
    pts = luma[ys[:, None], xs[None, :]].astype(np.float32) * (1 / 255)
    mean, std = float(pts.mean()), float(pts.std())
    # Contrast-normalised: a fade only scales the picture, so its steps stay small; a cut changes it.
    z = (pts - mean) / max(std, 2 / 255)
    bins = np.clip(((z + _Z_RANGE) * (_BINS / (2 * _Z_RANGE))).astype(np.intp), 0, _BINS - 1)
    hist = np.bincount(bins.ravel(), minlength=_BINS)
    grid = z.reshape(_GRID_R, _ROWS // _GRID_R, _GRID_C, _COLS // _GRID_C).mean((1, 3))
    return np.sqrt(hist / pts.size), grid, mean, std, z


def _distance(a: tuple, b: tuple) -> float:
    """Hellinger distance of the histograms plus half the mean absolute grid difference (at most 1)."""
    hell = float(np.sqrt(max(1.0 - float(a[0] @ b[0]), 0.0)))
    return hell + min(0.5 * float(np.abs(a[1] - b[1]).mean()), 1.0)


def _changed(a: tuple, b: tuple) -> float:
    """Share of the sampled pixels whose normalised luma differs by more than `_CHANGE_Z`."""
    return float(np.count_nonzero(np.abs(a[4] - b[4]) > _CHANGE_Z)) / a[4].size


class FrameProbe:
    """``on_decoded`` callback for `VideoReader.iter_frames`: records a `DenseSteps` row per frame.

    Picklable (it runs in the decoding child process); `result()` gives the record, or None when a
    frame came in a pixel format it cannot read the luma of directly.
    """

    def __init__(self) -> None:
        # Compact columns (32 bytes a frame): a two-hour video's record is a few MB, not Python objects.
        self._index, self._time = array.array("q"), array.array("d")
        self._step, self._mean, self._std = array.array("f"), array.array("f"), array.array("f")
        self._change = array.array("f")
        self._prev: tuple | None = None
        self._ok = True

    def __call__(self, index: int, frame: Any) -> None:
        if not self._ok:
            return
        if frame.format.name not in _LUMA_FORMATS:
            self._ok = False
            return
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
        sig = _signature(luma)
        prev, self._prev = self._prev, sig
        self._index.append(int(index))
        self._step.append(_distance(prev, sig) if prev is not None else 0.0)
        self._change.append(_changed(prev, sig) if prev is not None else 0.0)
        self._mean.append(sig[2])
        self._std.append(sig[3])
        self._time.append(float(frame.time) if frame.time is not None else np.nan)

    def spawn(self) -> FrameProbe:
        """A new, empty probe for a second decoder of the same file (`vidattn.data.halves`; see `join`)."""
        return FrameProbe()

    def join(self, later: FrameProbe, at: int) -> None:
        """Make this the record one decoder would have made: this probe's rows up to frame `at`, then `later`'s
        past it. `later` looked at the frames a second decoder decoded from frame `at` on (a key frame this
        probe saw too, so the step of the next frame in `later` is the step one decoder measures)."""
        keep = bisect.bisect_right(self._index, at)
        skip = bisect.bisect_right(later._index, at)
        for name in ("_index", "_time", "_step", "_mean", "_std", "_change"):
            column = getattr(self, name)
            del column[keep:]
            column.extend(getattr(later, name)[skip:])
        self._ok = self._ok and later._ok
        self._prev = later._prev

    def result(self) -> DenseSteps | None:
        """What was recorded (None if a frame could not be read)."""
        if not self._ok or not self._index:
            return None
        index = np.frombuffer(self._index, dtype=np.int64).copy()
        time = np.frombuffer(self._time, dtype=np.float64).copy()
        # Seconds from the first frame: the decoder starts at frame 0 and outputs in presentation order.
        time = time - time[0] if index[0] == 0 and not np.isnan(time).any() else None
        step, mean, std, change = (
            np.frombuffer(c, dtype=np.float32).copy() for c in (self._step, self._mean, self._std, self._change)
        )
        return DenseSteps(index, step, mean, std, time, change)


def luma_steps(indices: list[int], frames: np.ndarray) -> DenseSteps:
    """`DenseSteps` of consecutive RGB uint8 frames ``(N, H, W, 3)`` at `indices`."""
    rows = []
    prev = None
    for index, frame in zip(indices, frames, strict=True):
        luma = np.clip(frame.astype(np.float32) @ _RGB_LUMA, 0, 255).astype(np.uint8)
        sig = _signature(luma)
        first = prev is None
        rows.append(
            (int(index), 0.0 if first else _distance(prev, sig), sig[2], sig[3], 0.0 if first else _changed(prev, sig))
        )
        prev = sig
    cols = list(zip(*rows, strict=True)) if rows else [[], [], [], [], []]
    step, mean, std, change = (np.asarray(c, dtype=np.float32) for c in cols[1:])
    return DenseSteps(np.asarray(cols[0], dtype=np.int64), step, mean, std, None, change)
