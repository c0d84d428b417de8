"""The PyAV (FFmpeg) reader: exact frame indices by counting or by timestamps, and the picture scan
that lets it leave unreferenced H.264/HEVC pictures out of the decoder."""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from vidattn.data import bitstream
from vidattn.data.decode.direct_rgb import DirectRGB
from vidattn.data.decode.header import (
    FileCache,
    _short,
    check_not_still,
    check_video_stream,
    describe_streams,
    file_key,
    read_first_frame,
)
from vidattn.data.decode.reader import (
    DEFAULT_TIMEOUT_S,
    Crop,
    Size,
    Source,
    VideoReader,
    _output_size,
    check_deadline,
    crop_view,
)
from vidattn.errors import VideoDecodeError

#: Containers where PyAV's timestamp seeks are not frame-exact (MPEG-PS); decode those from the start.
PYAV_SEEK_UNSAFE_CONTAINERS = frozenset({"mpeg", "mpegvideo"})
#: Codecs decoded with one thread (when the caller leaves the count to the reader) at frame sizes up to
#: `SINGLE_THREAD_MAX_PIXELS`: MPEG-4 part 2 frames that small (UCF101's 320x240 XviD) decode faster than
#: frame threads hand them over (286 against 232 clips/s on a UCF101 clip; at 720p threads win, 20 against 5).
SINGLE_THREAD_CODECS = frozenset({"mpeg4"})
SINGLE_THREAD_MAX_PIXELS = 640 * 480
# Up to this many frames ahead, a reader without a seek index decodes on rather than build one.
_FORWARD_DECODE_LIMIT = 64

_SCANNED_CODECS = frozenset({"h264", "hevc", "mpeg4"})
#: Containers that carry no display matrix (FFmpeg's avi and gif demuxers set none), read with codecs whose
#: decoders export none either (only H.264/HEVC/VVC have an orientation SEI): their rotation is 0 without
#: decoding the first frame to look.
_UNROTATED_CONTAINERS = frozenset({"avi", "gif"})
_ORIENTATION_SEI_CODECS = frozenset({"h264", "hevc", "vvc"})
#: Containers rewound by a seek to byte 0: FFmpeg's GIF demuxer has no timestamp seek, and its generic one
#: cost 1 ms per rewind (a GIF has one key frame, so every read that goes back starts from the first frame).
_BYTE_REWIND_CONTAINERS = frozenset({"gif"})
# In those files (one key frame), a read that goes back would decode again from the first frame: a reader
# keeps up to this many decoders parked where earlier reads left them (frames up to 1280x720: each holds
# a canvas), and goes on from the nearest one before the wanted frame.
_PARKED_DECODERS = 4
_PARK_MAX_PIXELS = 1280 * 720
#: AVCodec capability bits of decoders that can run threads of their own: frame, slice and other (library-managed).
_THREAD_CAPABILITIES = (1 << 12) | (1 << 13) | (1 << 15)
# swscale threads for the 8-bit conversion: one, FFmpeg's own default. PyAV's default (one per core) built
# a thread pool per reader and synchronised it per frame: a new reader's first frames cost ~10 ms each on
# the shared 2-core machine, and a DataLoader worker already has a core of its own.
_SWS_THREADS = 1


class _PictureScan:
    """Reads each packet's picture header during the seek-index pass (H.264, HEVC and MPEG-4 part 2 only).

    It finds the pictures that nothing references, and for H.264 whose timestamps are in decode order
    (AVI stores no presentation times) the presentation order from the picture order counts. Any
    stream it cannot read (see `vidattn.data.bitstream`) gets no plan: nothing is left out.
    """

    def __init__(self, codec: str, codec_context: Any) -> None:
        self._codec: str | None = codec if codec in _SCANNED_CODECS else None
        self._reorders = bool(codec_context.has_b_frames)
        self._kinds: list[tuple[bool, int]] = []
        self._order_keys: list[tuple[int, int]] = []
        self._poc: bitstream.H264PictureOrder | None = None
        self._last_pts: int | None = None
        self._length_size = 0  # bytes of each NAL unit's length prefix; 0: Annex B start codes
        if self._codec is None:
            return
        try:
            extradata = codec_context.extradata
            self._length_size = bitstream.nal_length_size(self._codec, extradata)
            if self._codec == "h264" and self._reorders:
                self._poc = bitstream.H264PictureOrder(extradata)
        except bitstream.Unsupported:
            self._codec = None

    def add(self, packet: Any) -> None:
        """The next packet in decode order (one with data and a pts)."""
        if self._codec is None:
            return
        try:
            data = memoryview(packet) if self._length_size else bytes(packet)  # start codes need bytes.find
            kind = bitstream.picture_kind(self._codec, data, self._length_size)
            if kind is None:
                raise bitstream.Unsupported("a packet without a picture")
            self._kinds.append(kind)
            if self._poc is not None:
                if self._last_pts is not None and packet.pts <= self._last_pts:
                    self._poc = None  # real presentation timestamps: they give the order
                else:
                    self._last_pts = packet.pts
                    self._order_keys.append(self._poc.key(data))
        except (bitstream.Unsupported, IndexError, KeyError):
            self._codec = None

    def result(self, pts: list[int]) -> tuple[list[int] | None, frozenset[int]]:
        """(pts in presentation order when the timestamps do not give it, else None; unreferenced pts)."""
        if self._codec is None or len(self._kinds) != len(pts):
            return None, frozenset()
        by_index = None
        if self._reorders and all(a < b for a, b in zip(pts, pts[1:], strict=False)):
            # Monotonic timestamps in a stream that reorders: decode order. Use the picture order counts.
            if self._poc is None or len(set(self._order_keys)) != len(pts):
                return None, frozenset()
            by_index = [p for _, p in sorted(zip(self._order_keys, pts, strict=True))]
        top = max(tid for _, tid in self._kinds)
        nonref = frozenset(p for p, (unref, tid) in zip(pts, self._kinds, strict=True) if unref and tid >= top)
        return by_index, nonref


