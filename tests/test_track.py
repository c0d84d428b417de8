"""`vidattn track`: box parsing, inputs (OTB folder, video, one frame), outputs, rendering, lost targets.

Sequences are generated (`vidattn.tracking.make_sequence`) on a procedural background so these
tests need nothing from ../shared; the OTB Crossing test skips when ../shared/tracking is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidattn.apps.track import run_track
from vidattn.cli import main
from vidattn.testing import shared_dir
from vidattn.tracking import evaluate, make_sequence
from vidattn.tracking.otb import BoxError, parse_box, read_boxes_file, validate_boxes


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run the real entry point (with its error handling); returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def seq():
    """A 40-frame two-target sequence on a procedural background (no ../shared needed)."""
    return make_sequence(seed=3, num_frames=40, num_targets=2, background=None)


@pytest.fixture(scope="module")
def otb_dir(seq, tmp_path_factory) -> Path:
    return seq.write_otb(tmp_path_factory.mktemp("otb") / "Seq", target=0)


@pytest.fixture(scope="module")
def video_path(seq, tmp_path_factory) -> Path:
    return seq.write_video(tmp_path_factory.mktemp("vid") / "clip.mp4")


def load_track(out: Path) -> dict:
    doc = json.loads((out / "track.json").read_text())
    assert set(doc) >= {"num_frames", "fps", "targets"}
    for i, t in enumerate(doc["targets"]):
        assert t["id"] == i
        assert len(t["boxes"]) == doc["num_frames"] == len(t["scores"])
        assert all(len(b) == 4 for b in t["boxes"])
        assert all(0.0 <= s <= 1.0 for s in t["scores"])
        assert len(t["lost"]) == doc["num_frames"] and all(isinstance(v, bool) for v in t["lost"])
        assert not t["lost"][0]
        lines = (out / f"target_{i}.txt").read_text().splitlines()
        assert len(lines) == doc["num_frames"]
        np.testing.assert_allclose([[float(v) for v in ln.split(",")] for ln in lines], t["boxes"], atol=0.01)
    return doc


# ----------------------------------------------------------------------------- box parsing
@pytest.mark.parametrize(
    "text, expected",
    [
        ("10,20,30,40", (10, 20, 30, 40)),
        ("10.5, 20, 30.25, 40", (10.5, 20, 30.25, 40)),
        ("10\t20\t30\t40", (10, 20, 30, 40)),
        ("10 20 30 40", (10, 20, 30, 40)),
        ("-5,-5,30,40", (-5, -5, 30, 40)),
    ],
)
def test_parse_box_accepts(text, expected):
    assert parse_box(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3", "expected 4 numbers"),
        ("1,2,3,4,5", "expected 4 numbers"),
        ("a,b,c,d", "must be numbers"),
        ("1,2,0,4", "must be positive"),
        ("1,2,3,-4", "must be positive"),
        ("1,2,nan,4", "finite"),
        ("", "expected 4 numbers"),
    ],
)
def test_parse_box_rejects(text, message):
    with pytest.raises(BoxError, match=message):
        parse_box(text)


def test_read_boxes_file_formats(tmp_path):
    otb = tmp_path / "groundtruth_rect.txt"
    otb.write_text("205\t151\t17\t50\n202\t150\t19\t49\n")
    assert read_boxes_file(otb) == [(205, 151, 17, 50)]  # first line only
    assert len(read_boxes_file(otb, all_lines=True)) == 2
    comma = tmp_path / "gt.txt"
    comma.write_text("1.5,2,3,4\n")
    assert read_boxes_file(comma) == [(1.5, 2, 3, 4)]
    for doc, n in [([1, 2, 3, 4], 1), ([[1, 2, 3, 4], [5, 6, 7, 8]], 2), ({"boxes": [[1, 2, 3, 4]]}, 1)]:
        js = tmp_path / "init.json"
        js.write_text(json.dumps(doc))
        assert len(read_boxes_file(js)) == n
    track_json = tmp_path / "track.json"
    track_json.write_text(json.dumps({"targets": [{"id": 0, "boxes": [[1, 2, 3, 4], [2, 2, 3, 4]], "scores": [1, 1]}]}))
    assert read_boxes_file(track_json) == [(1, 2, 3, 4)]


@pytest.mark.parametrize("content", ["", "{not json", '{"foo": 1}', "[[1, 2, 3]]", "1 2 x 4"])
def test_read_boxes_file_errors(tmp_path, content):
    f = tmp_path / ("bad.json" if content.startswith(("{", "[")) else "bad.txt")
    f.write_text(content)
    with pytest.raises(BoxError):
        read_boxes_file(f)


def test_validate_boxes():
    assert validate_boxes([(-10, -10, 30, 30)], 100, 80).shape == (1, 4)  # partly outside is fine
    with pytest.raises(BoxError, match="outside"):
        validate_boxes([(150, 10, 20, 20)], 100, 80)
    with pytest.raises(BoxError, match="outside"):
        validate_boxes([(10, -40, 20, 20)], 100, 80)
    with pytest.raises(BoxError, match="no initial box"):
        validate_boxes([], 100, 80)


def test_validate_boxes_clips_with_a_note_and_names_the_minimum_size():
    notes: list[str] = []
    clipped = validate_boxes([(-5, 0, 10, 10), (10, 10, 20, 20)], 100, 80, note=notes.append)
    np.testing.assert_allclose(clipped, [[0, 0, 5, 10], [10, 10, 20, 20]])
    assert len(notes) == 1 and "box 0" in notes[0] and "0,0,5,10" in notes[0]
    with pytest.raises(BoxError, match="minimum target size") as exc:
        validate_boxes([(0, 0, 1, 1)], 340, 256)
    assert "outside" not in str(exc.value)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", "1,2,3"], "expected 4 numbers"),
        (["--box", "10,10,0,5"], "must be positive"),
        (["--box", "5000,10,20,20"], "outside"),
        ([], "--box"),
        (["--box", "1,2,3,4", "--init", "__INIT__"], "not both"),
    ],
)
def test_cli_box_errors_are_one_line(otb_dir, tmp_path, capsys, extra, message):
    extra = [str(otb_dir / "groundtruth_rect.txt") if a == "__INIT__" else a for a in extra]
    code, out, err = run_cli(["track", str(otb_dir), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o" / "track.json").exists()


def test_cli_box_sticking_out_is_clipped_with_a_note(otb_dir, tmp_path, capsys):
    code, _, err = run_cli(["track", str(otb_dir), "--box", "-5,0,30,30", "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert "note: box 0 (-5,0,30,30) sticks out" in err and "0,0,25,30" in err
    assert load_track(tmp_path / "o")["targets"][0]["boxes"][0] == [0, 0, 25, 30]


def test_cli_missing_input_and_unreadable_video(tmp_path, capsys):
    code, _, err = run_cli(["track", str(tmp_path / "nope.mp4"), "--box", "1,2,3,4"], capsys)
    assert code == 2 and "does not exist" in err
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    code, _, err = run_cli(["track", str(bad), "--box", "1,2,3,4", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("Error:") and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cli_cuda_without_gpu(otb_dir, tmp_path, capsys):
    code, _, err = run_cli(["track", str(otb_dir), "--box", "10,10,20,20", "--device", "cuda"], capsys)
    assert code == 2 and "CUDA" in err


# ----------------------------------------------------------------------------- inputs and outputs
def test_otb_folder_input(seq, otb_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["track", str(otb_dir), "--init", str(otb_dir / "groundtruth_rect.txt"), "--out", str(out)], capsys
    )
    assert code == 0, err
    assert "track.json" in stdout
    doc = load_track(out)
    assert doc["num_frames"] == seq.num_frames and len(doc["targets"]) == 1
    assert doc["fps"] > 0
    assert evaluate(np.array(doc["targets"][0]["boxes"]), seq.boxes[0])["auc"] > 0.6


def test_video_input_two_targets(seq, video_path, tmp_path, capsys):
    out = tmp_path / "out"
    boxes = [",".join(f"{v:.2f}" for v in seq.boxes[i, 0]) for i in range(2)]
    code, _, err = run_cli(
        ["track", str(video_path), "--box", boxes[0], "--box", boxes[1], "--out", str(out), "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    doc = load_track(out)
    assert doc["num_frames"] == seq.num_frames
    assert doc["fps"] == pytest.approx(seq.fps, rel=1e-3)
    assert [t["id"] for t in doc["targets"]] == [0, 1]
    for i in range(2):  # each target follows its own object (ids in the order the boxes were given)
        assert evaluate(np.array(doc["targets"][i]["boxes"]), seq.boxes[i])["auc"] > 0.6
        assert doc["targets"][i]["boxes"][0] == pytest.approx(list(seq.boxes[i, 0]), abs=0.01)


def test_render_writes_playable_video_of_right_length(video_path, seq, tmp_path):
    import av

    res = run_track(video_path, boxes=[tuple(seq.boxes[0, 0])], out_dir=tmp_path / "r", render=True, device="cpu")
    overlay = Path(res["overlay"])
    assert overlay.is_file()
    with av.open(str(overlay)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == res["num_frames"] == seq.num_frames
    assert frames[0].shape[:2] == seq.frames[0].shape[:2]


def test_one_frame_input(seq, tmp_path, capsys):
    import av
    from PIL import Image

    folder = tmp_path / "one" / "img"
    folder.mkdir(parents=True)
    Image.fromarray(seq.frames[0]).save(folder / "0001.jpg")
    out = tmp_path / "out"
    box = ",".join(f"{v:.2f}" for v in seq.boxes[0, 0])
    code, stdout, err = run_cli(["track", str(folder.parent), "--box", box, "--out", str(out), "--render"], capsys)
    assert code == 0, err
    doc = load_track(out)
    assert doc["num_frames"] == 1
    assert doc["targets"][0]["boxes"][0] == pytest.approx(list(seq.boxes[0, 0]), abs=0.01)
    assert doc["targets"][0]["scores"] == [1.0]
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1


def test_target_leaving_the_frame_is_low_confidence(tmp_path):
    s = make_sequence(seed=4, num_frames=45, leave_frame=True, occlusion=False, background=None)
    res = run_track(s.write_otb(tmp_path / "exit"), boxes=[tuple(s.boxes[0, 0])], out_dir=tmp_path / "o", device="cpu")
    scores = np.array(res["targets"][0]["scores"])
    boxes = np.array(res["targets"][0]["boxes"])
    assert len(scores) == 45 and np.isfinite(boxes).all()
    assert scores[:10].min() > 0.4  # tracked while visible
    assert scores[-8:].max() < 0.3  # gone: reported as low confidence, no crash
    lost = res["targets"][0]["lost"]
    assert not any(lost[:10]) and all(lost[-8:])  # and flagged lost in track.json


def test_crossing_otb_sequence(tmp_path):
    root = shared_dir()
    seq_dir = root / "tracking" / "Crossing" if root else None
    if seq_dir is None or not seq_dir.is_dir():
        pytest.skip("../shared/tracking/Crossing not available")
    res = run_track(seq_dir, init_file=seq_dir / "groundtruth_rect.txt", out_dir=tmp_path / "c", device="cpu")
    gt = np.array(read_boxes_file(seq_dir / "groundtruth_rect.txt", all_lines=True))
    m = evaluate(np.array(res["targets"][0]["boxes"]), gt)
    assert res["num_frames"] == 120
    assert m["auc"] >= 0.75 and m["precision20"] >= 0.95
