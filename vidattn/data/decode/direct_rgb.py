"""8-bit frames converted to RGB by swscale straight into the caller's array, of the crop alone.

PyAV's `VideoReformatter` converts the whole frame into a frame of its own, which the reader then copies
(the crop of it) into the clip: on a 320x240 clip cropped to 240x240 that conversion and copy were 75-80 us of
a frame's ~200 us. Here the same swscale library PyAV loaded (found in the process's memory map, called
through ctypes) converts only the crop, from the decoded frame's planes into the destination rows. The
pixels are the same, bit for bit, as PyAV's conversion cropped after:

- swscale's unscaled YUV 4:2:0 -> RGB converters compute each pixel from its own luma sample and the chroma
  sample of its 2x2 block; a crop whose left and top are even starts on a block, so every pixel sees the
  same samples as in the whole frame. Odd offsets, odd heights (which choose another converter), widths
  not a multiple of 8 (the SIMD converters round the row to 8 pixels, which the caller's unpadded rows
  would cut short) and anything resized or rotated stay on PyAV's path.
- The SIMD converters write up to a block past each row's end; within the destination that is the next
  row's start, written again right after. Past the last row, that is the next frame of the read where the
  caller says so (``spare``: it is written after this one); otherwise the last two rows go through a padded
  buffer (a second swscale call and a copy, a fifth of a 240x240 crop's conversion).
- Only the formats and colour tags checked here (`_FORMATS`, `_YUV_TAGS`); and every converter is compared
  once per process with PyAV's own conversion on the first frame it converts (`DirectRGB.bind`), and
  never used again where they differ.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

# Source formats converted here: 4:2:0 YUV (MPEG-4 part 2, H.264, ...) and GIF's BGRA.
_FORMATS = frozenset({"yuv420p", "bgra"})
# YUV frames whose tags give swscale's default BT.601 limited-range conversion (what an untagged frame gets);
# (colorspace, color_range) as PyAV reports them: unspecified/BT.470BG/SMPTE 170M, unspecified/limited.
_YUV_TAGS = frozenset((space, rng) for space in (2, 5, 6) for rng in (0, 1))
_SWS_BILINEAR = 2  # the flags PyAV's reformat passes (no scaling happens: they choose nothing here)
_TAIL_ROWS = 2  # the last rows (one chroma row of 4:2:0), converted into a padded buffer
_TAIL_PAD = 256  # bytes past a tail row that a converter may write

_P4 = ctypes.c_void_p * 4
_I4 = ctypes.c_int * 4


class _Lib:
    """ctypes bindings of the libswscale and libavutil PyAV loaded (None where they cannot be found)."""

    def __init__(self, swscale: str, avutil: str) -> None:
        self.sws = ctypes.CDLL(swscale)
        avu = ctypes.CDLL(avutil)
        avu.av_get_pix_fmt.restype = ctypes.c_int
        avu.av_get_pix_fmt.argtypes = [ctypes.c_char_p]
        self.pix_fmt = avu.av_get_pix_fmt
        self.sws.sws_getContext.restype = ctypes.c_void_p
        self.sws.sws_getContext.argtypes = [ctypes.c_int] * 7 + [ctypes.c_void_p] * 3
        self.sws.sws_scale.restype = ctypes.c_int
        self.sws.sws_scale.argtypes = [ctypes.c_void_p, _P4, _I4, ctypes.c_int, ctypes.c_int, _P4, _I4]
        self.sws.sws_freeContext.restype = None
        self.sws.sws_freeContext.argtypes = [ctypes.c_void_p]
        self.rgb24 = self.pix_fmt(b"rgb24")


_LIB: _Lib | None = None
_LIB_LOADED = False
_LOCK = threading.Lock()
# (format, width, height) -> whether the direct conversion matched PyAV's on the first frame it converted.
_VERIFIED: dict[tuple[str, int, int], bool] = {}


def _loaded_library(name: str) -> str | None:
    """The path of the shared library `name` (e.g. "swscale") this process has loaded, from its memory map."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                base = path.rsplit("/", 1)[-1]
                if base.startswith(f"lib{name}") and ".so" in base:
                    return path
    except OSError:
        return None
    return None


def _lib() -> _Lib | None:
    global _LIB, _LIB_LOADED
    if not _LIB_LOADED:
        with _LOCK:
            if not _LIB_LOADED:
                import av.video.reformatter  # noqa: F401  (loads PyAV's libswscale)

                swscale, avutil = _loaded_library("swscale"), _loaded_library("avutil")
                try:
                    _LIB = _Lib(swscale, avutil) if swscale and avutil else None
                except (OSError, AttributeError):
                    _LIB = None
                _LIB_LOADED = True
    return _LIB


