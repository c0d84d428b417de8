"""What a file is, from its headers: a video this package decodes, or a reason to refuse it.

Everything here runs before a frame is decoded (`open_header` decodes the first one, after the checks):
text that FFmpeg would render as video, files with no video stream, still images and frames too large
to decode safely are refused with one reason.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from vidattn.errors import VideoDecodeError

V = TypeVar("V")

#: Largest frame (width x height) a reader decodes by default: 8192 x 4352, the biggest frame H.264 and HEVC
#: levels allow (level 6.2; 8K UHD is 7680 x 4320). Every real video fits; a frame this size is 53 MB as
#: YUV 4:2:0 and 107 MB as RGB, so a decoder's few reference frames stay well under a gigabyte, while a
#: crafted 16000 x 16000 MJPEG (1.5 MB on disk) made `track` peak at 13.4 GB. ``$VIDATTN_MAX_FRAME_PIXELS``
#: or ``open_video(max_pixels=...)`` changes it.
MAX_FRAME_PIXELS = 8192 * 4352
#: Demuxers (PyAV's first format name) and codecs of text and ANSI art: FFmpeg's `tty` demuxer opens any
#: ``.txt`` file as a "video" of rendered text, so these are refused as not video.
TEXT_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})

# decord prefixes (and nests) messages with "[hh:mm:ss] /path/to/source.cc:123: "; the reason is the rest.
_DECORD_NOISE = re.compile(r"\[\d\d:\d\d:\d\d\]\s*|(?:/[\w.+-]+)+\.(?:cc|cpp|h):\d+:\s*")


def _short(exc: BaseException, limit: int = 200) -> str:
    """The reason in a decoder library's exception, without the file name and source locations it adds."""
    # FFmpegError's str() repeats the file name; its strerror is the reason alone.
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split())
    text = _DECORD_NOISE.sub("", text).strip()
    return text[:limit] if text else type(exc).__name__


def max_frame_pixels(max_pixels: int | None = None) -> int:
    """The frame-size limit in pixels: `max_pixels` if given, else ``$VIDATTN_MAX_FRAME_PIXELS``, else the default.

    Raises:
        ValueError: the limit (or the environment variable) is not a positive integer.
    """
    if max_pixels is None:
        env = os.environ.get("VIDATTN_MAX_FRAME_PIXELS", "").strip()
        try:
            max_pixels = int(env) if env else MAX_FRAME_PIXELS
        except ValueError:
            raise ValueError(f"VIDATTN_MAX_FRAME_PIXELS must be a whole number of pixels, got {env!r}") from None
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    return int(max_pixels)


def is_image_demuxer(container_name: str) -> bool:
    """Whether PyAV's format name is one of FFmpeg's image demuxers (``image2``, ``jpeg_pipe``, ...)."""
    return container_name in ("image2", "image2pipe") or container_name.endswith("_pipe")


def _stream_score(stream: Any) -> int:
    """FFmpeg's rank of a video stream when none is chosen (``ffmpeg -i``'s automatic mapping).

    The most pixels wins, a stream marked default gets 5,000,000 on top, and a cover picture
    (attached_pic) ranks below everything; ties go to the first stream (fftools/ffmpeg_mux_init.c).
    """
    disposition = int(stream.disposition)
    if disposition & 1024:  # AV_DISPOSITION_ATTACHED_PIC
        return 1
    ctx = stream.codec_context
    return ctx.width * ctx.height + 5_000_000 * bool(disposition & 1)  # AV_DISPOSITION_DEFAULT


def select_video_stream(path: str, container: Any, index: int | None = None) -> Any:
    """The video stream to read: ``container.streams[index]``, or FFmpeg's best one when `index` is None.

    Raises:
        VideoDecodeError: the file has no video stream, or `index` is not one of its video streams.
    """
    videos = list(container.streams.video)
    if not videos:
        name = container.format.name.split(",")[0]
        kinds = sorted({s.type for s in container.streams})
        what = f"a {name} file with only {' and '.join(kinds)} streams" if kinds else f"a {name} file with no streams"
        raise VideoDecodeError(path, f"no video stream ({what})")
    if index is None:
        return max(videos, key=_stream_score)  # max keeps the first of equals, as FFmpeg does
    for stream in videos:
        if stream.index == index:
            return stream
    raise VideoDecodeError(path, f"stream {index} is not a video stream (video streams: {[s.index for s in videos]})")


