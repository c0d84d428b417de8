"""Just enough H.264 / HEVC / MPEG-4 part 2 bitstream reading to leave out pictures that nothing needs.

A picture that no other picture predicts from (a non-reference picture: most B-frames in H.264 from
x264, the ``*_N`` pictures of HEVC) can be left out of the decoder's input without changing any other
frame. The PyAV reader does that for pictures a read does not ask for, so a strided clip or a sparse
scan decodes a third to a half less. Two things have to be known per packet, before decoding it:

- whether it is a reference picture: a field of the NAL unit header (`picture_kind`);
- its position in presentation order. Containers with real presentation timestamps give that
  (MP4, MKV). AVI stores decode order only, so for H.264 the position comes from the picture order
  count in the slice header (`H264PictureOrder`); HEVC in such containers is left alone.

Anything this module does not cover (field pictures, POC type 1, slice groups, redundant slices,
data partitioning, a header that runs past the bytes at hand) raises `Unsupported`, and the reader
then decodes every picture, as it would without this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Unsupported", "nal_length_size", "nal_units", "picture_kind", "H264PictureOrder"]

# H.264 NAL unit types: coded slice (non-IDR), IDR slice, SPS, PPS; HEVC VCL types are 0..31.
_H264_SLICE, _H264_IDR, _H264_SPS, _H264_PPS = 1, 5, 7, 8
_H264_PARTITION = (2, 3, 4)
_HEVC_VCL_MAX = 31
# MPEG-4 part 2: the VOP start code, and the vop_coding_type of a B-VOP.
_MPEG4_VOP, _MPEG4_B_VOP = b"\x00\x00\x01\xb6", 2
# Profiles whose SPS carries chroma format, bit depths and scaling matrices.
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_P, _B, _I, _SP, _SI = range(5)
# Bytes of a slice NAL unit read for its header: far more than any header this module parses needs.
_HEADER_BYTES = 512


class Unsupported(Exception):
    """The stream uses a feature outside what this module reads; decode everything instead."""


def nal_length_size(codec: str, extradata: bytes | None) -> int:
    """Bytes of the length prefix of each NAL unit in a packet, or 0 for Annex B start codes.

    MP4/MKV store avcC / hvcC configuration records in the extradata (first byte 1) and
    length-prefixed NAL units in packets; AVI, MPEG-TS and raw streams use start codes.
    """
    if codec == "mpeg4" or not extradata or extradata[0] != 1:
        return 0  # MPEG-4 part 2 has start codes in every container
    if codec == "h264" and len(extradata) > 4:
        return (extradata[4] & 3) + 1
    if codec in ("hevc", "h265") and len(extradata) > 21:
        return (extradata[21] & 3) + 1
    raise Unsupported(f"short {codec} configuration record")


def nal_units(data: bytes | memoryview, length_size: int) -> Iterator[memoryview]:
    """The NAL units in one packet (header byte first), from length prefixes or Annex B start codes.

    They are views into `data`, not copies: a slice's payload can be hundreds of kilobytes and only
    its first bytes are read.
    """
    view = memoryview(data)
    n = len(view)
    if length_size:
        pos = 0
        while pos + length_size <= n:
            size = int.from_bytes(view[pos : pos + length_size], "big")
            pos += length_size
            if size == 0 or pos + size > n:
                raise Unsupported("NAL unit length runs past the packet")
            yield view[pos : pos + size]
            pos += size
        return
    raw = data if isinstance(data, bytes) else bytes(view)  # start codes are found with bytes.find
    start = raw.find(b"\x00\x00\x01")
    while start >= 0:
        begin = start + 3
        nxt = raw.find(b"\x00\x00\x01", begin)
        end = n if nxt < 0 else nxt
        if begin < end:
            yield view[begin:end]
        start = nxt


def _avcc_parameter_sets(extradata: bytes) -> list[bytes]:
    """SPS and PPS NAL units of an avcC record."""
    out, pos = [], 6
    for count_mask in (0x1F, 0xFF):
        count = extradata[pos - 1] & count_mask
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            out.append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
        pos += 1  # the PPS count byte follows the SPS list
    return out


def picture_kind(codec: str, data: bytes | memoryview, length_size: int) -> tuple[bool, int] | None:
    """``(maybe_unreferenced, temporal_id)`` of the picture in one packet; None when it holds no picture.

    H.264: a picture is unreferenced when its slices have ``nal_ref_idc == 0`` (temporal id 0). HEVC:
    a sub-layer non-reference picture (``TRAIL_N``, ``RADL_N``, ...) can still be referenced by
    pictures of higher temporal sub-layers, so it is unreferenced only on the stream's top sub-layer:
    the caller compares `temporal_id` with the highest one in the stream. MPEG-4 part 2 (XviD/DivX): a
    B-VOP is never a reference (a packet with two VOPs, DivX's packed bitstream, is `Unsupported`).
    """
    if codec == "mpeg4":
        return _mpeg4_picture_kind(data)
    for nal in nal_units(data, length_size):
        if codec == "h264":
            kind = nal[0] & 0x1F
            if kind in _H264_PARTITION:
                raise Unsupported("data partitioning")
            if kind in (_H264_SLICE, _H264_IDR):
                return not nal[0] & 0x60, 0
        elif len(nal) >= 2:
            kind = (nal[0] >> 1) & 0x3F
            if kind <= _HEVC_VCL_MAX:
                return kind <= 14 and kind % 2 == 0, (nal[1] & 7) - 1
    return None


def _mpeg4_picture_kind(data: bytes | memoryview) -> tuple[bool, int] | None:
    raw = data if isinstance(data, bytes) else bytes(data)
    types = []
    start = raw.find(_MPEG4_VOP)
    while start >= 0:
        if start + 4 >= len(raw):
            raise Unsupported("VOP header runs past the packet")
        types.append(raw[start + 4] >> 6)  # vop_coding_type: 0 I, 1 P, 2 B, 3 S (sprite)
        start = raw.find(_MPEG4_VOP, start + 4)
    if len(types) > 1:
        # DivX "packed B-frames": a P-VOP and the B-VOP shown before it in one packet, which the decoder
        # splits and reorders itself; the timestamps of what it outputs do not follow the packets.
        raise Unsupported("packed bitstream")
    return (types[0] == _MPEG4_B_VOP, 0) if types else None


class _Bits:
    """Big-endian bit reader over an RBSP (emulation-prevention bytes already removed)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._nbits = 8 * len(data)
        self._pos = 0

    def u(self, n: int) -> int:
        if self._pos + n > self._nbits:
            raise Unsupported("header runs past the bytes read")
        self._pos += n
        return (self._value >> (self._nbits - self._pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise Unsupported("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _rbsp(nal: bytes | memoryview, limit: int | None = None) -> bytes:
    """The NAL unit's payload after its header byte, emulation-prevention bytes removed."""
    body = bytes(nal[1:] if limit is None else nal[1 : 1 + limit])
    return body.replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(frozen=True)
class _SPS:
    log2_max_frame_num: int
    poc_type: int
    log2_max_poc_lsb: int
    frame_mbs_only: bool
    separate_colour_plane: bool
    chroma_array_type: int


@dataclass(frozen=True)
class _PPS:
    sps_id: int
    bottom_field_poc_present: bool
    num_ref_idx_default: tuple[int, int]
    weighted_pred: bool
    weighted_bipred_idc: int
    redundant_pic_cnt_present: bool


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = nxt = 8
    for _ in range(size):
        if nxt:
            nxt = (last + bits.se() + 256) % 256
        last = nxt or last


def _parse_sps(nal: bytes) -> tuple[int, _SPS]:
    b = _Bits(_rbsp(nal))
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    sps_id = b.ue()
    chroma_format, separate = 1, False
    if profile in _HIGH_PROFILES:
        chroma_format = b.ue()
        if chroma_format == 3:
            separate = bool(b.u(1))
        b.ue(), b.ue(), b.u(1)  # bit depths, qpprime_y_zero_transform_bypass
        if b.u(1):  # seq_scaling_matrix_present
            for i in range(12 if chroma_format == 3 else 8):
                if b.u(1):
                    _skip_scaling_list(b, 16 if i < 6 else 64)
    log2_max_frame_num = b.ue() + 4
    poc_type = b.ue()
    log2_max_poc_lsb = 0
    if poc_type == 0:
        log2_max_poc_lsb = b.ue() + 4
    elif poc_type == 1:
        raise Unsupported("picture order count type 1")
    b.ue(), b.u(1), b.ue(), b.ue()  # max_num_ref_frames, gaps, width and height in macroblocks
    frame_mbs_only = bool(b.u(1))
    sps = _SPS(
        log2_max_frame_num, poc_type, log2_max_poc_lsb, frame_mbs_only, separate, 0 if separate else chroma_format
    )
    return sps_id, sps


def _parse_pps(nal: bytes) -> tuple[int, _PPS]:
    b = _Bits(_rbsp(nal))
    pps_id, sps_id = b.ue(), b.ue()
    b.u(1)  # entropy_coding_mode
    bottom_field_poc_present = bool(b.u(1))
    if b.ue():
        raise Unsupported("slice groups")
    num_ref_idx = (b.ue() + 1, b.ue() + 1)
    weighted_pred, weighted_bipred_idc = bool(b.u(1)), b.u(2)
    b.se(), b.se(), b.se(), b.u(1), b.u(1)  # QP inits, chroma QP offset, deblocking, constrained intra
    redundant = bool(b.u(1))
    return pps_id, _PPS(sps_id, bottom_field_poc_present, num_ref_idx, weighted_pred, weighted_bipred_idc, redundant)


@dataclass(frozen=True)
class _Slice:
    idr: bool
    ref: bool
    poc_lsb: int
    delta_bottom: int
    mmco5: bool
    sps: _SPS


class H264PictureOrder:
    """Presentation-order keys of H.264 pictures, fed one packet at a time in decode order.

    `key(packet)` returns ``(period, poc)``: pictures sort into presentation order by it. A period
    starts at each IDR picture and at each picture with memory management operation 5 (both output
    every earlier picture first and restart the picture order count). POC type 0 follows the
    standard's 8.2.1.1; with POC type 2 the presentation order is the decode order.
    """

    def __init__(self, extradata: bytes | None) -> None:
        self.length_size = nal_length_size("h264", extradata)
        self._sps: dict[int, _SPS] = {}
        self._pps: dict[int, _PPS] = {}
        if self.length_size and extradata:
            for nal in _avcc_parameter_sets(extradata):
                self._parameter_set(nal)
        elif extradata:
            for nal in nal_units(extradata, 0):
                self._parameter_set(nal)
        self._period = 0
        self._decoded = 0
        self._prev_msb = self._prev_lsb = 0

    def _parameter_set(self, nal: bytes | memoryview) -> None:
        kind = nal[0] & 0x1F
        if kind == _H264_SPS:
            sps_id, sps = _parse_sps(nal)
            self._sps[sps_id] = sps
        elif kind == _H264_PPS:
            pps_id, pps = _parse_pps(nal)
            self._pps[pps_id] = pps

    def key(self, data: bytes | memoryview) -> tuple[int, int] | None:
        """The picture in this packet: its presentation-order key, or None for a packet without one."""
        picture = None
        for nal in nal_units(data, self.length_size):
            kind = nal[0] & 0x1F
            if kind in (_H264_SPS, _H264_PPS):
                self._parameter_set(nal)
            elif kind in _H264_PARTITION:
                raise Unsupported("data partitioning")
            elif kind in (_H264_SLICE, _H264_IDR):
                if picture is None:
                    picture = self._slice(nal)
                elif _Bits(_rbsp(nal, 8)).ue() == 0:  # first_mb_in_slice 0 again: a second picture
                    raise Unsupported("two pictures in one packet")
        if picture is None:
            return None
        self._decoded += 1
        if picture.idr:
            self._period += 1
            self._prev_msb = self._prev_lsb = 0
        if picture.sps.poc_type == 2:
            key = (self._period, self._decoded)
        else:
            max_lsb = 1 << picture.sps.log2_max_poc_lsb
            lsb, msb = picture.poc_lsb, self._prev_msb
            if lsb < self._prev_lsb and self._prev_lsb - lsb >= max_lsb // 2:
                msb += max_lsb
            elif lsb > self._prev_lsb and lsb - self._prev_lsb > max_lsb // 2:
                msb -= max_lsb
            top = msb + lsb
            key = (self._period, min(top, top + picture.delta_bottom))
            if picture.ref:
                self._prev_msb, self._prev_lsb = msb, lsb
        if picture.mmco5:
            # After decoding, the picture's own order count becomes 0 and every earlier picture is output first.
            self._period += 1
            key = (self._period, 0)
            self._prev_msb = 0
            self._prev_lsb = max(0, -picture.delta_bottom) if picture.sps.poc_type == 0 else 0
        return key

    def _slice(self, nal: bytes | memoryview) -> _Slice:
        ref, idr = bool(nal[0] & 0x60), (nal[0] & 0x1F) == _H264_IDR
        b = _Bits(_rbsp(nal, _HEADER_BYTES))
        b.ue()  # first_mb_in_slice
        slice_type = b.ue() % 5
        pps = self._pps.get(b.ue())
        sps = self._sps.get(pps.sps_id) if pps is not None else None
        if pps is None or sps is None:
            raise Unsupported("slice before its parameter sets")
        if sps.separate_colour_plane:
            b.u(2)
        b.u(sps.log2_max_frame_num)  # frame_num
        if not sps.frame_mbs_only and b.u(1):
            raise Unsupported("field pictures")
        if idr:
            b.ue()  # idr_pic_id
        poc_lsb = delta_bottom = 0
        if sps.poc_type == 0:
            poc_lsb = b.u(sps.log2_max_poc_lsb)
            if pps.bottom_field_poc_present:
                delta_bottom = b.se()
        if pps.redundant_pic_cnt_present and b.ue():
            raise Unsupported("redundant slices")
        mmco5 = False
        if ref:
            # Memory management operation 5 restarts the order count; it sits at the end of the header.
            mmco5 = self._has_mmco5(b, slice_type, idr, pps, sps)
        return _Slice(idr, ref, poc_lsb, delta_bottom, mmco5, sps)

    @staticmethod
    def _has_mmco5(b: _Bits, slice_type: int, idr: bool, pps: _PPS, sps: _SPS) -> bool:
        if slice_type == _B:
            b.u(1)  # direct_spatial_mv_pred
        n_ref = list(pps.num_ref_idx_default)
        if slice_type in (_P, _SP, _B) and b.u(1):  # num_ref_idx_active_override
            n_ref[0] = b.ue() + 1
            if slice_type == _B:
                n_ref[1] = b.ue() + 1
        lists = 2 if slice_type == _B else 1 if slice_type in (_P, _SP) else 0
        for _ in range(lists):  # ref_pic_list_modification
            if b.u(1):
                for _ in range(100):
                    op = b.ue()
                    if op == 3:
                        break
                    if op > 2:
                        raise Unsupported("reference list modification outside plain H.264")
                    b.ue()
                else:
                    raise Unsupported("endless reference list modification")
        weighted = (pps.weighted_pred and slice_type in (_P, _SP)) or (
            pps.weighted_bipred_idc == 1 and slice_type == _B
        )
        if weighted:  # pred_weight_table
            b.ue()
            if sps.chroma_array_type:
                b.ue()
            for n in n_ref[:lists]:
                for _ in range(n):
                    if b.u(1):
                        b.se(), b.se()
                    if sps.chroma_array_type and b.u(1):
                        b.se(), b.se(), b.se(), b.se()
        if idr:
            return False  # no_output_of_prior_pics and long_term_reference: nothing that moves the order
        if not b.u(1):  # adaptive_ref_pic_marking_mode
            return False
        found = False
        for _ in range(100):
            op = b.ue()
            if op == 0:
                return found
            if op == 5:
                found = True
            elif op == 3:
                b.ue(), b.ue()
            elif op in (1, 2, 4, 6):
                b.ue()
            else:
                raise Unsupported("bad memory management operation")
        raise Unsupported("endless memory management operations")
