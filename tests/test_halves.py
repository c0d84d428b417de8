"""The key-frame pass read by two decoders at once (`vidattn.data.halves`) gives exactly one decoder's result:
sampled frames, descriptors, the probe's look at every decoded frame, times, cuts and the document."""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidattn.data import halves
from vidattn.keyframes.descriptors import describe_frames
from vidattn.keyframes.pipeline import KeyframeOptions, _sample_pass, score_video
from vidattn.keyframes.stream import open_frames

H, W, FPS = 72, 96, 25


def _shot(seed: int, n: int, speed: int = 2) -> list[np.ndarray]:
    """A camera panning over a textured scene of its own, with a square crossing it (motion everywhere)."""
    rng = np.random.default_rng(seed)
    width = W + n * speed
    cells = rng.uniform(0, 255, size=(H // 8 + 1, width // 8 + 2, 3))
    scene = np.kron(cells, np.ones((8, 8, 1)))[:H, :width] * 0.6 + rng.uniform(0, 255, 3) * 0.4
    scene = np.clip(scene, 0, 255).astype(np.uint8)
    out = []
    for t in range(n):
        frame = np.ascontiguousarray(scene[:, t * speed : t * speed + W])
        x = (5 * t) % (W - 12)
        frame[30:42, x : x + 12] = 255 - frame[30:42, x : x + 12]
        out.append(frame)
    return out


def _edit(lengths: list[int]) -> list[np.ndarray]:
    return [f for seed, n in enumerate(lengths) for f in _shot(seed + 1, n)]


def _encode(
    path: Path,
    frames: list[np.ndarray],
    codec: str = "libx264",
    *,
    gop: int = 48,
    bframes: int = 2,
    params: str = "",
    durations_ms: list[int] | None = None,
) -> Path:
    """Encode RGB frames (x264/x265 options in `params`); with `durations_ms`, at variable frame rate."""
    import av

    options = {}
    if codec == "libx264":
        options["x264-params"] = ":".join(p for p in ("mbtree=0", params) if p)
    elif codec == "libx265":
        options["x265-params"] = ":".join(p for p in ("log-level=error", f"bframes={bframes}", params) if p)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=FPS, options=options)
        stream.height, stream.width = H, W
        stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        if codec != "gif":
            stream.codec_context.gop_size = gop
            stream.codec_context.max_b_frames = bframes
        if durations_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for k, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if durations_ms is not None:
                vf.pts, vf.time_base = t, Fraction(1, 1000)
                t += durations_ms[k]
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# Cuts on both sides of the middle, one on frame 200, and shots shorter than the minimum shot length.
LONG = [63, 70, 67, 4, 2, 94, 60, 40]  # 400 frames

VIDEOS = {
    # name: (how to make it, whether the file is read in two halves)
    "h264_bframes": (lambda p: _encode(p / "a.mp4", _edit(LONG), gop=48, bframes=3), True),
    "h264_small_gop": (lambda p: _encode(p / "b.mp4", _edit(LONG), gop=10, bframes=0), True),
    "h264_open_gop_mkv": (lambda p: _encode(p / "c.mkv", _edit(LONG), gop=60, params="open-gop=1"), None),
    "mpeg4": (lambda p: _encode(p / "d.mp4", _edit(LONG), "mpeg4", gop=50, bframes=2), True),
    "hevc": (lambda p: _encode(p / "e.mp4", _edit(LONG), "libx265", gop=40, bframes=3), True),
    "vfr": (
        lambda p: _encode(
            p / "f.mp4",
            _edit([120, 90, 110]),
            gop=45,
            durations_ms=[int(d) for d in np.random.default_rng(0).choice([20, 33, 50, 80], size=320)],
        ),
        True,
    ),
    # One key frame, the first: nothing to start a second decoder from.
    "only_first_key": (lambda p: _encode(p / "g.mp4", _edit(LONG), gop=1000, params="scenecut=0"), False),
    "short": (lambda p: _encode(p / "h.mp4", _edit([60, 60, 60]), gop=24), False),
    "gif": (lambda p: _encode(p / "i.gif", _edit([170, 160]), "gif"), False),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("halves")
    return {name: make(root) for name, (make, _) in VIDEOS.items()}


def _run(path: Path, decoders: int, process: bool = False, **kw) -> tuple[bool, object, dict]:
    """(whether the split held, the sampled pass, the document) with one or two decoders."""
    opts = KeyframeOptions(decoders=decoders, **kw)
    frames = open_frames(path, opts, process=process)
    sampled = _sample_pass(frames, opts, None)
    doc = score_video(path, opts, frames=open_frames(path, opts, process=process))
    return frames.split_held, sampled, doc


def _assert_same_pass(one, two) -> None:
    np.testing.assert_array_equal(two.indices, one.indices)
    for field in ("desc", "luma_mean", "luma_std", "sharpness", "thumb"):
        np.testing.assert_array_equal(getattr(two.stats, field), getattr(one.stats, field))
    assert (one.dense is None) == (two.dense is None)
    if one.dense is not None:
        for field in ("index", "step", "mean", "std", "time", "change"):
            a, b = getattr(one.dense, field), getattr(two.dense, field)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(b, a)
    assert two.info == one.info


@pytest.mark.parametrize("name", list(VIDEOS))
def test_two_decoders_give_one_decoders_result(videos, name):
    path = videos[name]
    split, expected = halves.split_key, VIDEOS[name][1]
    held_one, one, doc_one = _run(path, 1)
    held, two, doc_two = _run(path, 2)
    assert not held_one
    if expected is not None:
        assert held is expected, f"split {'did not hold' if expected else 'held'} on {name} ({split})"
    _assert_same_pass(one, two)
    assert json.dumps(doc_two) == json.dumps(doc_one)
    assert doc_one["cuts"]  # the videos have cuts, found through the probe's steps at the split too


def test_cuts_next_to_the_split_are_found_alike(tmp_path):
    """Cuts shortly before, on and shortly after the key frame where the second decoder starts (frame 200)."""
    path = _encode(tmp_path / "x.mp4", _edit([150, 42, 8, 10, 190]), gop=50, bframes=2, params="scenecut=0")
    opts = {"min_shot_s": 0.0, "sample_fps": 1}
    held, two, doc_two = _run(path, 2, **opts)
    _, one, doc_one = _run(path, 1, **opts)
    assert held
    _assert_same_pass(one, two)
    assert doc_two == doc_one
    # The cut on the key frame is seen in the step into it, which only the first decoder measures.
    assert {150, 200} <= {c["frame_index"] for c in doc_two["cuts"]}


def test_two_decoders_in_the_cli_child_process(videos):
    """`vidattn keyframes` decodes its first video in a child process: the split runs there alike."""
    path = videos["h264_bframes"]
    held, two, doc_two = _run(path, 2, process=True)
    _, one, doc_one = _run(path, 1)
    assert held
    _assert_same_pass(one, two)
    assert doc_two == doc_one


def test_halves_that_do_not_meet_fall_back_to_one_decoder(videos, monkeypatch):
    """Where the two decoders' frames differ at the split, the first reads on and the second's are dropped."""
    monkeypatch.setattr(halves._Meeting, "matches", lambda self, other: False)
    path = videos["h264_bframes"]
    held, two, doc_two = _run(path, 2)
    _, one, doc_one = _run(path, 1)
    assert not held
    _assert_same_pass(one, two)
    assert doc_two == doc_one


@pytest.mark.parametrize("at", [0, 1, halves.MEETING_FRAMES])
def test_a_difference_anywhere_in_the_meeting_window_drops_the_second_half(videos, monkeypatch, at):
    """The key frame, the frame after it and the window's last frame are all compared (a frame that refers back
    across the key frame can be any of them)."""
    digest = halves._digest
    calls = {"n": 0}

    def second_differs_once(frame):
        if threading.current_thread().name == "vidattn-second-half":
            calls["n"] += 1
            if calls["n"] == at + 1:
                return b"decoded otherwise"
        return digest(frame)

    monkeypatch.setattr(halves, "_digest", second_differs_once)
    path = videos["h264_bframes"]
    held, two, _ = _run(path, 2)
    _, one, _ = _run(path, 1)
    assert not held
    _assert_same_pass(one, two)


def test_no_second_decoder_without_wanted_frames_on_both_sides_of_its_key_frame(videos):
    from vidattn.data.decode.pyav_reader import PyAVReader

    path = videos["h264_bframes"]
    with PyAVReader(str(path)) as reader:
        n = reader.num_frames
        every = list(range(0, n, 6))
        assert halves.split_key(reader, str(path), every) is not None
        # Wanted frames only before the middle half, or only after its start: one decoder.
        assert halves.split_key(reader, str(path), [i for i in every if i < n // 4]) is None
        assert halves.split_key(reader, str(path), [i for i in every if i >= n * 3 // 4]) is None


def test_a_consumer_that_stops_early_stops_both_decoders(videos):
    opts = KeyframeOptions()
    frames = open_frames(videos["h264_bframes"], opts)
    parts = set()
    with frames:
        for part, _, _ in frames.parts():
            parts.add(part)
            if parts == {0, 1}:
                break
    assert parts == {0, 1}  # both halves were being read at once
    deadline = time.monotonic() + 10
    while any(t.name in ("vidattn-second-half", "vidattn-prefetch") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a decoder thread outlived its stream"
        time.sleep(0.05)
    with open_frames(videos["short"], opts) as split_stream, pytest.raises(TypeError):
        next(iter(split_stream))  # its frames come from parts(), with the part each belongs to


def test_a_corrupt_second_half_fails_or_succeeds_as_with_one_decoder(videos, tmp_path):
    path = tmp_path / "broken.mp4"
    data = bytearray(videos["h264_bframes"].read_bytes())
    rng = np.random.default_rng(1)
    start = len(data) * 3 // 4
    data[start : start + 4000] = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    outcomes = []
    for decoders in (1, 2):
        try:
            outcomes.append(json.dumps(score_video(path, KeyframeOptions(decoders=decoders))))
        except Exception as exc:  # the same error, whichever way the file is read
            outcomes.append(f"{type(exc).__name__}: {exc}")
    assert outcomes[0] == outcomes[1]


def test_descriptors_do_not_depend_on_the_batch():
    """The later half's samples are described in batches that start elsewhere: each row must not change."""
    frames = np.stack(_edit([7, 6, 6]))
    whole = describe_frames(frames)
    parts = [describe_frames(frames[a:b]) for a, b in ((0, 5), (5, 6), (6, 19))]
    for field in ("desc", "luma_mean", "luma_std", "sharpness", "thumb"):
        np.testing.assert_array_equal(np.concatenate([getattr(p, field) for p in parts]), getattr(whole, field))