def describe_streams(container: Any) -> list[dict[str, Any]]:
    """One record per video stream, as `probe` lists them: index, codec, size, frames, fps, disposition."""
    out = []
    for stream in container.streams.video:
        rate = stream.average_rate or stream.guessed_rate
        disposition = int(stream.disposition)
        out.append(
            {
                "index": stream.index,
                "codec": stream.codec_context.name,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "num_frames": int(stream.frames or 0),  # the header's count; 0 when it has none
                "fps": round(float(rate), 3) if rate else 0.0,
                "default": bool(disposition & 1),
                "attached_pic": bool(disposition & 1024),
            }
        )
    return out


def check_video_stream(path: str, container: Any, max_pixels: int, index: int | None = None) -> Any:
    """The open PyAV container's video stream to read (`select_video_stream`), once it is a video to decode.

    Refuses, from the headers alone (before a frame is decoded): files with no video stream (audio,
    subtitles), text that FFmpeg renders as a "video" (`TEXT_DEMUXERS`), and frames over `max_pixels`.
    A still image is refused once the frames are counted (`check_not_still`).
    """
    name = container.format.name.split(",")[0]
    stream = select_video_stream(path, container, index)
    if name in TEXT_DEMUXERS or stream.codec_context.name in TEXT_CODECS:
        raise VideoDecodeError(path, f"not a video: FFmpeg reads this file as text ({name} demuxer)")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        raise VideoDecodeError(
            path,
            f"frame size {width}x{height} ({width * height / 1e6:.1f} MP) is over the limit of "
            f"{max_pixels / 1e6:.1f} MP (set VIDATTN_MAX_FRAME_PIXELS to raise it)",
        )
    return stream


def check_not_still(path: str, container_name: str, num_frames: int) -> None:
    """An image demuxer with one frame is a photo, not a video (an MJPEG stream or image sequence is read)."""
    if is_image_demuxer(container_name) and num_frames <= 1:
        raise VideoDecodeError(path, f"a still image ({container_name}), not a video")


