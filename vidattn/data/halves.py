"""Two decoders on the two halves of a long file, joined so that the result is exactly one decoder's.

A decoder that skips non-reference frames (`VideoReader.iter_frames(nearest=True)`, the sampled pass of
`vidattn keyframes`) mostly decodes a chain of frames each referring to the previous one: its frame threads
wait on each other, and it kept 1.4 of 2 cores busy where a full decode (``ffmpeg -f null``) kept 1.6
(measured on a 10-minute 1080p clip). `read_halves` runs a second decoder from a key frame near the middle
(`split_key`) at the same time, in a thread (PyAV releases the GIL while FFmpeg decodes).

Why the result is the same as one decoder's. Decoder 1 reads the wanted frames from the start; decoder 2
reads those at or after key frame K, starting there with a seek on a decoder that has skipped nothing yet.
A frame's pick (the nearest frame that decodes) depends only on which frames decode around it, and K always
decodes, so the picks below K are decoder 1's and those from K on are decoder 2's, as long as decoder 2
decodes the frames after K as decoder 1 does. That is checked where the halves meet: decoder 1 goes on past
K until it has decoded `MEETING_FRAMES` more frames, and both decoders' K and those frames must be equal pixel
for pixel, at the same indices, else (a later frame that refers back across K: an open group, a key frame
that the container marks but the codec does not, a seek that landed elsewhere; a second decoder that failed
before the end of the window) decoder 1 reads on to the end and decoder 2's frames are dropped: slower,
never different. The window is long enough that, with H.264's or HEVC's at most 16 reference frames (and
every decoded frame is one here), a frame decoded before K is no longer referred to past it; what the check
cannot see is a long-term reference, or a frame shown before K but decoded after it that is still referred
to 16 frames on (HEVC forbids the second). The picks both decoders make in the window are kept once: the
consumer keeps decoder 2's frames past decoder 1's last one. The ``on_decoded`` look at every decoded frame
is joined the same way (its ``spawn()`` and ``join(later, at)``, see `vidattn.keyframes.probe.FrameProbe`).

Memory: both decoders put frames into the caller's one bounded queue; nothing is held per half.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vidattn.data.decode.pyav_reader import PyAVReader
from vidattn.data.decode.reader import Source, VideoReader

__all__ = ["MEETING_FRAMES", "SPLIT_MIN_FRAMES", "read_halves", "split_key"]

#: Files shorter than this are read by one decoder: the second one's start (an open, a seek, its threads,
#: tens of milliseconds) would not pay back.
SPLIT_MIN_FRAMES = 300
# The split key frame lies in the middle half of the file, else the halves are too uneven to gain much.
_MIDDLE = (0.25, 0.75)
#: Frames after the split key frame that both decoders must decode alike (H.264 and HEVC keep at most 16
#: reference frames; see the module docstring). Each costs a full-size digest, ~4 ms at 1080p, in each decoder.
MEETING_FRAMES = 16


def _digest(frame: Any) -> bytes | None:
    """A digest of every pixel of a decoded frame at full size (None if PyAV cannot export its format)."""
    try:
        # SHA-1 is ~2.5x as fast as BLAKE2 here (CPU instructions); the frames are not adversarial.
        return hashlib.sha1(np.ascontiguousarray(frame.to_ndarray())).digest()
    except Exception:
        return None


def _comparable(reader: PyAVReader) -> bool:
    """Whether frames of this stream's pixel format can be compared where the halves meet (`_digest`)."""
    import av

    try:
        av.VideoFrame(16, 16, reader._stream.codec_context.pix_fmt).to_ndarray()
    except Exception:
        return False
    return True


def split_key(
    reader: VideoReader, source: Source, indices: Sequence[int], *, min_frames: int = SPLIT_MIN_FRAMES
) -> int | None:
    """The key frame where a second decoder of `source` starts (`read_halves`), or None for one decoder.

    One decoder reads short files (under `min_frames`), sources other than a path (a second decoder would
    need a second copy), other backends than PyAV, files that cannot be sought exactly or have no timestamp
    seek (GIF), files without a key frame in their middle half (one whose only key frame is the first), and
    pixel formats whose frames cannot be compared.
    """
    if not isinstance(reader, PyAVReader) or not isinstance(source, (str, os.PathLike)):
        return None
    if reader.num_frames < min_frames or not indices:
        return None
    keys = reader.key_frames()
    n = reader.num_frames
    lo, hi = _MIDDLE[0] * n, _MIDDLE[1] * n
    # A wanted frame on each side of it, else one decoder reads everything anyway.
    middle = [k for k in keys if lo <= k <= hi and indices[0] < k <= indices[-1]]
    if not middle or not _comparable(reader):
        return None
    return min(middle, key=lambda k: abs(k - n / 2))


