"""H.264 / HEVC header reading (`vidattn.data.bitstream`) and the PyAV reader leaving out pictures
that nothing references. Every order the parser derives is checked against the real decoder's
output order, and every read against the index each frame encodes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vidattn.data import VideoDecodeError, open_video
from vidattn.data.bitstream import H264PictureOrder, Unsupported, _Bits, nal_length_size, nal_units, picture_kind
from vidattn.testing import index_frame, make_index_video, read_index


def indices_of(frames) -> list[int]:
    return [read_index(f) for f in frames]


def encode(path: Path, n: int, *, codec: str = "libx264", params: str = "", gop: int = 250, bframes: int = 3) -> Path:
    """Index frames through x264/x265 with extra encoder parameters (B-pyramid, slices, ...)."""
    options = {"crf": "18"}
    if params:
        options["x264-params" if codec == "libx264" else "x265-params"] = params
    elif codec == "libx265":
        options["x265-params"] = "log-level=error"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = bframes
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decoder_order_and_keys(path: Path) -> tuple[list[int], list[int], list[tuple[int, int]], list[bool]]:
    """(pts in the decoder's output order, packet pts in decode order, their order keys, unreferenced?)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        order = H264PictureOrder(stream.codec_context.extradata)
        pts, keys, unref = [], [], []
        for packet in container.demux(stream):
            if packet.size:
                data = bytes(packet)
                pts.append(packet.pts)
                keys.append(order.key(data))
                unref.append(picture_kind("h264", data, order.length_size)[0])
        container.seek(0)
        shown = [frame.pts for frame in container.decode(stream)]
    return shown, pts, keys, unref


def test_exp_golomb_codes():
    # 1 | 010 | 011 | 00100 | 00101 -> ue 0, 1, 2, 3, 4; as se the same codes read 0, 1, -1, 2, -2.
    bits = "1" + "010" + "011" + "00100" + "00101"
    data = int(bits.ljust(24, "0"), 2).to_bytes(3, "big")
    b = _Bits(data)
    assert [b.ue() for _ in range(5)] == [0, 1, 2, 3, 4]
    b = _Bits(data)
    assert [b.se() for _ in range(5)] == [0, 1, -1, 2, -2]
    with pytest.raises(Unsupported):
        _Bits(b"\x00").ue()  # runs past the bytes


def test_nal_units_from_length_prefixes_and_start_codes():
    nals = [b"\x67abc", b"\x68de", b"\x65" + bytes(300)]
    prefixed = b"".join(len(n).to_bytes(4, "big") + n for n in nals)
    assert list(nal_units(prefixed, 4)) == nals
    annex_b = b"\x00\x00\x00\x01" + nals[0] + b"\x00\x00\x00\x01" + nals[1] + b"\x00\x00\x01" + nals[2]
    # A four-byte start code leaves its leading zero on the unit before it (trailing zeros, harmless).
    assert list(nal_units(annex_b, 0)) == [nals[0] + b"\x00", nals[1], nals[2]]
    with pytest.raises(Unsupported):
        list(nal_units(b"\x00\x00\x00\x09abc", 4))  # a length past the packet
    assert nal_length_size("h264", None) == 0
    assert nal_length_size("h264", bytes([1, 100, 0, 30, 0xFF, 0xE1])) == 4


# (x264 parameters, container, B-frames, frames): B-pyramid, weighted prediction, several slices per
# picture, POC type 2 (no B-frames), an order count that wraps (one long GOP), open GOPs, MBAFF.
ORDER_CASES = [
    ("b-pyramid=normal", "mp4", 3, 60),
    ("b-pyramid=normal", "avi", 3, 60),
    ("b-pyramid=none:weightb=1", "avi", 2, 60),
    ("slices=4", "avi", 3, 40),
    ("", "avi", 0, 40),
    ("keyint=400:min-keyint=400", "avi", 3, 300),
    ("open-gop=1:keyint=20:min-keyint=20", "avi", 3, 80),
    ("interlaced=1", "avi", 2, 40),
]


@pytest.mark.parametrize(("params", "ext", "bframes", "n"), ORDER_CASES)
def test_h264_picture_order_matches_the_decoder(tmp_path, params, ext, bframes, n):
    path = encode(tmp_path / f"x.{ext}", n, params=params, bframes=bframes, gop=250 if "keyint" in params else 24)
    shown, pts, keys, unref = decoder_order_and_keys(path)
    assert len(shown) == len(pts) == n
    assert [p for _, p in sorted(zip(keys, pts, strict=True))] == shown
    if bframes:
        assert any(unref)  # x264's B-frames (all but the pyramid's middle ones) are unreferenced
    else:
        assert not any(unref)


def test_h264_order_without_parameter_sets_is_unsupported(tmp_path):
    path = encode(tmp_path / "x.avi", 10)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    slices = b"".join(b"\x00\x00\x01" + bytes(n) for n in nal_units(packets[1], 0) if n[0] & 0x1F in (1, 5))
    with pytest.raises(Unsupported):
        H264PictureOrder(None).key(slices)  # a slice whose SPS/PPS were never seen


def test_hevc_sub_layer_non_reference_pictures(tmp_path):
    path = encode(tmp_path / "x.mkv", 40, codec="libx265", gop=20, params="log-level=error:bframes=3:b-pyramid=0")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        size = nal_length_size("hevc", stream.codec_context.extradata)
        kinds = [picture_kind("hevc", bytes(p), size) for p in container.demux(stream) if p.size]
    assert all(tid == 0 for _, tid in kinds)
    assert 0 < sum(unref for unref, _ in kinds) < len(kinds)


# -- the PyAV reader ------------------------------------------------------------------------------
def strided_reads(n: int) -> list[list[int]]:
    """Clip reads in training order: forward, backward, overlapping, continuing past the last one."""
    reads = [list(range(s, min(n, s + 31), 2)) for s in (20, 5, 40, 41, 0)]
    reads.append(list(range(reads[-1][-1] + 1, reads[-1][-1] + 9)))  # every frame just past the last read
    reads.append([1, 3, 5, n - 1])
    return reads


def count_decoded(reader) -> list[int]:
    """Counts the frames the reader's decoder outputs (a pass-through spy on the real decoder)."""
    count = [0]
    real = reader._decode

    def spy():
        for frame in real():
            count[0] += 1
            yield frame

    reader._decode = spy
    reader._restart(force=True)
    return count


@pytest.mark.parametrize(
    ("name", "codec", "params"),
    [
        ("h264.mp4", "libx264", ""),
        ("h264.avi", "libx264", ""),
        ("hevc.mkv", "libx265", "log-level=error:bframes=3"),
        ("mpeg4.avi", "mpeg4", ""),
    ],
)
def test_pyav_leaves_out_unreferenced_pictures_and_stays_exact(tmp_path, name, codec, params):
    """Strided clips decode fewer pictures than a plain decode and return exactly the same frames.
    In the H.264 AVI the order comes from the picture order counts (its timestamps are in decode order);
    in MPEG-4 part 2 (XviD) every B-VOP is unreferenced."""
    path = encode(tmp_path / name, 90, codec=codec, params=params, gop=45)
    decoded = {}
    for leave_out in (False, True):
        with open_video(path, backend="pyav") as reader:
            assert reader.can_seek()
            if not leave_out:
                reader._nonref = frozenset()  # what the reader did before it read NAL headers
            else:
                assert len(reader._nonref) > 20
            count = count_decoded(reader)
            for idx in strided_reads(90):
                assert indices_of(reader.get_frames(idx)) == idx
            assert reader._nonref or not leave_out  # the plan held all the way
            decoded[leave_out] = count[0]
    assert decoded[True] < 0.85 * decoded[False]


def test_mpeg4_b_vops_are_unreferenced_and_packed_packets_unsupported():
    vop = b"\x00\x00\x01\xb6"
    header = b"\x00\x00\x01\xb0\xf5\x00\x00\x01\xb5"  # a VOS header before the VOP, as in key frames
    assert picture_kind("mpeg4", header + vop + bytes([0x10, 0xFF]), 0) == (False, 0)  # I-VOP
    assert picture_kind("mpeg4", vop + bytes([0x51, 0x00]), 0) == (False, 0)  # P-VOP
    assert picture_kind("mpeg4", memoryview(vop + bytes([0x90, 0x00])), 0) == (True, 0)  # B-VOP
    assert picture_kind("mpeg4", header, 0) is None
    with pytest.raises(Unsupported):  # DivX packed bitstream: the decoder reorders inside the packet
        picture_kind("mpeg4", vop + bytes([0x51, 0x00]) + vop + bytes([0x90, 0x00]), 0)
    assert nal_length_size("mpeg4", header) == 0


def test_a_read_past_the_last_one_gets_frames_the_decoder_ran_ahead_of(tmp_path):
    path = encode(tmp_path / "x.mp4", 60, gop=60)
    with open_video(path, backend="pyav") as reader:
        assert indices_of(reader.get_frames(list(range(0, 31, 2)))) == list(range(0, 31, 2))
        for idx in ([31, 32, 33, 34, 35], [37, 39, 41], [36], list(range(42, 60))):
            assert indices_of(reader.get_frames(idx)) == idx
        assert reader._nonref


def test_an_order_that_disagrees_with_the_decoder_is_dropped_and_reads_stay_exact(tmp_path):
    path = encode(tmp_path / "x.avi", 60, gop=60)
    with open_video(path, backend="pyav") as reader:
        assert reader.can_seek() and reader._nonref
        # Swap two reference pictures in the order map, as a parser bug would.
        refs = [i for i, p in enumerate(reader._pts_by_index) if p not in reader._nonref]
        a, b = refs[3], refs[4]
        order = list(reader._pts_by_index)
        order[a], order[b] = order[b], order[a]
        reader._pts_by_index = order
        reader._index_of = {p: i for i, p in enumerate(order)}
        idx = list(range(0, 50, 2))
        assert indices_of(reader.get_frames(idx)) == idx
        assert not reader._nonref and not reader.can_seek()  # from now on: count frames from the start


def test_stream_ending_early_with_pictures_left_out_still_corrects_the_count(tmp_path):
    """A header that claims more frames than decode, read with pictures left out on the way: the reader
    counts the frames that do decode exactly, and reads on."""
    path = encode(tmp_path / "x.mp4", 80, gop=80)
    with open_video(path, backend="pyav") as reader:
        assert reader.can_seek() and reader._nonref
        reader.num_frames = 90  # as a header would claim
        with pytest.raises(VideoDecodeError, match="only 80 of 90 frames decode"):
            reader.get_frames(list(range(0, 90, 2)))
        assert reader.num_frames == 80
        assert indices_of(reader.get_frames([78, 0, 79])) == [78, 0, 79]


def test_reader_default_files_exact_with_numpy(index_videos):
    with open_video(index_videos["h264.mp4"], backend="pyav") as reader:
        got = reader.get_frames(list(range(1, 60, 3)), numpy=True)
        assert isinstance(got, np.ndarray) and indices_of(got) == list(range(1, 60, 3))


@pytest.mark.parametrize("step", [2, 5])
def test_iter_frames_with_a_step_leaves_pictures_out_exactly(tmp_path, step):
    path = make_index_video(tmp_path / "x.mp4", 100, codec="libx264", gop=50, bframes=3)
    with open_video(path, backend="pyav") as reader:
        count = count_decoded(reader)
        got = [(i, read_index(f)) for i, f in reader.iter_frames(step=step)]
        assert got == [(i, i) for i in range(0, 100, step)]
        assert count[0] < 90