def file_key(source: Any, stream: int) -> tuple | None:
    """What this process's caches of a file's facts are keyed by: (device, inode, size, mtime, stream) of a
    path source, so a changed or replaced file is read again; None for bytes, file objects and unreadable paths."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, stream)


@dataclass(frozen=True)
class FirstFrame:
    """What only a decoded frame tells about a stream: the display rotation (clockwise degrees; PyAV >= 13
    puts the display matrix on frames, not on streams) and the coded size (W, H) before rotation."""

    rotation: int
    coded_size: tuple[int, int] | None


class FileCache(Generic[V]):
    """Facts about recently opened files, per process, keyed by `file_key` (so a changed file is read again) and
    bounded by the total weight of the values held, least recently used first out. Thread-safe: readers run
    in several threads (key frames re-reads with two at once)."""

    def __init__(self, max_weight: int, weigh: Callable[[V], int] = lambda value: 1) -> None:
        self.max_weight = max_weight
        self.weigh = weigh
        self._weight = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, V] = OrderedDict()

    def get(self, key: tuple | None) -> V | None:
        """The value for `key` (None: the source has no key, or nothing is kept for it)."""
        if key is None:
            return None
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def pop(self, key: tuple | None) -> V | None:
        """Take the value for `key` out (None when nothing is kept for it): for values one user at a time holds."""
        if key is None:
            return None
        with self._lock:
            value = self._entries.pop(key, None)
            if value is not None:
                self._weight -= self.weigh(value)
            return value

    def put(self, key: tuple | None, value: V) -> None:
        """Keep `value` for `key`, dropping the least recently used entries over the weight (never the last one)."""
        if key is None:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._weight -= self.weigh(old)
            self._entries[key] = value
            self._weight += self.weigh(value)
            while self._weight > self.max_weight and len(self._entries) > 1:
                _, dropped = self._entries.popitem(last=False)
                self._weight -= self.weigh(dropped)


# `FirstFrame` of recently opened files: a dataset that opens a new reader for every clip decodes a file's first
# frame once, not once per clip (on a 1080p HEVC file that decode was most of the 25 ms an open cost).
_FIRST_FRAMES: FileCache[FirstFrame] = FileCache(65_536)


def read_first_frame(source: Any, container: Any, stream: Any) -> tuple[FirstFrame | None, bool]:
    """The stream's `FirstFrame`: from this process's cache when the same file was read before, else decoded.

    Returns:
        The facts (None when no frame decodes), and whether a frame was decoded now: the demuxer has moved,
        so a caller that goes on reading from `container` rewinds first.

    Raises:
        Whatever decoding the first frame raises (a corrupt file); the caller decides what that means.
    """
    key = file_key(source, stream.index)
    known = _FIRST_FRAMES.get(key)
    if known is not None:
        return known, False
    frame = next(container.decode(stream), None)
    if frame is None:
        return None, True
    size = (frame.width, frame.height) if frame.width > 0 and frame.height > 0 else None
    facts = FirstFrame(rotation=(-int(round(getattr(frame, "rotation", 0) or 0))) % 360, coded_size=size)
    _FIRST_FRAMES.put(key, facts)  # PyAV reports the counter-clockwise correction; stored clockwise
    return facts, True


@dataclass(frozen=True)
class StreamHeader:
    """What `open_video` needs to choose a backend, read with PyAV from the headers (and the first frame).

    Attributes:
        container: PyAV's first format name ("mov", "avi", ...).
        codec: the decoder's name ("h264", ...); "unknown" when the first frame does not decode.
        reorders: the stream has B-frames (frames decode out of presentation order).
        rotation: clockwise degrees from the display matrix (0 when the first frame was not read).
        coded_size: (W, H) of the first frame before rotation; None when it was not read or does not decode.
        stream: index of the stream read (`select_video_stream`).
        streams: every video stream (`describe_streams`).
    """

    container: str
    codec: str
    reorders: bool
    stream: int = 0
    streams: tuple[dict[str, Any], ...] = ()
    rotation: int = 0
    coded_size: tuple[int, int] | None = None


def open_header(
    source: Any,
    path: str,
    max_pixels: int,
    want_first_frame: Callable[[StreamHeader], bool] = lambda header: True,
    stream_index: int | None = None,
) -> tuple[StreamHeader, Any]:
    """Open `source` (path, bytes or file object) with PyAV, check it is a video, and describe its stream.

    The first frame is decoded (for the rotation, which PyAV >= 13 puts on frames, and the coded size)
    only when `want_first_frame` says so: a caller that already knows PyAV will read the file skips it.

    Returns:
        The header, and the PyAV container still open when no frame was decoded from it (else None): a
        `PyAVReader` takes it over, as opening a small file costs as much as decoding a frame of it. File
        objects are rewound after the header, so their container is always closed.

    Raises:
        VideoDecodeError: PyAV cannot open the file, or `check_video_stream` refuses it.
    """
    import av

    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    if hasattr(src, "seek"):
        src.seek(0)
    try:
        container = av.open(os.fspath(src) if isinstance(src, (str, os.PathLike)) else src)
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(path, f"cannot open: {_short(exc)}") from None
    keep = False
    try:
        stream = check_video_stream(path, container, max_pixels, stream_index)
        header = StreamHeader(
            container=container.format.name.split(",")[0],
            codec=stream.codec_context.name,
            reorders=bool(stream.codec_context.has_b_frames),
            stream=stream.index,
            streams=tuple(describe_streams(container)),
        )
        if not want_first_frame(header):
            keep = not hasattr(source, "seek")
            return header, container if keep else None
        try:
            first, _ = read_first_frame(source, container, stream)
        except Exception:  # a broken first frame: the decord reader handles corrupt files itself
            return replace(header, codec=header.codec or "unknown"), None
        if first is None:
            return header, None
        return replace(header, rotation=first.rotation, coded_size=first.coded_size), None
    finally:
        if not keep:
            container.close()
        if hasattr(source, "seek"):
            source.seek(0)
