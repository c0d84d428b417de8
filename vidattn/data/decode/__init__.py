"""Video decoding behind one interface, with decord (decord2), PyAV and (optional) torchcodec backends.

The package, along its seams: `reader` (the `VideoReader` contract, its timeout and fork safety),
`header` (what a file is, from its headers: refusals and the frame-size limit), `pyav_reader`,
`decord_reader`, `torchcodec_reader` (the optional extra ``vidattn[torchcodec]``, imported when a reader
opens), and `policy` (`open_video`/`probe`: which backend reads a file, decided in one place).

`open_video` returns a `VideoReader`. Whatever the backend, a reader:

- returns RGB ``torch.uint8`` frames shaped ``(T, H, W, C)`` from `get_frames(indices)`,
  where an index is the frame's position in presentation order (0-based), never a timestamp;
- streams with `iter_frames(step=... | fps=...)`, decoding in order and holding one frame at a time;
- verifies the frame count: a file whose header claims more frames than decode raises
  `VideoDecodeError` for the missing ones (and corrects `num_frames`) instead of returning garbage;
- applies the container's rotation metadata, so frames come out as a player shows them
  (this is decord's behaviour; the PyAV backend rotates to match). ``width``/``height`` are
  the displayed, post-rotation, post-resize size;
- can resize at decode time (``size=short_side`` or ``size=(W, H)``) so big videos never
  materialise at full resolution;
- gives up with `VideoDecodeError` when one call blocks longer than ``timeout_s`` instead of hanging.

Where decord is used: decord's random access seeks to a key frame and counts forward, which
returns a neighbouring frame on some HEVC streams; reading in order is exact there, so for codecs
on `SEEK_UNSAFE_CODECS` the decord reader decodes in order and keeps the requested frames. In
AVI, MPEG-PS and MPEG-TS files, and for MPEG-1/2/4 part 2 video, decord is exact on some files and
returns other frames altogether on others (B-frames, odd indexes; even in order, for some TS), and
nothing in the headers tells them apart. Codecs on `DECORD_CODECS` in containers on
`DECORD_CONTAINERS` (MP4/MOV, MKV/WebM, FLV, GIF) are read with decord directly; for any other file,
decord's random access is checked once per file against PyAV's exact decode at frames spread over
it, and decord reads the file only if they match. `open_video` reads the rest with PyAV whatever the
backend asked for (the reader's ``backend`` says which one runs). When decord fails part-way through
a corrupt file, the reader switches to PyAV, whose in-order decode fails at a fixed frame, to return
the frames that decode and correct the count.

``backend="auto"`` also reads HEVC and H.264 with PyAV: with B-frames PyAV never decodes a picture
that nothing references unless a read returns it, which decord cannot do (see `PyAVReader` and
`PYAV_FASTER_CODECS`), and without them the same FFmpeg decoder runs in both and PyAV still reads
faster; MPEG-4 part 2 (XviD, the UCF101 format), which PyAV reads 2.9-4.4x faster
(`PYAV_FASTER_ALWAYS`; small frames on one decoder thread), and GIF, where both run the same FFmpeg
decoder and PyAV needs less CPU per clip. decord keeps the rest (VP8/VP9, AV1, MJPEG, ...).
Every backend reads the same stream, FFmpeg's best (`open_video(stream=...)` picks another), and
converts to RGB as ``ffmpeg -pix_fmt rgb24`` does, bit for bit.
"""

from vidattn.data.decode.decord_reader import SEEK_UNSAFE_CODECS, DecordReader
from vidattn.data.decode.header import MAX_FRAME_PIXELS, TEXT_CODECS, TEXT_DEMUXERS, StreamHeader, max_frame_pixels
from vidattn.data.decode.policy import (
    DECORD_CODECS,
    DECORD_CONTAINERS,
    PYAV_FASTER_ALWAYS,
    PYAV_FASTER_CODECS,
    TORCHCODEC_FASTER,
    available_backends,
    open_video,
    probe,
)
from vidattn.data.decode.pyav_reader import PYAV_SEEK_UNSAFE_CONTAINERS, PyAVReader
from vidattn.data.decode.reader import (
    DEFAULT_TIMEOUT_S,
    Size,
    Source,
    VideoInfo,
    VideoReader,
    silence_ffmpeg_log,
)
from vidattn.data.decode.reader import _source_name as _source_name

# Private, kept importable from here for the modules and tests that used them before the split.
from vidattn.data.decode.verdicts import _DECORD_VERDICTS as _DECORD_VERDICTS

__all__ = [
    "VideoReader",
    "VideoInfo",
    "PyAVReader",
    "DecordReader",
    "StreamHeader",
    "open_video",
    "probe",
    "available_backends",
    "silence_ffmpeg_log",
    "max_frame_pixels",
    "Size",
    "Source",
    "DEFAULT_TIMEOUT_S",
    "MAX_FRAME_PIXELS",
    "SEEK_UNSAFE_CODECS",
    "DECORD_CONTAINERS",
    "DECORD_CODECS",
    "PYAV_FASTER_CODECS",
    "PYAV_FASTER_ALWAYS",
    "TORCHCODEC_FASTER",
    "PYAV_SEEK_UNSAFE_CONTAINERS",
    "TEXT_DEMUXERS",
    "TEXT_CODECS",
]