# The seek index of recently opened files, per process: a dataset that opens a new reader for every clip demuxes
# each file once, not once per clip (on a 600-frame XviD AVI the pass cost more than the clip's decoding); bounded
# by the frames held. The values are shared between readers and never mutated (readers replace theirs, see
# `PyAVReader._forget_order`).
_SEEK_INDEX_CACHE: FileCache[tuple[list[int], dict[int, int], list[int], frozenset[int]]] = FileCache(
    250_000, weigh=lambda value: len(value[0])
)


class _FilterConverter:
    """Frames to RGB through FFmpeg's ``scale`` filter, exactly as ``ffmpeg -pix_fmt rgb24`` converts them.

    The filter passes the frame's colour range, matrix and chroma location to swscale. Rebuilt when the
    input (format, size) or the output changes.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._graph: Any = None

    def convert(self, frame: Any, width: int, height: int, flags: str) -> Any:
        import av

        key = (frame.format.name, frame.width, frame.height, width, height, flags)
        if key != self._key:
            graph = av.filter.Graph()
            chain = [
                graph.add_buffer(
                    width=frame.width, height=frame.height, format=frame.format, time_base=frame.time_base
                ),
                graph.add("scale", f"w={width}:h={height}:flags={flags}"),
                graph.add("format", "pix_fmts=rgb24"),
                graph.add("buffersink"),
            ]
            for a, b in zip(chain, chain[1:], strict=False):
                a.link_to(b)
            graph.configure()
            self._graph, self._key = graph, key
        self._graph.push(frame)
        return self._graph.pull()


class PyAVReader(VideoReader):
    """PyAV (FFmpeg) backend: exact frame indices by counting decoded frames in order.

    Seeks go to a key frame by timestamp only when the stream's timestamps are monotonic and
    unique (checked once, by demuxing without decoding); otherwise it decodes from the start,
    which is slower but exact on files with broken timestamps (old AVIs).

    In H.264, HEVC and MPEG-4 part 2, the same demux pass reads each packet's picture header, and a read never
    sends the decoder a picture that nothing references unless it returns that picture: a clip with
    stride 2, or frames far apart, decodes a fifth to a half fewer pictures on streams with B-frames,
    and returns the same frames. Where the timestamps are in decode order (H.264 in AVI) the frames
    are ordered by the picture order counts in the slice headers. The order is checked against
    every frame that decodes; if it ever disagrees, the reader goes back to counting frames.

    State, and what holds between calls:

    - ``_container``/``_stream``: the open demuxer and its first video stream (None only before `_open`
      and after `close`). ``_frames`` is the generator of decoded frames from the demuxer's position
      (`_decode`); it is replaced by every seek or restart.
    - ``_pos``: presentation index of the frame ``_frames`` gave last; -1 after a restart from frame 0.
      After `_seek_before`, ``_pos`` is one before the key frame and ``_seeked_to`` holds that key
      frame's pts: the next decoded frame is placed by its pts, not counted.
    - ``_pts_by_index``: None until the seek index is built (`can_seek`); ``[]`` when the timestamps
      are unreliable (frames are then counted from the start, never sought); else the pts of every
      frame in presentation order, unique, ``len == num_frames``. ``_index_of`` is its inverse and
      ``_key_positions`` the sorted indices of key frames; both are empty when it is empty.
    - ``_nonref``: pts of pictures nothing references; non-empty only with a non-empty
      ``_pts_by_index``. While it is non-empty, frames are placed by pts (pictures may be missing);
      any disagreement empties it for good (`_forget_order`) and the read restarts, counting.
    - ``_want``/``_want_end``: set only while a read runs (None otherwise): the indices that read
      returns; an unreferenced picture below ``_want_end`` that is not wanted is never decoded.
    - ``_scale_to``: the (W, H) swscale produces, in the coded orientation (before rotation);
      ``_reformatter`` is built on first use and kept.
    - ``_parked``: None, or (GIF read from a path) decoders parked part-way, each (container, stream,
      frames, pos) with the same meaning as the fields above and always counting (no pending seek);
      `_resume_nearest` swaps one in, and `_close` closes them.
    """

    backend = "pyav"

    def __init__(
        self,
        source: Source,
        *,
        size: Size = None,
        num_threads: int = 0,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        max_pixels: int | None = None,
        stream: int | None = None,
        container: Any = None,
    ) -> None:
        super().__init__(source, size=size, timeout_s=timeout_s, max_pixels=max_pixels)
        self._stream_asked = stream  # None: FFmpeg's best video stream (`select_video_stream`)
        self._source = io.BytesIO(source) if isinstance(source, bytes) else source
        self._num_threads = num_threads
        # An already open PyAV container of `source` that nothing has decoded from (`header.open_header`):
        # opening a file costs as much as decoding a small frame, so the header's container is used.
        self._container: Any = container
        self._stream: Any = None
        self._scale_to = (0, 0)
        self._seeked_to: int | None = None
        self._sought = False  # the decoder was positioned by a seek, not counted from frame 0
        self._pts_by_index: list[int] | None = None  # pts of each frame in presentation order, if reliable
        self._index_of: dict[int, int] = {}  # the inverse: pts -> presentation index
        self._key_positions: list[int] = []
        self._nonref: frozenset[int] = frozenset()  # pts of pictures no other picture references
        self._want: set[int] | None = None  # indices the current read returns; others' nonref pictures are dropped
        self._want_end = 0  # ... below this index
        self._pos = -1  # index of the last decoded frame, -1 = nothing decoded since (re)open
        self._frames: Iterator[Any] | None = None
        self._reformatter: Any = None  # one swscale context per reader: building it per frame dominates small frames
        self._converter = _FilterConverter()  # for frames over 8 bits per sample (see `_to_array`)
        self._direct = DirectRGB()  # 8-bit frames' crops converted straight into a read's array (`_read_into`)
        # (container, stream, frames, pos) of decoders parked part-way (`_resume_nearest`); None: not used here.
        self._parked: list[tuple[Any, Any, Iterator[Any], int]] | None = None
        self._inline = False  # decode steps run in the calling thread (`_runs_inline`); decided by `_open`
        self._call(self._open)
        self._inline = isinstance(source, (str, os.PathLike, bytes)) and self._threadless()

    def _open(self) -> None:
        import av

        if self._container is None:
            if hasattr(self._source, "seek"):
                self._source.seek(0)
            try:
                self._container = av.open(
                    self._source if not isinstance(self._source, os.PathLike) else os.fspath(self._source)
                )
            except av.error.FFmpegError as exc:
                raise VideoDecodeError(self.path, f"cannot open: {_short(exc)}") from None
        stream = check_video_stream(self.path, self._container, self.max_pixels, self._stream_asked)
        self.stream, self.streams = stream.index, describe_streams(self._container)
        self._set_threads(stream)
        self._stream = stream
        self.container = self._container.format.name.split(",")[0]
        self.codec = stream.codec_context.name
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 0.0
        self.num_frames = int(stream.frames or 0)
        if self.num_frames <= 0:
            self.num_frames = self._count_packets()
        if self.num_frames <= 0:
            raise VideoDecodeError(self.path, "video stream has no frames")
        check_not_still(self.path, self.container, self.num_frames)
        if self.fps <= 0 and stream.duration and stream.time_base:
            self.fps = self.num_frames / float(stream.duration * stream.time_base)
        raw_w, raw_h = stream.codec_context.width, stream.codec_context.height
        if raw_w <= 0 or raw_h <= 0:
            raise VideoDecodeError(self.path, "video stream reports no frame size")
        self.rotation = self._stream_rotation()
        disp_w, disp_h = (raw_h, raw_w) if self.rotation % 180 else (raw_w, raw_h)
        self.width, self.height = _output_size(disp_w, disp_h, self.size)
        # Scale before rotating: swscale works on the coded orientation.
        self._scale_to = (self.height, self.width) if self.rotation % 180 else (self.width, self.height)
        self._frames = self._decode()  # the demuxer is at the start: nothing read yet, or rewound since
        if (
            self.container in _BYTE_REWIND_CONTAINERS
            and raw_w * raw_h <= _PARK_MAX_PIXELS
            and isinstance(self._source, (str, os.PathLike))  # each decoder opens the file for itself
        ):
            self._parked = []

    def _threadless(self) -> bool:
        """Whether decoding this stream runs no thread besides the caller's: a decoder with one thread (or none
        it could start) and 8-bit frames (swscale on one thread; deeper frames go through a filter graph)."""
        ctx = self._stream.codec_context
        fmt = ctx.format
        return (
            (ctx.thread_count == 1 or not ctx.codec.capabilities & _THREAD_CAPABILITIES)
            and fmt is not None
            and all(c.bits <= 8 for c in fmt.components)
        )

    def _runs_inline(self) -> bool:
        # MPEG-4 part 2 frames up to 640x480 (one thread, `SINGLE_THREAD_CODECS`) and GIF (no threaded decoder),
        # read from a path or bytes: see `VideoReader._runs_inline`.
        return self._inline

    def _rewind(self) -> None:
        """Put the demuxer back at the first packet (the decoders are flushed, as by every PyAV seek)."""
        if self.container in _BYTE_REWIND_CONTAINERS:
            self._container.seek(0, unsupported_byte_offset=True)
        else:
            self._container.seek(0)

    def _stream_rotation(self) -> int:
        if self.container in _UNROTATED_CONTAINERS and self.codec not in _ORIENTATION_SEI_CODECS:
            return 0
        first, decoded = read_first_frame(self._source, self._container, self._stream)
        if first is None:
            raise VideoDecodeError(self.path, "no frame decodes")
        if decoded:
            self._rewind()
        return first.rotation

    def _count_packets(self) -> int:
        n = 0
        for packet in self._container.demux(self._stream):
            check_deadline()
            if packet.size:
                n += 1
        self._rewind()
        return n

    def _restart(self, force: bool = False) -> None:
        if force or self._pos != -1 or self._frames is None:
            try:
                self._rewind()
            except Exception:  # some streams refuse to seek; reopen them
                self._container.close()
                self._open_raw()
        self._frames = self._decode()
        self._pos = -1
        self._seeked_to = None
        self._sought = False

    def _decode(self) -> Iterator[Any]:
        """Frames in presentation order. A non-reference picture the current read does not want is never
        sent to the decoder: no other frame changes, and frame threads and seeks work as usual."""
        if not self._nonref:  # nothing to leave out: PyAV's own loop, without a Python step per packet
            return self._container.decode(self._stream)
        return self._decode_leaving_out()

    def _decode_leaving_out(self) -> Iterator[Any]:
        for packet in self._container.demux(self._stream):
            want = self._want
            if want is not None and packet.pts in self._nonref:
                # Only below the read's last frame: the decoder runs ahead of its output, and a picture
                # past the end may be the first one the next read wants.
                index = self._index_of[packet.pts]
                if index < self._want_end and index not in want:
                    continue
            yield from packet.decode()

    def _open_raw(self) -> None:
        import av

        if hasattr(self._source, "seek"):
            self._source.seek(0)
        self._container = av.open(
            self._source if not isinstance(self._source, os.PathLike) else os.fspath(self._source)
        )
        self._stream = self._container.streams[self.stream]
        self._set_threads(self._stream)

    def _set_threads(self, stream: Any) -> None:
        """Frame + slice threads, what `ffmpeg -threads 0` does; one thread for small MPEG-4 part 2 frames."""
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        if self._num_threads:
            stream.thread_count = self._num_threads
        elif ctx.name in SINGLE_THREAD_CODECS and ctx.width * ctx.height <= SINGLE_THREAD_MAX_PIXELS:
            stream.thread_count = 1

    def _build_seek_index(self) -> None:
        """Frame pts in presentation order and key-frame positions, if timestamps allow exact seeking;
        and the pictures no other picture references, which reads may leave out (see `_PictureScan`).
        Taken from `_SEEK_INDEX_CACHE` when this file was indexed before in this process."""
        key = file_key(self._source, self.stream)
        known = _SEEK_INDEX_CACHE.get(key)
        if known is not None and (not known[0] or len(known[0]) == self.num_frames):
            if self._pos != -1:  # as after a demux pass: the next read starts from the beginning
                self._restart(force=True)
            self._pts_by_index, self._index_of, self._key_positions, self._nonref = known
            return
        self._index_by_demuxing()
        _SEEK_INDEX_CACHE.put(key, (self._pts_by_index, self._index_of, self._key_positions, self._nonref))

    def _index_by_demuxing(self) -> None:
        pts, keys = [], []
        # MPEG-4 part 2 references every picture but B-VOPs: without B-frames there is nothing to find.
        reorders = bool(self._stream.codec_context.has_b_frames)
        codec = self.codec if reorders or self.codec != "mpeg4" else ""
        scan = _PictureScan(codec, self._stream.codec_context)
        self._rewind()
        for packet in self._container.demux(self._stream):
            check_deadline()
            if packet.size and packet.pts is not None:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
                scan.add(packet)
        self._rewind()
        self._frames = self._decode()
        self._pos = -1
        order = sorted(pts)
        if (
            len(order) != self.num_frames
            or len(set(order)) != len(order)
            or not keys
            or self.container in PYAV_SEEK_UNSAFE_CONTAINERS
        ):
            self._forget_order(remember=False)  # unreliable: decode from the start, never seek (the caller caches it)
            return
        by_index, self._nonref = scan.result(pts)
        self._pts_by_index = by_index or order
        self._index_of = {p: i for i, p in enumerate(self._pts_by_index)}
        self._key_positions = sorted(self._index_of[k] for k in keys)

    def _forget_order(self, *, remember: bool = True) -> None:
        """Read this file by counting decoded frames from the start, leaving nothing out (and so will the
        next reader of it in this process, unless `remember` is False)."""
        self._pts_by_index, self._index_of, self._key_positions = [], {}, []
        self._nonref = frozenset()
        if remember:
            _SEEK_INDEX_CACHE.put(file_key(self._source, self.stream), ([], {}, [], frozenset()))

    def can_seek(self) -> bool:
        """Whether this file's timestamps allow exact key-frame seeks (else reads decode from the start)."""
        if self._pts_by_index is None:
            self._build_seek_index()
        return bool(self._pts_by_index)

    def frame_times(self, indices: Sequence[int]) -> np.ndarray:
        if not self._call(self.can_seek):
            return super().frame_times(indices)
        pts = np.asarray(self._pts_by_index, dtype=np.int64)
        idx = np.clip(np.asarray(indices, dtype=np.int64), 0, len(pts) - 1)
        return (pts[idx] - pts[0]).astype(np.float64) * float(self._stream.time_base)

    def _key_before(self, index: int) -> int:
        """Position of the last key frame at or before `index` that a seek reaches; -1 when seeks are unsafe."""
        if not self.can_seek():
            return -1
        return self._key_positions[max(bisect.bisect_right(self._key_positions, index) - 1, 0)]

    def _seek_before(self, index: int) -> None:
        """Position the decoder so the next decoded frame is at or before `index`."""
        key_pos = self._key_before(index)
        if key_pos < 0 or (key_pos == 0 and self.container in _BYTE_REWIND_CONTAINERS):
            self._restart()
            return
        self._container.seek(self._pts_by_index[key_pos], stream=self._stream, backward=True, any_frame=False)
        self._frames = self._decode()
        self._pos = key_pos - 1
        self._seeked_to = self._pts_by_index[key_pos]
        self._sought = True

    def _next_frame(self) -> Any:
        """Decode the next frame in presentation order, or None at the end of the stream."""
        import av

        check_deadline()
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as exc:
            raise self._decode_failed(exc) from None
        if self._seeked_to is not None:
            # After a seek the decoder starts at a key frame at or before the target; place it by pts.
            self._seeked_to = None
            pos = self._index_of.get(frame.pts, -1)
            if pos >= 0:
                self._pos = pos
                return frame
            self._restart()  # could not place the frame: fall back to counting from the start
            return self._next_frame()
        if self._nonref:
            # Pictures may have been left out: place the frame by its timestamp. Only unreferenced
            # pictures may be missing in between; anything else means the order is not what the
            # bitstream said, so stop leaving pictures out and count from the start.
            pos = self._index_of.get(frame.pts, -1)
            nonref, by_index = self._nonref, self._pts_by_index
            if pos <= self._pos or (
                pos > self._pos + 1 and any(by_index[j] not in nonref for j in range(self._pos + 1, pos))
            ):
                self._forget_order()
                self._restart(force=True)
                return self._next_frame()
            self._pos = pos
            return frame
        self._pos += 1
        return frame

    def _decode_failed(self, exc: Exception) -> VideoDecodeError:
        """The error of a decoder that failed after the frame at ``_pos``."""
        decoded = self._pos + 1
        return self._truncated(decoded) if decoded < self.num_frames else VideoDecodeError(self.path, _short(exc))

    def _skip(self, n: int) -> None:
        """Decode and drop the next `n` frames of a decoder that counts them (no seek to place, nothing left out):
        `_next_frame` for each, without the placing, in one loop (a frame's Python cost, counted in a 320x240
        clip, was a tenth of its decoding). The end of the stream is left to the `_next_frame` that follows."""
        import av

        frames = self._frames
        for _ in range(n):
            check_deadline()
            try:
                next(frames)
            except StopIteration:
                return  # an exhausted generator stays so: the next `_next_frame` sees the end too
            except av.error.FFmpegError as exc:
                raise self._decode_failed(exc) from None
            self._pos += 1

    def _to_array(self, frame: Any) -> np.ndarray:
        """The frame as a contiguous RGB array of the output size."""
        return np.ascontiguousarray(self._rgb(frame))

    def _rgb(self, frame: Any) -> np.ndarray:
        """The frame as RGB at the output size, possibly a strided view (the caller copies it where it keeps it)."""
        array = self._convert(frame, *self._scale_to).to_ndarray()
        if self.rotation:
            array = np.rot90(array, k=-(self.rotation // 90))  # clockwise by `rotation` degrees
        return array

    def _convert(self, frame: Any, w: int, h: int) -> Any:
        # Area averaging when shrinking: anti-aliased, and 6x cheaper than swscale's bilinear at 1080p -> 160p.
        interp = "AREA" if w < frame.width and h < frame.height else "BILINEAR"
        if frame.format.components[0].bits > 8:
            # Through FFmpeg's scale filter, as `ffmpeg -pix_fmt rgb24` converts: it tells swscale where the
            # chroma samples sit; a bare swscale call on 10-bit frames was off by up to 120 levels at edges.
            # At full size the filter's default flags, as ffmpeg's; resizing, the same choice as below.
            flags = "bicubic" if (w, h) == (frame.width, frame.height) else interp.lower()
            return self._converter.convert(frame, w, h, flags)
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter

            self._reformatter = VideoReformatter()
        # 8-bit: swscale's unscaled converters, bit for bit what ffmpeg gives (tested per colour case).
        return self._reformatter.reformat(
            frame, format="rgb24", width=w, height=h, interpolation=interp, threads=_SWS_THREADS
        )

    def _seek_saves_decoding(self, index: int) -> bool:
        """Whether a key frame lies between where the decoder is and `index` (a seek there skips the frames
        before it), as torchcodec and decord decide. Near reads of a reader that has not built its seek
        index yet decode on: building it demuxes the whole file."""
        if self._pts_by_index is None and index - self._pos <= _FORWARD_DECODE_LIMIT:
            return False
        return self._key_before(index) > self._pos + 1

    def _resume_nearest(self, index: int) -> None:
        """Go on from the parked decoder nearest before `index` when it is nearer than this one (GIF, see
        `_PARKED_DECODERS`). A decoder that would have to go back is parked where it is, and a new one starts
        from the first frame: opening a small GIF costs about three frames of decoding."""
        if self._seeked_to is not None or self._nonref:
            return
        here = self._pos if self._pos < index else -1  # where this decoder goes on from (-1: rewound)
        parked = self._parked
        best = max((c for c in parked if here < c[3] < index), key=lambda c: c[3], default=None)
        if best is None:
            if here >= 0 or self._pos < 2 * _PARKED_DECODERS:
                return  # it goes on from where it is, or a rewind loses little
            best = next((c for c in parked if c[3] < 0), None)  # one parked at the start, else a new one
        parked.append((self._container, self._stream, self._frames, self._pos))
        if best is not None:
            parked.remove(best)
            self._container, self._stream, self._frames, self._pos = best
        else:
            self._open_raw()
            self._frames = self._decode()
            self._pos = -1
        if len(parked) > _PARKED_DECODERS:
            # Drop the one nearest the decoder (or the start) before it: the others stay spread over the file.
            by_pos = sorted(parked, key=lambda c: c[3])
            gaps = [c[3] - (by_pos[k - 1][3] if k else -1) for k, c in enumerate(by_pos)]
            dropped = by_pos[gaps.index(min(gaps))]
            parked.remove(dropped)
            dropped[0].close()

    def _goto(self, index: int) -> Any:
        if self._parked is not None:
            self._resume_nearest(index)
        if index <= self._pos or self._seek_saves_decoding(index):
            self._seek_before(index)
        sought_back = False
        while True:
            if index > self._pos + 1 and self._seeked_to is None and not self._nonref:
                self._skip(index - self._pos - 1)  # the frames before `index`, counted
            frame = self._next_frame()
            if frame is None:
                if self._nonref:  # frames left out before the end: count exactly what decodes
                    self._forget_order()
                    self._restart(force=True)
                    continue
                if self._sought:
                    # The stream ended early after a seek (an MPEG-TS with open GOPs lost its last frame
                    # after a seek to the last key frame): count from the start before calling it truncated.
                    self._restart(force=True)
                    continue
                raise self._truncated(self._pos + 1)
            if self._pos == index:
                return frame
            if self._pos > index:
                if self._nonref and not sought_back:
                    # An earlier read, wanting other frames, left this one out while the decoder ran ahead.
                    self._seek_before(index)
                    sought_back = True
                else:  # a seek overshot (or a wanted frame never came): count from the start instead
                    if self._nonref:
                        self._forget_order()
                    self._restart()

    def _plan(self, indices: list[int]) -> set[int] | None:
        """The frames a read wants, when leaving other pictures out can save work; else None."""
        skips = indices[-1] - max(indices[0], self._pos + 1) + 1 > len(indices) or indices[0] <= self._pos
        if not skips or self.codec not in _SCANNED_CODECS:
            return None
        return set(indices) if self.can_seek() and self._nonref else None

    def _read_sorted(self, indices: list[int]) -> np.ndarray:
        out = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        self._read_into(indices, out, None)
        return out

    def _read_into(self, indices: list[int], out: np.ndarray, crop: Crop | None) -> None:
        # Straight from the converted frame into `out`: one copy of the pixels kept, and of the crop only.
        import av

        self._want, self._want_end = self._plan(indices), indices[-1]
        x, y = (0, 0) if crop is None else crop[:2]
        # Unrotated frames at their own size: the crop's RGB written by swscale into `out` itself (`DirectRGB`).
        write = None if self.rotation else self._direct.bind(out, x, y, self._scale_to, self._whole_rgb)
        last = len(indices) - 1
        failed = av.error.FFmpegError
        try:
            for k, i in enumerate(indices):
                # `_goto`'s common case first: the state is read after `_seek_saves_decoding`, which may build the
                # seek index (and with it the pictures left out).
                if (
                    self._parked is None
                    and i > self._pos
                    and not self._seek_saves_decoding(i)
                    and self._seeked_to is None
                    and not self._nonref
                ):
                    frame = self._count_to(i, failed)
                else:
                    frame = self._goto(i)
                # Frames are written in order into C-contiguous `out`: past frame k lies frame k + 1, written next.
                if write is None or not write(frame, k, k < last):
                    out[k] = crop_view(self._rgb(frame), crop)
        finally:
            self._want = None

    def _count_to(self, index: int, failed: type[Exception]) -> Any:
        """`_goto(index)` where the decoder counts its frames (no seek to place, nothing left out) and goes on to
        `index` from where it is (no seek saves decoding): the frames up to it decoded in one loop, with no call per
        frame (a read's Python per decoded frame, after each decode, is a few percent of a 320x240 clip). At the end
        of the stream `_goto` takes over, which decides as it would have (`failed`: PyAV's decoding error)."""
        frames = self._frames
        try:
            while True:
                check_deadline()
                frame = next(frames)
                self._pos += 1
                if self._pos >= index:
                    return frame
        except StopIteration:  # an exhausted generator stays so: `_goto` sees the end too
            return self._goto(index)
        except failed as exc:
            raise self._decode_failed(exc) from None

    def _whole_rgb(self, frame: Any) -> np.ndarray:
        """PyAV's conversion of an unrotated frame (what `DirectRGB` is checked against)."""
        return self._convert(frame, *self._scale_to).to_ndarray()

    def _iter_sorted(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        want = self._plan(indices)
        for i in indices:
            self._want, self._want_end = want, indices[-1]  # per step: another read may run between two steps
            try:
                frame = self._goto(i)
            finally:
                self._want = None
            yield i, self._to_array(frame)

    def _read_sorted_ref(self, indices: list[int]) -> np.ndarray:
        if not self.can_seek() or self._nonref or not isinstance(self._source, (str, os.PathLike)):
            # H.264 / HEVC: `_read_sorted` already leaves out what it does not need, exactly and with frame threads.
            return self._read_sorted(indices)
        # Other codecs: a second decoder that skips non-reference frames. It has no frame threads: skip_frame
        # combined with seeks hung FFmpeg's frame threads. A file object cannot be shared between two decoders.
        import av

        out = np.empty((len(indices), self.height, self.width, 3), dtype=np.uint8)
        missed: list[int] = []  # positions in `indices` of frames that turned out to be non-reference
        index_of = self._index_of
        with av.open(os.fspath(self._source)) as container:
            stream = container.streams[self.stream]
            stream.thread_type = "SLICE"
            if self._num_threads:
                stream.thread_count = self._num_threads
            stream.codec_context.skip_frame = "NONREF"
            frames: Iterator[Any] = iter(())
            last: tuple[int, Any] | None = None  # (index, frame) this decoder returned last
            for k, target in enumerate(indices):
                if last is None or last[0] < target:
                    key_pos = self._key_before(target)
                    if last is None or key_pos > last[0]:  # seek when a key frame is nearer than where we are
                        container.seek(self._pts_by_index[key_pos], stream=stream, backward=True, any_frame=False)
                        frames = container.decode(stream)
                    last = None
                    while last is None:
                        check_deadline()
                        try:
                            frame = next(frames, None)
                        except av.error.FFmpegError as exc:
                            raise VideoDecodeError(self.path, _short(exc)) from None
                        if frame is None:
                            break
                        idx = index_of.get(frame.pts, -1)
                        if idx >= target:
                            last = (idx, frame)
                # Frames arrive in presentation order: one past the target means the target was skipped.
                if last is not None and last[0] == target:
                    out[k] = self._rgb(last[1])
                else:
                    missed.append(k)
            last = frame = None  # frames hold decoder buffers: release them before the decoder closes
        if missed:
            out[missed] = self._read_sorted([indices[k] for k in missed])
        return out

    def key_frames(self) -> list[int]:
        """Presentation indices of the key frames a timestamp seek reaches exactly, in order; empty where
        seeks are unsafe (unreliable timestamps, MPEG-PS) or the container has no timestamp seek (GIF)."""
        if not self._call(self.can_seek) or self.container in _BYTE_REWIND_CONTAINERS:
            return []
        return list(self._key_positions)

    def iter_nearest(
        self,
        indices: Sequence[int],
        *,
        on_decoded: Callable[[int, Any], None] | None = None,
        from_key: int | None = None,
        stop: Callable[[int], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """`iter_frames(nearest=True, numpy=True)` over sorted `indices`, for one of two decoders that read one
        file at once (`vidattn.data.halves`).

        Args:
            indices: the wanted frames, sorted.
            on_decoded: as in `iter_frames`.
            from_key: start decoding at this key frame (one of `key_frames`) instead of the first frame; the
                frames before it that the decoder outputs (pictures of an open group that refer to the group
                before) are not looked at. Every yielded frame is then at or after it.
            stop: called with the index of each decoded frame, after `on_decoded`; True ends the stream there
                (the wanted frames not yet yielded are left to another decoder).
        """
        wanted = [int(i) for i in indices]
        if not wanted:
            return iter(())
        return self._stream_steps(self._iter_nearest(wanted, on_decoded, from_key=from_key, stop=stop), True)

    def _iter_nearest(
        self,
        indices: list[int],
        on_decoded: Callable[[int, Any], None] | None = None,
        *,
        from_key: int | None = None,
        stop: Callable[[int], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        if not self.can_seek():  # no reliable pts -> index map to place the frames that do decode
            yield from self._iter_sorted(indices)
            return
        import av

        index_of = self._index_of
        # From the start, or from one key frame by a seek made before skipping is switched on: skip_frame
        # combined with seeks hung FFmpeg's frame threads.
        self._restart()
        floor = indices[0]  # frames before it are never yielded
        if from_key is not None:
            self._container.seek(self._pts_by_index[from_key], stream=self._stream, backward=True, any_frame=False)
            self._frames = self._decode()
            floor = from_key
        self._stream.codec_context.skip_frame = "NONREF"
        try:
            k, last = 0, -1  # next wanted position; index of the last frame yielded
            prev: tuple[int, Any] | None = None
            frame, idx = None, -1
            while k < len(indices):
                check_deadline()
                try:
                    frame = next(self._frames, None)
                except av.error.FFmpegError as exc:
                    raise VideoDecodeError(self.path, _short(exc)) from None
                if frame is not None:
                    idx = index_of.get(frame.pts, -1)
                    if idx < 0:
                        raise VideoDecodeError(self.path, f"decoded a frame with unknown timestamp {frame.pts}")
                    if from_key is not None and idx < from_key:
                        continue
                    if on_decoded is not None:
                        on_decoded(idx, frame)
                    if stop is not None and stop(idx):
                        break
                while k < len(indices) and (frame is None or idx >= indices[k]):
                    target = indices[k]
                    k += 1
                    # The wanted index lies between the previous decoded frame and this one: take the nearer.
                    use_prev = (
                        prev is not None and prev[0] >= floor and (frame is None or target - prev[0] <= idx - target)
                    )
                    pick = prev if use_prev else (idx, frame) if frame is not None else None
                    if pick is not None and pick[0] > last:
                        last = pick[0]
                        yield pick[0], self._to_array(pick[1])
                if frame is None:
                    break
                prev = (idx, frame)
        finally:
            # Frames hold decoder buffers: release them before the decoder can go away.
            prev = frame = None
            if self._container is not None:
                self._stream.codec_context.skip_frame = "DEFAULT"
                self._restart(force=True)  # seek to 0, decoder flushed, before the next exact read

    def _close(self) -> None:
        self._direct.close()
        for container, *_ in self._parked or ():
            container.close()
        self._parked = None
        if self._container is not None:
            self._container.close()
            self._container = None


class PyAVFallback:
    """For readers whose decoder can fail part-way through a corrupt or truncated file (decord, torchcodec).

    Their threaded or batched decoders report a broken packet at a nondeterministic point, so they cannot
    say how many frames decode. After such a failure `_read_with_pyav` re-reads with PyAV from then on: it
    decodes in order, fails at a fixed frame, returns the exact frames that do decode and corrects
    `num_frames` for the rest. The output size is the failed reader's, so frames from before and after
    the switch stack together.
    """

    _fallback: PyAVReader | None

    def _read_with_pyav(self, indices: list[int]) -> np.ndarray:
        if self._fallback is None:
            src = self._source
            if not isinstance(src, (str, os.PathLike, bytes)):
                src.seek(0)
                src = src.read()  # the failed decoder already held the whole file object in memory
            self._fallback = PyAVReader(
                src, size=(self.width, self.height), timeout_s=None, max_pixels=self.max_pixels, stream=self.stream
            )
            self._fallback.path = self.path
        fallback = self._fallback
        try:
            return fallback._read_sorted(indices)
        except VideoDecodeError as exc:
            if fallback.num_frames <= max(indices) and fallback.num_frames <= self.num_frames:
                raise self._truncated(fallback.num_frames) from None
            raise VideoDecodeError(self.path, exc.reason) from None