class _Meeting:
    """What one decoder decoded where the halves meet: key frame K and the `MEETING_FRAMES` decoded after it."""

    def __init__(self, key: int, frames: int = MEETING_FRAMES) -> None:
        self.key = key
        self.seen: list[tuple[int, bytes | None]] = []  # (index, digest) from K on, in order
        self._size = frames + 1
        self._done = threading.Event()  # the window is full, or the decoder ended before

    def look(self, index: int, frame: Any) -> None:
        if self._done.is_set() or index < self.key:
            return
        self.seen.append((index, _digest(frame)))
        if self.full():
            self._done.set()

    def full(self) -> bool:
        return len(self.seen) >= self._size

    def end(self) -> None:
        self._done.set()

    def wait(self, stop: threading.Event) -> bool:
        """Wait until the window is full or the decoder ended; False if `stop` was set first."""
        while not self._done.wait(0.1):
            if stop.is_set():
                return False
        return True

    def matches(self, other: _Meeting) -> bool:
        """Both decoded K and the frames after it the same (at the same indices), pixel for pixel."""
        if not self.full() or self.seen[0][0] != self.key or any(d is None for _, d in self.seen):
            return False
        return self.seen == other.seen


def read_halves(
    reader: PyAVReader,
    source: Source,
    indices: Sequence[int],
    key: int,
    emit: Callable[[int, int, Any], bool],
    stop: threading.Event,
    on_decoded: Any = None,
) -> bool:
    """Read `indices` as `reader.iter_nearest` does, with a second decoder from key frame `key` at once.

    Args:
        reader: the open reader of `source` (decoder 1); decoder 2 opens `source` the same way.
        indices: the wanted frames, sorted; `key`: from `split_key`.
        emit: ``emit(part, index, frame) -> bool`` for each frame, from both decoders' threads, part 0 or 1;
            False stops both. The caller joins the parts: part 0, then (if this returns True) the frames of
            part 1 past part 0's last.
        stop: set by the caller to stop both decoders.
        on_decoded: decoder 1's look at every decoded frame; with ``spawn()`` and ``join(later, at)`` it
            sees decoder 2's frames too and is joined into one decoder's record.

    Returns:
        Whether the split held: False when decoder 1 read every wanted frame (part 1 is to be dropped).

    Raises:
        VideoDecodeError: a decoder failed (decoder 2 only once the split held: before, decoder 1 reads on).
    """
    first, second = _Meeting(key), _Meeting(key)
    later = on_decoded.spawn() if hasattr(on_decoded, "spawn") else None
    quit_second = threading.Event()
    failed: list[BaseException] = []

    def look_second(index: int, frame: Any) -> None:
        second.look(index, frame)
        if later is not None:
            later(index, frame)

    def run_second() -> None:
        try:
            opened = PyAVReader(
                source, size=reader.size, timeout_s=None, max_pixels=reader.max_pixels, stream=reader.stream
            )
            with opened as r2:
                wanted = [i for i in indices if i >= key]
                for index, frame in r2.iter_nearest(wanted, on_decoded=look_second, from_key=key):
                    if quit_second.is_set() or stop.is_set() or not emit(1, index, frame):
                        return
        except BaseException as exc:  # reported by decoder 1's thread (or ignored if the split does not hold)
            failed.append(exc)
        finally:
            second.end()

    def look_first(index: int, frame: Any) -> None:
        first.look(index, frame)
        if on_decoded is not None:
            on_decoded(index, frame)

    held = decided = False

    def at_meeting(index: int) -> bool:
        nonlocal held, decided
        if decided or not first.full():
            return False
        decided = True  # at the window's last frame, once
        held = second.wait(stop) and first.matches(second)
        if not held:
            quit_second.set()  # decoder 1 reads on to the end; decoder 2's frames will be dropped
        return held

    thread = threading.Thread(target=run_second, name="vidattn-second-half", daemon=True)
    thread.start()
    try:
        for index, frame in reader.iter_nearest(indices, on_decoded=look_first, stop=at_meeting):
            if stop.is_set() or not emit(0, index, frame):
                quit_second.set()
                break
        if not held:  # decoder 1 read every wanted frame (it ended before the window did, or read on)
            quit_second.set()
    except BaseException:
        quit_second.set()
        raise
    finally:
        thread.join()
    if held and failed:
        raise failed[0]
    if held and later is not None:
        on_decoded.join(later, key)
    return held
