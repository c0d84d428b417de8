"""Key frames on edited videos: frame-exact cuts, short shots, fades and dissolves, the quality floor,
``-k N``, and presentation times on variable-frame-rate video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidattn.keyframes.descriptors import describe_frames
from vidattn.keyframes.edits import Join, compose_edit
from vidattn.keyframes.pipeline import KeyframeOptions, score_video
from vidattn.keyframes.probe import DenseSteps
from vidattn.keyframes.shots import find_cuts


def _pan(seed: int, n: int, h: int = 72, w: int = 96, speed: int = 2) -> list[np.ndarray]:
    """A shot: a camera panning over a scene of its own (texture, light falling off in its own direction, tint)."""
    rng = np.random.default_rng(seed)
    width = w + n * speed
    cells = rng.uniform(0, 255, size=(h // 8 + 1, width // 8 + 2, 3))
    texture = np.kron(cells, np.ones((8, 8, 1)))[:h, :width]
    yy, xx = np.mgrid[0:h, 0:width]
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.5 + 0.5 * np.cos(angle) * (yy / h - 0.5) * 2 + 0.5 * np.sin(angle) * (xx % (2 * w) / w - 1)
    tint = rng.uniform(0, 255, 3)
    scene = texture * 0.4 + tint * 0.3 + 255 * 0.3 * np.clip(light, 0, 1)[..., None]
    scene = np.clip(scene, 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(scene[:, t * speed : t * speed + w]) for t in range(n)]


def _room(seed: int, n: int, start: int = 0, h: int = 72, w: int = 96) -> list[np.ndarray]:
    """A static camera on a still room where two small people shift slowly (a pixel every sixth frame).

    ``start`` is where in their walk the shot begins: two shots of one room with a gap between their
    starts are a jump cut, which moves only the people.
    """
    rng = np.random.default_rng(seed)
    cells = rng.uniform(60, 200, size=(h // 12 + 1, w // 12 + 1, 3))
    room = np.kron(cells, np.ones((12, 12, 1)))[:h, :w].astype(np.uint8)
    out = []
    for t in range(start, start + n):
        frame = room.copy()
        for k, (y, colour) in enumerate(((20, (20, 20, 30)), (40, (240, 230, 210)))):
            x = (8 + 30 * k + t // 6) % (w - 8)
            frame[y : y + 16, x : x + 6] = colour
        out.append(frame)
    return out


def _frames_of(doc: dict, key: str) -> list[int]:
    return [entry["frame_index"] for entry in doc[key]]


@pytest.fixture(scope="module")
def edited(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("cuts")
    out = {}
    # Cuts off the 2 fps sample grid, two shots under half a second (9 and 11 frames) in a row.
    shots = [_pan(1, 37), _pan(2, 9), _pan(3, 11), _pan(4, 43), _pan(5, 29), _pan(6, 51)]
    out["cuts"] = (root / "cuts.mp4", compose_edit(root / "cuts.mp4", shots, [Join()] * 5).to_dict())
    # A fade through black and a dissolve between shots that are cut too.
    shots = [_pan(7, 50, speed=1), _pan(8, 60, speed=1), _pan(9, 60, speed=1), _pan(10, 50, speed=1)]
    joins = [Join("fade", frames=12, hold=5), Join("dissolve", frames=16), Join()]
    out["gradual"] = (root / "gradual.mp4", compose_edit(root / "gradual.mp4", shots, joins).to_dict())
    # A black stretch between two shots, by hard cuts.
    black = [np.zeros((72, 96, 3), dtype=np.uint8)] * 40
    out["black"] = (
        root / "black.mp4",
        compose_edit(root / "black.mp4", [_pan(11, 50), black, _pan(12, 50)], [Join(), Join()]).to_dict(),
    )
    return out


def test_cuts_are_frame_exact_at_low_sample_fps(edited):
    path, truth = edited["cuts"]
    doc = score_video(path, KeyframeOptions(sample_fps=2))
    assert _frames_of(doc, "cuts") == truth["cuts"]  # shots of 9 and 11 frames included
    assert doc["num_shots"] == len(truth["shots"])
    for cut in doc["cuts"]:
        assert cut["time_s"] == pytest.approx(cut["frame_index"] / 25, abs=1e-6)


def test_min_shot_drops_the_later_of_two_close_cuts(edited):
    path, truth = edited["cuts"]
    doc = score_video(path, KeyframeOptions(min_shot_s=0.6))  # 15 frames: the 9-frame shot goes
    cuts = _frames_of(doc, "cuts")
    assert cuts == [c for k, c in enumerate(truth["cuts"]) if k != 1]  # then the shot from 37 is 20 frames


def test_fade_and_dissolve_are_transitions_not_cuts(edited):
    path, truth = edited["gradual"]
    doc = score_video(path, KeyframeOptions(k=20, sample_fps=4))
    assert _frames_of(doc, "cuts") == truth["cuts"]  # only the hard cut
    kinds = [t["kind"] for t in doc["transitions"]]
    assert kinds == ["fade", "dissolve"]
    for found, real in zip(doc["transitions"], truth["transitions"], strict=True):
        # Reported between the clean samples around it: it covers the real one's middle.
        middle = (real["start"] + real["end"]) / 2
        assert found["start_frame"] <= middle <= found["end_frame"]
        assert found["start_s"] == pytest.approx(found["start_frame"] / 25, abs=1e-6)
    for key in doc["keyframes"]:  # never a key frame inside a transition
        assert not any(t["start"] <= key["frame_index"] <= t["end"] for t in truth["transitions"])
        assert not any(t["start_frame"] <= key["frame_index"] <= t["end_frame"] for t in doc["transitions"])


def test_k_shots_puts_a_key_frame_in_every_shot(edited):
    for name in ("cuts", "gradual"):
        path, truth = edited[name]
        doc = score_video(path, KeyframeOptions(k=len(truth["shots"])))
        picks = _frames_of(doc, "keyframes")
        for start, end in truth["shots"]:
            if end - start + 1 >= 25:  # every shot of at least 1 s
                assert any(start <= p <= end for p in picks), (name, start, end, picks)


def test_black_frames_are_never_key_frames_and_the_json_says_why(edited, tmp_path):
    path, truth = edited["black"]
    doc = score_video(path, KeyframeOptions(k=12, min_gap_s=0))
    black = truth["shots"][1]
    picks = _frames_of(doc, "keyframes")
    assert picks and not any(black[0] <= p <= black[1] for p in picks)
    assert doc["selection"]["excluded"]["black"] > 0
    # All black: nothing usable, no key frame, and a reason.
    only_black = tmp_path / "all_black.mp4"
    compose_edit(only_black, [[np.zeros((72, 96, 3), dtype=np.uint8)] * 30], [])
    doc = score_video(only_black, KeyframeOptions(k=3))
    assert doc["keyframes"] == [] and doc["selection"]["returned"] == 0
    assert "black" in doc["selection"]["note"]
    assert max(s["score"] for s in doc["scores"]) < 0.01  # a black frame is not lifted to score 1


def test_blurred_and_flat_frames_are_below_the_floor():
    from PIL import Image, ImageFilter

    from vidattn.keyframes.scorer import quality_floor

    sharp = _pan(13, 2, h=120, w=160)
    blurred = [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(3))) for f in sharp]
    flat = [np.full((120, 160, 3), 128, dtype=np.uint8)]
    floor = quality_floor(describe_frames(np.stack(sharp + blurred + flat)))
    assert floor["blurred"].tolist() == [False, False, True, True, True]
    assert floor["flat"].tolist() == [False, False, False, False, True]


def test_k_returns_k_frames_when_there_are_that_many(tmp_path):
    path = tmp_path / "three_shots.mp4"
    compose_edit(path, [_pan(14, 40, speed=3), _pan(15, 40, speed=3), _pan(16, 40, speed=3)], [Join(), Join()])
    doc = score_video(path, KeyframeOptions(k=8))  # 4.8 s: the 1 s gap alone would allow fewer
    assert len(doc["keyframes"]) == 8
    assert {k["shot"] for k in doc["keyframes"]} == {0, 1, 2}
    assert len(set(_frames_of(doc, "keyframes"))) == 8


def test_find_cuts_tolerates_a_neighbouring_cut():
    # Samples every 4 frames; the frame steps show cuts at 10 and 13 (a 3-frame shot) in quiet footage.
    index = np.arange(0, 41)
    step = np.full(41, 0.02, dtype=np.float32)
    step[[10, 13]] = 0.9
    steps = DenseSteps(index, step, np.full(41, 0.5, np.float32), np.full(41, 0.2, np.float32))
    samples = np.arange(0, 41, 4)
    desc = np.zeros((samples.size, 3), dtype=np.float32)
    desc[:, 0] = 1
    desc[samples >= 10] = [0, 1, 0]
    desc[samples >= 13] = [0, 0, 1]
    cuts = find_cuts(samples, desc, steps.between)
    assert cuts == [10, 13]
    assert find_cuts(samples, desc, steps.between, min_shot=5) == [10]


def test_a_cut_over_a_skipped_frame_is_judged_on_frame_steps():
    """Whether a cut is found must not depend on which pictures the encoder made non-reference.

    A panning shot (a step of 0.12 a frame) cut at frame 37. Decoded with non-reference frames
    skipped (every third), the step from 35 to 37 spans two frames; its threshold used to double
    with the span (2 x 0.12 x 2 + 0.05 > 0.46) and the cut was lost, while the same video with frame
    36 decoded had it. Re-encoding the same edit picks other non-reference frames, so this flickered.
    """
    n, cut = 60, 37
    index = np.arange(n)
    step = np.full(n, 0.12, dtype=np.float32)
    step[0], step[cut] = 0.0, 0.45
    flat = np.full(n, 0.5, np.float32), np.full(n, 0.2, np.float32)
    every = DenseSteps(index, step, *flat)  # what `exact` decodes
    decoded = index[(index % 3 != 0) | (index == 0)]
    coarse = step.copy()  # a step over a skipped frame: its motion plus the next frame's change
    for i in decoded[1:]:
        if i - 1 not in decoded:
            coarse[i] = 0.46 if i == cut else 0.22
    skipping = DenseSteps(decoded, coarse[decoded], flat[0][decoded], flat[1][decoded])
    for dense in (every, skipping):
        samples = np.asarray([i for i in (0, 5, 10, 16, 22, 28, 34, 40, 46, 52, 58) if i in dense.index])
        desc = np.zeros((samples.size, 3), dtype=np.float32)
        desc[:, 0] = 1
        desc[samples >= cut] = [0, 1, 0]
        assert find_cuts(samples, desc, dense.between, exact=every.between) == [cut]


def test_find_cuts_sees_a_jump_cut_in_a_still_scene_in_the_changed_pixels():
    """A jump cut inside one static scene: the samples and the luma steps barely move, the share of
    changed pixels jumps once. A burst that the samples do not see persist, and steady motion, are not cuts."""
    n, cut = 120, 53
    index = np.arange(n)
    rng = np.random.default_rng(0)
    change = rng.uniform(0, 0.002, n).astype(np.float32)  # compression noise and slow walkers
    change[0] = 0
    flat = np.full(n, 0.02, np.float32), np.full(n, 0.5, np.float32), np.full(n, 0.2, np.float32)
    samples = np.arange(0, n, 6)
    desc = np.zeros((samples.size, 2), dtype=np.float32)
    desc[:, 0] = 1
    jump = change.copy()
    jump[cut] = 0.03
    moved = samples >= cut  # the picture after the cut stays a little different
    desc[moved] = [np.cos(0.05), np.sin(0.05)]
    probe = DenseSteps(index, *flat, None, jump)
    assert find_cuts(samples, desc, probe.between, probe=probe) == [cut]
    assert find_cuts(samples, desc, probe.between) == []  # the samples alone do not point at it
    still = np.zeros_like(desc)
    still[:, 0] = 1
    assert find_cuts(samples, still, probe.between, probe=probe) == []  # gone again: a passing glitch
    walking = jump.copy()
    walking[cut - 12 : cut + 12] = rng.uniform(0.02, 0.04, 24)  # something moving fast for a second
    probe = DenseSteps(index, *flat, None, walking)
    assert find_cuts(samples, desc, probe.between, probe=probe) == []


def test_a_jump_cut_in_a_static_room_is_found_and_its_shot_gets_a_key_frame(tmp_path):
    path = tmp_path / "jump.mp4"
    shots = [_room(20, 45), _room(20, 40, start=100), _pan(21, 40)]
    truth = compose_edit(path, shots, [Join(), Join()])
    doc = score_video(path, KeyframeOptions(k=len(truth.shots)))
    assert _frames_of(doc, "cuts") == truth.cuts
    picks = _frames_of(doc, "keyframes")
    for start, end in truth.shots:
        assert any(start <= p <= end for p in picks), (start, end, picks)
    uncut = tmp_path / "room.mp4"
    compose_edit(uncut, [_room(20, 120)], [])
    assert score_video(uncut, KeyframeOptions())["cuts"] == []


def test_edits_are_encoded_reproducibly(tmp_path):
    """The same edit gives the same bytes whatever the process did before (x264's mbtree reads memory it
    never wrote, so with it the fixtures of these tests changed from run to run)."""
    import hashlib
    import os
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from vidattn.keyframes.edits import Join, compose_edit\n"
        "rng = np.random.default_rng(0)\n"
        "shots = [[rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(12)] for _ in range(2)]\n"
        "compose_edit(sys.argv[1], shots, [Join()])\n"
    )
    digests = set()
    for k, perturb in enumerate(("1", "200")):
        out = tmp_path / f"edit_{k}.mp4"
        env = {**os.environ, "MALLOC_PERTURB_": perturb}
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, timeout=120)
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def _write_vfr(path: Path, frames: list[np.ndarray], durations_ms: list[int]) -> list[float]:
    """An H.264 MP4 whose frames last `durations_ms` each; returns each frame's presentation time."""
    import av

    times, t = [], 0
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=30, options={"crf": "20", "bf": "0"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for frame, dur in zip(frames, durations_ms, strict=True):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            times.append(t / 1000)
            t += dur
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return times


def test_time_s_is_the_presentation_time_on_vfr_video(tmp_path):
    import av

    frames = _pan(17, 40) + _pan(18, 40)
    rng = np.random.default_rng(0)
    durations = [int(d) for d in rng.choice([20, 33, 50, 80], size=len(frames))]
    path = tmp_path / "vfr.mp4"
    _write_vfr(path, frames, durations)
    with av.open(str(path)) as container:
        real = [float(f.time) for f in container.decode(video=0)]
    real = [t - real[0] for t in real]
    assert max(abs(i / (len(real) / real[-1]) - t) for i, t in enumerate(real)) > 0.02  # index / fps is wrong here
    doc = score_video(path, KeyframeOptions(k=4, sample_fps=6))
    for entry in doc["scores"] + doc["keyframes"] + doc["cuts"]:
        assert entry["time_s"] == pytest.approx(real[entry["frame_index"]], abs=1e-3)
    assert _frames_of(doc, "cuts") == [40]


@pytest.mark.realvids
def test_realvids_edit_cuts_exact(realvids, tmp_path):
    import av

    root = realvids
    shots = []
    for name, start in (("mmaction2/demo.mp4", 10), ("tiny-ucf101/abseiling_k400.mp4", 40), ("pysot/bag.avi", 5)):
        with av.open(str(root / name)) as container:
            decoded = [f.to_ndarray(format="rgb24", width=320, height=240) for f in container.decode(video=0)]
        shots.append(decoded[start : start + 47])
    path = tmp_path / "real_edit.mp4"
    truth = compose_edit(path, shots, [Join(), Join("dissolve", frames=20)])
    doc = score_video(path, KeyframeOptions())
    assert _frames_of(doc, "cuts") == truth.cuts
    assert [t["kind"] for t in doc["transitions"]] == ["dissolve"]