class DirectRGB:
    """One reader's converter: `bind` gives a read's, which writes each frame's crop as RGB into the read's array, or
    declines.

    Not shared between threads (a swscale context is not); `close` frees its contexts.
    """

    def __init__(self) -> None:
        self._contexts: dict[tuple[str, int, int], int] = {}
        self._src, self._src_stride, self._dst, self._dst_stride = _P4(), _I4(), _P4(), _I4()
        self._tail: np.ndarray | None = None

    def bind(
        self, out: np.ndarray, x: int, y: int, size: tuple[int, int], reference: Callable[[Any], np.ndarray]
    ) -> Callable[[Any, int, bool], bool] | None:
        """The converter of one read into `out` (``(n, h, w, 3)`` uint8): ``write(frame, k, spare)`` writes the RGB of
        `frame`'s box at (`x`, `y`) the size of ``out[k]`` into ``out[k]`` and returns True, or returns False where this
        conversion is not used (the caller then converts the frame as before, over whatever was written). None where
        it takes no frame of this read. What depends on `out` and the box is checked here, once per read (each check
        per frame cost more than a tenth of the Python a 320x240 frame's read runs); each frame's format, size and
        colour tags in ``write``.

        Args:
            out: the read's array, C-contiguous (else None: frame k + 1 must lie right after frame k).
            size: the (width, height) the reader returns frames at, unrotated: a frame of another size (a stream whose
                resolution changes, a resized read) is scaled by PyAV's path, not here.
            reference: PyAV's whole-frame RGB of a frame, asked for once per process and (format, crop size) to check
                this conversion against.

        ``write``'s `spare`: the caller writes ``out[k + 1]`` after this call (the next frame of the read), so the
        converter may write past ``out[k]``'s last row.
        """
        n, h, w = out.shape[:3]
        fw, fh = size
        if not n or not out.flags.c_contiguous or x < 0 or y < 0 or x + w > fw or y + h > fh or _lib() is None:
            return None
        yuv_box = not (x % 2 or y % 2 or h % 2 or w % 8)
        base, step = out.ctypes.data, h * w * 3
        may_spill = step >= _TAIL_PAD

        def write(frame: Any, k: int, spare: bool) -> bool:
            fmt = frame.format.name
            if frame.width != fw or frame.height != fh:
                return False
            if fmt == "yuv420p":
                if not yuv_box or (frame.colorspace, frame.color_range) not in _YUV_TAGS:
                    return False
            elif fmt not in _FORMATS:
                return False
            verified = _VERIFIED.get((fmt, w, h))
            if verified is None:
                self._write(frame, fmt, x, y, w, h, base + k * step, spill=False)
                verified = bool(np.array_equal(out[k], reference(frame)[y : y + h, x : x + w]))
                _VERIFIED[(fmt, w, h)] = verified
                return verified
            if verified:
                self._write(frame, fmt, x, y, w, h, base + k * step, spill=spare and may_spill)
            return verified

        return write

    def _context(self, fmt: str, w: int, h: int) -> int:
        lib = _lib()
        src_fmt = lib.pix_fmt(fmt.encode())
        ctx = lib.sws.sws_getContext(w, h, src_fmt, w, h, lib.rgb24, _SWS_BILINEAR, None, None, None)
        if not ctx:
            raise MemoryError("swscale could not make a context")
        self._contexts[(fmt, w, h)] = ctx
        return ctx

    def _write(self, frame: Any, fmt: str, x: int, y: int, w: int, h: int, dst: int, *, spill: bool) -> None:
        """swscale's RGB of `frame`'s ``w x h`` box at (`x`, `y`) into the rows at address `dst`; past the last row
        only where `spill` (else the last rows go through a padded buffer)."""
        ctx = self._contexts.get((fmt, w, h)) or self._context(fmt, w, h)
        scale = _LIB.sws.sws_scale
        src, src_stride = self._src, self._src_stride
        if fmt == "yuv420p":
            luma, cb, cr = frame.planes
            size = luma.line_size
            src[0], src_stride[0] = luma.buffer_ptr + y * size + x, size
            size = cb.line_size
            src[1], src_stride[1] = cb.buffer_ptr + (y >> 1) * size + (x >> 1), size
            size = cr.line_size
            src[2], src_stride[2] = cr.buffer_ptr + (y >> 1) * size + (x >> 1), size
        else:  # one packed plane of 4 bytes per pixel
            plane = frame.planes[0]
            size = plane.line_size
            src[0], src_stride[0] = plane.buffer_ptr + y * size + 4 * x, size
        row = w * 3
        dst_ptr, dst_stride = self._dst, self._dst_stride
        dst_stride[0] = row
        body = h if spill else max(h - _TAIL_ROWS, 0)
        if body:
            dst_ptr[0] = dst
            scale(ctx, src, src_stride, 0, body, dst_ptr, dst_stride)
        if body == h:
            return
        # The last rows into a buffer with room past them, then copied: a converter may write past a row's end.
        tail_rows = h - body
        need = tail_rows * row + _TAIL_PAD
        if self._tail is None or self._tail.size < need:
            self._tail = np.empty(need, dtype=np.uint8)
        for i in range(3 if fmt == "yuv420p" else 1):
            src[i] += (body >> (1 if i else 0) if fmt == "yuv420p" else body) * src_stride[i]
        dst_ptr[0] = self._tail.ctypes.data
        scale(ctx, src, src_stride, 0, tail_rows, dst_ptr, dst_stride)
        ctypes.memmove(dst + body * row, dst_ptr[0], tail_rows * row)

    def close(self) -> None:
        lib = _LIB
        for ctx in self._contexts.values():
            if lib is not None:
                lib.sws.sws_freeContext(ctx)
        self._contexts.clear()
