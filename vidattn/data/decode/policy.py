"""`open_video` and `probe`: which backend reads a file, decided in one place from its headers.

The codec and container policy (see the package notes): PyAV for what is not a video container decord
indexes exactly, unless a once-per-file check shows decord exact on that file; under ``auto`` also PyAV
where it is faster (HEVC, H.264, MPEG-4 part 2, GIF); decord only where its frames come out well formed.
torchcodec (an optional extra) is read where asked for, and by ``auto`` only for the file classes on
`TORCHCODEC_FASTER`, under the same once-per-file exactness check as decord.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vidattn.data.decode import verdicts
from vidattn.data.decode.decord_reader import SEEK_UNSAFE_CODECS, DecordReader
from vidattn.data.decode.header import StreamHeader, _short, is_image_demuxer, max_frame_pixels, open_header
from vidattn.data.decode.pyav_reader import PyAVReader
from vidattn.data.decode.reader import (
    DEFAULT_TIMEOUT_S,
    Size,
    Source,
    VideoInfo,
    VideoReader,
    _output_size,
    _source_name,
    run_with_timeout,
)
from vidattn.errors import VideoDecodeError

if TYPE_CHECKING:  # the optional extra is imported only when a torchcodec reader opens
    from vidattn.data.decode.torchcodec_reader import TorchCodecReader

#: Containers (PyAV's first format name) where decord's frame indexing is exact. Elsewhere decord returns
#: the wrong frames on some files, even for in-order reads (MPEG-TS with B-frames starts a GOP late; AVI
#: and MPEG-PS random access lands on other frames), so other files are checked one by one.
DECORD_CONTAINERS = frozenset({"mov", "matroska", "webm", "flv", "gif", "ivf"})
#: Codecs decord indexes exactly in those containers. MPEG-1/2/4 part 2 with B-frames land on other
#: frames in any container, so they are checked per file too.
DECORD_CODECS = frozenset(
    {"h264", "hevc", "h265", "vp8", "vp9", "av1", "libdav1d", "libaom-av1", "gif", "flv1", "mjpeg", "png", "rawvideo"}
)
#: Codecs where, in streams with B-frames, PyAV leaves the pictures nothing references out of the decoder
#: (decord decodes them all): strided clips from such H.264 files read 1.3-1.6x faster
#: (scripts/bench_decode.py and bench_pyav_skip.py, per-file rows). ``auto`` reads them with PyAV.
PYAV_FASTER_CODECS = frozenset({"h264"})
#: Codecs that ``backend="auto"`` always reads with PyAV: MPEG-4 part 2 (XviD/DivX, the UCF101 format),
#: where PyAV read strided clips 2.9x faster than decord on a 320x240 UCF101 clip (286 against 98 clips/s,
#: one thread) and 4.4x at 720p (20 against 4.6), and needs no per-file check of decord's random access;
#: GIF, where the same FFmpeg decoder does the same work (every read that goes back starts at the one
#: key frame) and PyAV needed less CPU per clip than decord (19.3 against 20.6 ms reused, 26 against 30 ms
#: opening a reader per clip, on a 320x240 GIF; it rewinds by byte, see `pyav_reader`); and H.264 without
#: B-frames too, where the same FFmpeg decoder runs in both and PyAV converts only the crop, straight into
#: the batch: over 10 such MP4/MKV files from 426x240 to 1080p (16-frame clips, stride 2, CPU time,
#: medians of 5, both on FFmpeg's thread count), the dataset read 1.05-2.2x the clips per CPU second with
#: PyAV that it read with decord (1080p demo_skeleton.mp4 4.9 against 2.8), a reused reader 0.93-1.6x,
#: a new reader per clip 1.04-1.6x.
PYAV_FASTER_ALWAYS = frozenset({"mpeg4", "gif"}) | PYAV_FASTER_CODECS
# Where in a file (fractions of its length) decord's random access is checked against PyAV, and the
# longest file checked when PyAV has to decode it from the start to do so.
_VERIFY_AT = (0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0)
_VERIFY_MAX_SERIAL_FRAMES = 3000
#: Codecs that ``backend="auto"`` reads with torchcodec (when installed and exact on the file): only where
#: scripts/bench_decode.py measured it faster than both the PyAV and decord paths for that file class.
#: Empty for now: in the one (noisy, shared-machine) 0.17.0 run in the README, the only class where
#: torchcodec was both faster and exact was MPEG-4 part 2 without B-frames, on 2-clip rows. Nor H.264
#: without B-frames, where it was not faster across the class: in CPU time under load it read the 426x240 and
#: 854x480 files above 3-10x slower than PyAV and led only on some 720p/1080p rows (one decoder thread
#: against FFmpeg's 3); in a quiet wall-clock run with a new reader per clip it read 0.8-1.0x PyAV's
#: clips/s on four 340x256-454x256 files (H.264 with and without B-frames) and 1.4x on one low-bitrate
#: 426x240 file.
TORCHCODEC_FASTER: frozenset[str] = frozenset()
BACKENDS = ("auto", "decord", "pyav", "torchcodec")


# (module, finder) -> whether the finder found it: `find_spec` searches sys.path (0.3 ms of file system calls
# per open_video). Keyed by the finder too, so a replaced `importlib.util.find_spec` is asked again.
_FOUND: dict[tuple[str, object], bool] = {}


def _installed(module: str) -> bool:
    import importlib.util

    finder = importlib.util.find_spec
    key = (module, finder)
    if key not in _FOUND:
        # find_spec, not import: loading decord costs ~400 MB of RSS, paid only when a decord reader opens.
        _FOUND[key] = finder(module) is not None
    return _FOUND[key]


def available_backends() -> list[str]:
    """Backends importable in this environment, in `auto` preference order."""
    names = ["decord"] if _installed("decord") else []
    names.append("pyav")
    if _installed("torchcodec"):  # the optional extra vidattn[torchcodec]
        names.append("torchcodec")
    return names


def _check_path(src: Source) -> None:
    if not isinstance(src, (str, os.PathLike)):
        return
    path = Path(src)
    if path.is_symlink() and not path.exists():
        raise VideoDecodeError(path, "broken symbolic link")
    if not path.exists():
        raise VideoDecodeError(path, "no such file")
    if path.is_dir():
        raise VideoDecodeError(path, "is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(path, "permission denied")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")


def _decord_proven(header: StreamHeader) -> bool:
    """Whether decord always indexes this container and codec exactly (else each file is checked)."""
    return header.container in DECORD_CONTAINERS and header.codec in DECORD_CODECS


def _why_pyav(header: StreamHeader, backend: str) -> str | None:
    """Why PyAV reads this file although decord was asked for (or ``auto``), or None to try decord."""
    if is_image_demuxer(header.container):
        return "images are read with PyAV"  # which refuses a still image
    if len(header.streams) > 1:
        # decord reads the stream av_find_best_stream picks, which is not always FFmpeg's best (by size).
        return f"decord cannot choose among {len(header.streams)} video streams"
    proven = _decord_proven(header)
    if not proven and header.codec in SEEK_UNSAFE_CODECS:
        return f"decord does not index {header.codec} in {header.container} exactly"
    if not proven and header.reorders:
        # There decord's random access can even vary from run to run (a 1080p H.264 AVI in realvids
        # returned its last frame right in one process and wrong in the next): never trusted.
        return f"decord's random access is not exact with B-frames in {header.container}"
    if backend == "auto" and header.codec in SEEK_UNSAFE_CODECS:
        return f"{header.codec} reads faster (and exactly) with PyAV"
    if backend == "auto" and header.codec in PYAV_FASTER_ALWAYS:
        return f"{header.codec} reads faster with PyAV"
    return None


def _why_not_torchcodec(header: StreamHeader, backend: str) -> str | None:
    """Why torchcodec does not read this file (asked for, or under ``auto``), or None to try it."""
    if is_image_demuxer(header.container):
        return "images are read with PyAV"
    if header.rotation % 360:
        return "rotated video is read with PyAV, which rotates as players do"
    if not _decord_proven(header) and header.reorders:
        # torchcodec's exact mode returns neighbours, or fails, on AVIs with decode-order timestamps.
        return f"torchcodec's indexing is not trusted with B-frames in {header.container}"
    if backend == "auto" and header.codec not in TORCHCODEC_FASTER:
        return f"{header.codec} is not read faster with torchcodec"
    return None


def decord_is_exact(reader: DecordReader | TorchCodecReader, header: StreamHeader, source: Source) -> bool:
    """Whether the reader's random access returns the right frames in this file (checked once, see `verdicts`).

    For decord and torchcodec alike (`reader.backend` keys the verdict).

    In AVI, MPEG-TS/PS and MPEG-4 part 2 files, decord is exact on some files and lands on other
    frames in others (B-frames, bad indexes), and nothing in the headers tells the good from the bad
    (an H.264 AVI without B-frames fails). So frames spread over the file are read both ways at full
    size, decord's random access against PyAV's exact decode, and must be identical (both convert with
    FFmpeg's swscale; a neighbouring frame of a still scene differs by a few levels, and counts as
    wrong). A file PyAV cannot seek in exactly and that is long to decode from the start is not
    checked: it stays with PyAV.
    """
    path = source if isinstance(source, (str, os.PathLike)) else None
    known = verdicts.lookup(path, reader.backend) if path is not None else None
    if known is not None:
        return known
    exact = _compare_with_pyav(reader, header, source)
    if path is not None:
        verdicts.store(path, exact, reader.backend)
    return exact


def _compare_with_pyav(reader: DecordReader | TorchCodecReader, header: StreamHeader, source: Source) -> bool:
    """The check `decord_is_exact` describes, run now."""
    if header.coded_size is None or header.reorders:
        return False  # PyAV could not decode the first frame: nothing to compare against
    n = reader.num_frames
    probes = sorted({min(n - 1, max(1, round(f * (n - 1)))) for f in _VERIFY_AT})
    truth_reader = None
    try:
        truth_reader = PyAVReader(source, timeout_s=None, max_pixels=reader.max_pixels, stream=header.stream)
        if n > _VERIFY_MAX_SERIAL_FRAMES and not truth_reader.can_seek():
            exact = False
        else:
            truth = truth_reader._read_sorted(probes)
            full_size = (reader.width, reader.height) != (truth_reader.width, truth_reader.height)
            # Twice, in opposite orders: a reader that depends on where it was before is not exact.
            forward, backward = reader.native_batches([probes, probes[::-1]], full_size=full_size)
            exact = np.array_equal(forward, truth) and np.array_equal(backward, truth[::-1])
    except Exception:  # either decoder failing part-way: a corrupt file, not one to trust decord on
        exact = False
    finally:
        if truth_reader is not None:
            truth_reader.close()
        if hasattr(source, "seek"):
            source.seek(0)
    return exact


def open_video(
    source: Source,
    backend: str = "auto",
    size: Size = None,
    num_threads: int = 0,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    max_pixels: int | None = None,
    stream: int | None = None,
    seek_mode: str = "exact",
) -> VideoReader:
    """Open a video file (path, bytes or binary file object) for frame access.

    Args:
        source: a path, raw bytes, or a readable binary file object (e.g. a tar member in memory).
        backend: "auto", "decord", "pyav" or "torchcodec" (the optional extra). "auto" uses decord, and PyAV
            where decord cannot open the file, would return wrong frames (see the module notes), or is slower:
            HEVC, H.264 (with B-frames PyAV leaves the pictures nothing references out of the decoder;
            decord decodes them all), MPEG-4 part 2 and GIF; torchcodec only on `TORCHCODEC_FASTER`.
            "torchcodec" reads with torchcodec wherever it is exact (checked once per file outside
            MP4/MKV/WebM/FLV/GIF), else PyAV.
        size: resize at decode time: an int short side, or an explicit (W, H). None keeps the size.
        num_threads: decoder threads (0 lets the library choose).
        timeout_s: give up on a decode call that blocks longer than this; None waits forever.
        max_pixels: refuse frames with more pixels than this, from the header, before decoding any
            (default `MAX_FRAME_PIXELS`, or ``$VIDATTN_MAX_FRAME_PIXELS``).
        stream: index of the video stream to read, as `probe` lists them; None reads the one FFmpeg
            picks (most pixels, then the default disposition). Every backend reads the same stream:
            decord, which cannot choose, is not used for files with several video streams.
        seek_mode: torchcodec's seek mode, "exact" (indexes the file at open) or "approximate" (trusts
            the header); the same exactness check applies to both. Other backends ignore it.

    Raises:
        VideoDecodeError: the file is missing, unreadable or not a decodable video: no video stream,
            text (FFmpeg's `tty` demuxer renders any ``.txt`` file as "video"), a still image, or
            frames over `max_pixels`.
    """
    _check_path(source)
    _output_size(2, 2, size)  # a bad size is a programming error: ValueError, before any decoding
    max_pixels = max_frame_pixels(max_pixels)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    installed = available_backends()
    has_decord = "decord" in installed
    if backend == "decord" and not has_decord:
        raise VideoDecodeError(_source_name(source), "decord backend requested but decord2 is not installed")
    if backend == "torchcodec" and "torchcodec" not in installed:
        raise VideoDecodeError(
            _source_name(source), "torchcodec backend requested but torchcodec is not installed (vidattn[torchcodec])"
        )
    use_torchcodec = backend == "torchcodec" or (backend == "auto" and TORCHCODEC_FASTER and "torchcodec" in installed)

    def pyav(container: object = None) -> PyAVReader:
        return PyAVReader(
            source,
            size=size,
            num_threads=num_threads,
            timeout_s=timeout_s,
            max_pixels=max_pixels,
            stream=stream,
            container=container,
        )

    if backend == "pyav" or (not has_decord and not use_torchcodec):
        return pyav()
    # Exact frames are the contract; a backend is a preference. Every reason to read this file with PyAV
    # instead of decord is decided here: from the headers, then from decord's own output.
    path = _source_name(source)

    def header_or_reader() -> tuple[StreamHeader, PyAVReader | None]:
        header, container = open_header(
            source,
            path,
            max_pixels,
            want_first_frame=lambda h: (
                _why_pyav(h, backend) is None or (use_torchcodec and _why_not_torchcodec(h, backend) is None)
            ),
            stream_index=stream,
        )
        if container is None:
            return header, None
        try:  # nothing was decoded: PyAV reads this file, from the same container, in the same timed call
            return header, pyav(container)
        except BaseException:
            container.close()
            raise

    header, pyav_reader = run_with_timeout(header_or_reader, timeout_s, path)
    if pyav_reader is not None:
        return pyav_reader
    if use_torchcodec and _why_not_torchcodec(header, backend) is None:
        reader = _open_torchcodec(
            source, header, size, num_threads, timeout_s, max_pixels, seek_mode, explicit=backend == "torchcodec"
        )
        if reader is not None:
            return reader
    if backend == "torchcodec" or not has_decord or _why_pyav(header, backend) is not None:
        return pyav()
    try:
        reader = DecordReader(
            source, header, size=size, num_threads=num_threads, timeout_s=timeout_s, max_pixels=max_pixels
        )
    except VideoDecodeError as first:
        if backend == "decord":
            raise
        try:
            return pyav()
        except VideoDecodeError as second:
            # Both failed: PyAV's reason is usually the more precise one.
            raise VideoDecodeError(first.path, second.reason) from None
    # decord's frames malformed at this width, or its random access not exact in this file: PyAV reads it.
    if not reader.output_ok():
        reader.close()
        return pyav()
    if not _decord_proven(header):
        if not reader._call(lambda: decord_is_exact(reader, header, source)):
            reader.close()
            return pyav()
        reader.pause()  # the check started decord's decode-ahead
    return reader


def _open_torchcodec(
    source: Source,
    header: StreamHeader,
    size: Size,
    num_threads: int,
    timeout_s: float | None,
    max_pixels: int,
    seek_mode: str,
    explicit: bool,
) -> TorchCodecReader | None:
    """A torchcodec reader for this file, or None where torchcodec cannot open it or is not exact on it."""
    from vidattn.data.decode.torchcodec_reader import TorchCodecReader

    try:
        import torchcodec.decoders  # noqa: F401  the optional extra, imported on use; it loads FFmpeg's libraries
    except Exception as exc:  # installed, but its FFmpeg libraries (or torch ABI) do not load here
        if explicit:
            raise VideoDecodeError(
                _source_name(source), f"torchcodec is installed but does not load: {_short(exc)}"
            ) from None
        return None
    try:
        reader = TorchCodecReader(
            source,
            header,
            size=size,
            num_threads=num_threads,
            timeout_s=timeout_s,
            max_pixels=max_pixels,
            seek_mode=seek_mode,
        )
    except VideoDecodeError:
        return None  # PyAV reads it, or says precisely why it cannot
    if _decord_proven(header) and seek_mode == "exact":
        return reader
    # Outside the containers whose index is exact, or trusting the header's count: checked once per file.
    if not reader._call(lambda: decord_is_exact(reader, header, source)):
        reader.close()
        return None
    return reader


def probe(
    source: Source, backend: str = "auto", timeout_s: float | None = DEFAULT_TIMEOUT_S, stream: int | None = None
) -> VideoInfo:
    """Open a video just long enough to read its metadata (of `stream`, FFmpeg's best by default; all
    video streams are listed in ``streams``)."""
    with open_video(source, backend=backend, timeout_s=timeout_s, stream=stream) as reader:
        return reader.info()
