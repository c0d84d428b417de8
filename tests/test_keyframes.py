"""`vidattn keyframes`: descriptors, cuts, scores, selection, outputs, CLI and the model scorer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from vidattn.cli import main
from vidattn.data.encode import write_video
from vidattn.keyframes.descriptors import DESCRIPTOR_DIM, describe_frames
from vidattn.keyframes.outputs import safe_stem
from vidattn.keyframes.pipeline import KeyframeOptions, score_video
from vidattn.keyframes.pipeline import expand_globs as expand_inputs
from vidattn.keyframes.scorer import free_scores
from vidattn.keyframes.select import select_keyframes
from vidattn.keyframes.shots import detect_cuts, shot_ids
from vidattn.testing import shared_dir

CONTRACT_KEYS = {"video", "num_frames", "fps", "duration_s", "scorer", "keyframes", "scores"}
KEYFRAME_KEYS = {"rank", "frame_index", "time_s", "score", "image"}
SCORE_KEYS = {"frame_index", "time_s", "score"}


def _scene(seed: int, n: int, h: int = 72, w: int = 96) -> list[np.ndarray]:
    """A textured scene of one colour cast with a moving square: one "shot"."""
    rng = np.random.default_rng(seed)
    base = np.kron(rng.uniform(0, 255, (h // 8, w // 8, 3)), np.ones((8, 8, 1)))
    base = (base * 0.5 + rng.uniform(0, 255, 3) * 0.5).astype(np.uint8)
    frames = []
    for t in range(n):
        f = base.copy()
        x = 4 + (2 * t) % (w - 24)
        f[20:40, x : x + 16] = 255 - base[0, 0]
        frames.append(f)
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kf")
    three_shots = _scene(1, 40) + _scene(2, 40) + _scene(3, 40)
    out = {
        "shots": root / "three_shots.mp4",
        "tiny": root / "tiny.mp4",
    }
    write_video(out["shots"], three_shots, fps=20, reproducible=True)
    write_video(out["tiny"], _scene(4, 3), fps=20, reproducible=True)  # shorter than any window
    bad = root / "corrupt.mp4"
    data = out["shots"].read_bytes()
    bad.write_bytes(data[:64] + b"\x00" * 4096)  # header start, then garbage
    out["corrupt"] = bad
    return out


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


# --- building blocks -----------------------------------------------------------------------------
def test_descriptors_unit_and_quality_stats():
    frames = np.stack(_scene(0, 4) + [np.zeros((72, 96, 3), dtype=np.uint8)])
    stats = describe_frames(frames)
    assert stats.desc.shape == (5, DESCRIPTOR_DIM)
    np.testing.assert_allclose(np.linalg.norm(stats.desc, axis=1), 1.0, atol=1e-4)
    assert stats.luma_std[-1] < 1e-3 and stats.sharpness[-1] < 1e-6  # black frame: flat, no edges
    assert (stats.sharpness[:4] > 1e-4).all()
    with pytest.raises(ValueError):
        describe_frames(np.zeros((2, 8, 8), dtype=np.uint8))


def test_cuts_found_between_scenes_not_within():
    stats = describe_frames(np.stack(_scene(1, 12) + _scene(2, 12) + _scene(3, 12)))
    assert detect_cuts(stats.desc) == [12, 24]
    assert shot_ids(36, [12, 24]).tolist() == [0] * 12 + [1] * 12 + [2] * 12


def test_selection_gap_duplicates_shots_threshold():
    times = np.arange(20, dtype=np.float32) * 0.5
    scores = np.linspace(0, 1, 20)
    sel = select_keyframes(scores, times, k=3, min_gap_s=2.0)
    chosen = sorted(float(times[p]) for p in sel.positions)
    assert len(chosen) == 3 and all(b - a >= 2.0 for a, b in zip(chosen, chosen[1:], strict=False))
    assert sel.positions[0] == 19  # ranked by score
    # Shot pass: the low-scoring first shot still gets a frame when k allows.
    shots = np.array([0] * 5 + [1] * 15)
    sel = select_keyframes(scores, times, k=2, min_gap_s=0.0, shots=shots)
    assert {int(shots[p]) for p in sel.positions} == {0, 1}
    # Near-duplicates: identical descriptors give a single key frame.
    desc = np.full((20, 4), 0.5, dtype=np.float32)  # unit rows, all equal
    assert len(select_keyframes(scores, times, k=5, min_gap_s=0.0, desc=desc).positions) == 1
    # The two sides of a jump cut look alike but are shots of their own: k = 3 shots gives each a frame.
    # A scene recurring after another shot is still shown once while k does not need it.
    shots = np.array([0] * 6 + [1] * 7 + [2] * 7)
    desc = np.zeros((20, 3), dtype=np.float32)
    desc[:13] = [1, 0, 0]  # shots 0 and 1: one room, a jump cut between them
    desc[13:] = [0, 1, 0]
    sel = select_keyframes(scores, times, k=3, min_gap_s=1.0, shots=shots, desc=desc)
    assert {int(shots[p]) for p in sel.positions} == {0, 1, 2}
    recurring = np.array([0] * 6 + [1] * 7 + [2] * 7)
    desc[13:] = desc[0]  # shot 2 shows the room of shot 0 again, after shot 1 (something else)
    desc[6:13] = [0, 0, 1]
    sel = select_keyframes(scores, times, k=3, min_gap_s=1.0, shots=recurring, desc=desc)
    assert sorted(int(recurring[p]) for p in sel.positions) in ([1, 2], [0, 1])
    # Threshold without k: everything above it (subject to the gap).
    sel = select_keyframes(scores, times, k=None, threshold=0.5, min_gap_s=0.0)
    assert sorted(sel.positions) == [p for p in range(20) if scores[p] >= 0.5]


def test_free_scores_prefer_sharp_and_exposed_frames():
    scene = _scene(5, 12)
    blurred = [np.asarray(Image.fromarray(f).filter(ImageFilter.BoxBlur(2))) for f in scene[:6]]
    dark = [np.zeros_like(scene[0])] * 3
    frames = np.stack(dark + blurred + scene[6:])
    stats = describe_frames(frames)
    terms = free_scores(stats, np.zeros(len(frames), dtype=np.int64), sample_fps=4)
    assert terms["score"].shape == (len(frames),) and float(terms["score"].max()) == pytest.approx(1.0)
    assert int(terms["score"].argmax()) >= 9  # a sharp frame wins
    assert float(terms["q"][:3].max()) < 0.05  # black frames are worthless


def test_safe_stem_and_glob(tmp_path):
    assert safe_stem("/a/b/../..hidden.mp4") == "hidden"
    assert safe_stem("x/../../etc.mp4") == "etc"
    assert safe_stem("a b;c'$(rm).mp4") == "a_b_c_rm"
    assert safe_stem("....mp4") == "video"
    assert safe_stem("ünï cødé.mp4") == "ünï_cødé"
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    assert expand_inputs([str(tmp_path / "*.mp4")]) == [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    assert expand_inputs([str(tmp_path / "none*.mp4")]) == [str(tmp_path / "none*.mp4")]


# --- the job -------------------------------------------------------------------------------------
def test_score_video_schema_and_shots(clips):
    doc = score_video(clips["shots"], KeyframeOptions(k=3))
    assert set(doc) >= CONTRACT_KEYS
    assert doc["num_frames"] == 120 and doc["fps"] == pytest.approx(20)
    assert doc["duration_s"] == pytest.approx(6.0)
    assert doc["scorer"].startswith("selfattn-free")
    assert doc["num_shots"] == 3
    assert len(doc["keyframes"]) == 3
    assert {k["frame_index"] // 40 for k in doc["keyframes"]} == {0, 1, 2}  # one per shot
    for entry in doc["scores"]:
        assert set(entry) >= SCORE_KEYS and 0.0 <= entry["score"] <= 1.0
    assert [k["rank"] for k in doc["keyframes"]] == [1, 2, 3]
    json.dumps(doc, allow_nan=False)


def test_video_shorter_than_window(clips):
    doc = score_video(clips["tiny"], KeyframeOptions(k=8))
    assert doc["num_frames"] == 3
    assert 1 <= len(doc["keyframes"]) <= 3


def test_cli_out_json_csv_and_corrupt_file(clips, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _run_cli(
        [
            "keyframes",
            str(clips["shots"]),
            str(clips["corrupt"]),
            str(clips["tiny"]),
            "-k",
            "3",
            "--out",
            str(out),
            "--json",
            "--csv",
        ],
        capsys,
    )
    assert code == 1  # one file failed
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "corrupt.mp4" in errors[0]
    docs = [json.loads(line) for line in stdout.splitlines()]
    assert [Path(d["video"]).name for d in docs] == ["three_shots.mp4", "corrupt.mp4", "tiny.mp4"]
    assert "error" in docs[1]
    doc = docs[0]
    assert set(doc) >= CONTRACT_KEYS
    folder = out / "three_shots"
    on_disk = json.loads((folder / "keyframes.json").read_text())
    assert on_disk["keyframes"] == doc["keyframes"]
    for key in doc["keyframes"]:
        assert set(key) >= KEYFRAME_KEYS
        image = folder / key["image"]
        assert image.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
    assert (folder / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert (folder / "scores.csv").read_text().splitlines()[0] == "frame_index,time_s,score,keyframe_rank"
    assert (out / "tiny" / "keyframes.json").is_file()
    assert not (out / "corrupt").exists() or not any((out / "corrupt").iterdir())
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_key_frame_images_are_exact_frames_when_two_readers_share_the_work(clips):
    """The frames the JPEGs are made of (the earlier and the later half read by two readers at once) are
    the frames one reader returns, with and without skipping non-reference frames on the way."""
    from vidattn.data.decode import open_video
    from vidattn.keyframes.outputs import _read_frames

    indices = [3, 17, 41, 58, 80, 99, 118]
    with open_video(clips["shots"], backend="pyav") as reader:
        expected = reader.get_frames(indices, numpy=True)
    for reference in (True, False):
        frames = _read_frames(str(clips["shots"]), indices, KeyframeOptions(), reference=reference)
        assert sorted(frames) == indices
        for index, want in zip(indices, expected, strict=True):
            np.testing.assert_array_equal(frames[index], want)


def test_cli_first_video_decoded_ahead_matches_in_process_scoring(clips, capsys):
    """The CLI decodes its first video in a child process while it imports torch: same result, same errors."""
    code, stdout, stderr = _run_cli(["keyframes", str(clips["corrupt"]), str(clips["shots"]), "--json"], capsys)
    assert code == 1 and "corrupt.mp4" in stderr
    code, stdout, _ = _run_cli(["keyframes", str(clips["shots"]), "-k", "3", "--json"], capsys)
    assert code == 0
    ahead = json.loads(stdout)
    direct = score_video(clips["shots"], KeyframeOptions(k=3))
    assert ahead["keyframes"] == direct["keyframes"] and ahead["scores"] == direct["scores"]


def test_training_free_cli_never_imports_torch(clips, tmp_path):
    """Importing torch costs ~2 s of CPU, a third of the decode limit of a minute of 1080p: the
    training-free path (decode, descriptors, scores, JPEGs, plot) is numpy only."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vidattn.cli import main\n"
        "try:\n"
        f"    main(['keyframes', {str(clips['shots'])!r}, '-k', '3', '--out', {str(tmp_path / 'out')!r}, '--csv'])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert len(list((tmp_path / "out" / "three_shots").glob("keyframe_*.jpg"))) == 3


def test_cli_odd_stems_never_escape_out(clips, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    names = ["..hidden.mp4", "a b;c'$(x).mp4", "ünï cødé.mp4", "-dash.mp4", "same.mp4"]
    for name in names:
        (src / name).write_bytes(clips["tiny"].read_bytes())
    (src / "sub").mkdir()
    (src / "sub" / "same.mp4").write_bytes(clips["tiny"].read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, out / "hidden")  # a planted link must not be followed
    args = ["keyframes", *[str(src / n) for n in names], str(src / "sub" / "same.mp4"), "--out", str(out)]
    code, _, stderr = _run_cli(args, capsys)
    assert code == 0, stderr
    assert not any(outside.iterdir())
    written = [p for p in out.rglob("keyframes.json")]
    assert len(written) == len(names) + 1  # the two same.mp4 get distinct folders
    for p in written:
        assert p.resolve().is_relative_to(out.resolve())
    assert {p.parent.name for p in written} >= {"same", "same-2", "a_b_c_x", "ünï_cødé", "dash"}
    assert sorted(os.listdir(tmp_path)) == ["out", "outside", "src"]


def test_cli_user_errors(tmp_path, capsys):
    code, _, stderr = _run_cli(["keyframes", str(tmp_path / "missing.mp4")], capsys)
    assert code == 1 and stderr.strip().startswith("Error:") and "missing.mp4" in stderr
    assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = _run_cli(["keyframes", str(tmp_path / "x.mp4"), "--csv"], capsys)
    assert code == 2 and "--csv needs --out" in stderr


# --- model scorer --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny model in the `vidattn train` checkpoint format."""
    from vidattn.config import load_config
    from vidattn.engine.checkpoint import FORMAT, atomic_save
    from vidattn.models import create_model

    cfg = load_config(None).to_dict()
    cfg["data"].update(clip_len=8, stride=1, size=48, crop_size=48, sampler="random")  # dense clips: sliding windows
    classes = ["a", "b", "c"]
    torch.manual_seed(0)
    m = cfg["model"]
    model = create_model(m["name"], num_classes=len(classes), attn=m["attn"], head=m["head"])
    torch.nn.init.normal_(model.head.attn[2].weight, std=0.5)  # non-uniform attention
    path = tmp_path_factory.mktemp("ckpt") / "random.pt"
    atomic_save({"format": FORMAT, "model": model.state_dict(), "classes": classes, "config": cfg}, path)
    return path


def test_model_scorer_windows_and_short_video(clips, random_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _run_cli(
        [
            "keyframes",
            str(clips["shots"]),
            str(clips["tiny"]),
            "--checkpoint",
            str(random_checkpoint),
            "-k",
            "2",
            "--json",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, stderr
    long_doc, short_doc = (json.loads(line) for line in stdout.splitlines())
    assert long_doc["scorer"].startswith("model")
    assert len(long_doc["scores"]) == 120  # stride 1: every frame scored
    windows = long_doc["windows"]
    assert windows[0]["start_frame"] == 0 and windows[-1]["end_frame"] == 119
    assert all(w["label"] in ("a", "b", "c") and 0 <= w["prob"] <= 1 for w in windows)
    starts = [w["start_frame"] for w in windows]
    assert starts[1] - starts[0] == 4  # half-window hop: windows overlap
    assert max(s["score"] for s in long_doc["scores"]) == pytest.approx(1.0)
    assert len(short_doc["windows"]) == 1 and short_doc["num_frames"] == 3  # padded single window
    assert (out / "tiny" / "keyframes.json").is_file()


# --- real videos (Done-when: multi-shot videos, sharp beats blurred/black) -----------------------
_POOL = [
    "mmaction2/demo.mp4",
    "mmaction2/test.mp4",
    "mmaction2/test_video_structuralize.mp4",
    "tiny-ucf101/abseiling_k400.mp4",
    "tiny-ucf101/v_Basketball_g01_c01.avi",
    "decord/flipping_a_pancake.mkv",
    "pysot/bag.avi",
    "mmaction2/S001C001P001R001A001_rgb.avi",
    "mmaction2/test.avi",
    "kinetics-i3d/v_CricketShot_g04_c01_rgb.gif",
]  # distinct sources; demo_spatiotemporal_det.mp4 (a render of demo.mp4) is left out on purpose


@pytest.fixture(scope="module")
def realvid_frames() -> dict[str, np.ndarray]:
    shared = shared_dir()
    if shared is None or not (shared / "realvids").is_dir():
        pytest.skip("../shared/realvids is not available")
    from vidattn.data.decode import open_video

    frames = {}
    for rel in _POOL:
        with open_video(shared / "realvids" / rel, size=(160, 120)) as reader:
            frames[rel] = reader.get_frames(range(min(reader.num_frames, 80))).numpy()
    return frames


@pytest.mark.realvids
@pytest.mark.slow
def test_multishot_realvids_keyframes_in_distinct_shots(realvid_frames, tmp_path):
    rng = np.random.default_rng(0)
    n_videos, hits = 10, 0
    for v in range(n_videos):
        n_shots = int(rng.integers(3, 6))
        picks = rng.choice(len(_POOL), n_shots, replace=False)
        frames, bounds = [], [0]
        for j in picks:
            src = realvid_frames[_POOL[j]]
            length = int(rng.integers(min(38, len(src)), min(75, len(src)) + 1))
            start = int(rng.integers(0, len(src) - length + 1))
            frames.extend(src[start : start + length])
            bounds.append(len(frames))
        path = tmp_path / f"multishot_{v}.mp4"
        write_video(path, frames, fps=25, reproducible=True)
        doc = score_video(path, KeyframeOptions(k=n_shots))
        shots = {int(np.searchsorted(bounds, k["frame_index"], side="right")) - 1 for k in doc["keyframes"]}
        hits += len(shots) == n_shots
    assert hits / n_videos >= 0.9


@pytest.mark.realvids
def test_sharp_frame_beats_blurred_and_black(realvid_frames, tmp_path):
    from PIL import Image, ImageFilter

    def blur(frame: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(2.5)))

    a, b = realvid_frames["mmaction2/test.mp4"], realvid_frames["tiny-ucf101/abseiling_k400.mp4"]
    for blur_first in (True, False):
        if blur_first:  # shot 1: blurred then sharp; shot 2: black then content
            shot1 = [blur(f) for f in a[:40]] + list(a[40:80])
            shot2 = [np.zeros_like(f) for f in b[:30]] + list(b[30:80])
            bad = set(range(0, 40)) | set(range(80, 110))
        else:
            shot1 = list(a[:40]) + [blur(f) for f in a[40:80]]
            shot2 = list(b[:50]) + [np.zeros_like(f) for f in b[50:80]]
            bad = set(range(40, 80)) | set(range(130, 160))
        path = tmp_path / f"sharp_{blur_first}.mp4"
        write_video(path, shot1 + shot2, fps=25, reproducible=True)
        doc = score_video(path, KeyframeOptions(k=2))
        chosen = [k["frame_index"] for k in doc["keyframes"]]
        assert len(chosen) == 2
        assert not bad & set(chosen), (blur_first, chosen)
        assert {c // 80 for c in chosen} == {0, 1}


# --- whole-video scoring with a coverage-trained model (issue 15) --------------------------------
class _Brightness(torch.nn.Module):
    """A stand-in model whose class-"b" logit is a soft maximum of the frames' brightness: its evidence is the
    brightest frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = torch.logsumexp(x.mean((1, 3, 4)) * 20, dim=-1)
        return torch.stack([torch.zeros_like(bright), bright], dim=-1)


def _bright_frame_video(n: int, bright: int) -> np.ndarray:
    frames = np.full((n, 32, 32, 3), 60, dtype=np.uint8)
    frames[bright] = 230
    return frames


@pytest.mark.parametrize("max_samples", [4096, 100])  # whole-video views, and the bounded-memory fallback
@pytest.mark.parametrize("stride", [1, 3])  # the model's samples pushed, or every frame (views a frame apart)
def test_whole_video_scores_find_the_moment_in_a_long_video(monkeypatch, max_samples, stride):
    from vidattn.data.transforms import VideoTransform
    from vidattn.keyframes.model import KeyframeModel, WindowScorer

    monkeypatch.setattr(WindowScorer, "max_samples", max_samples)
    transform = VideoTransform(32, train=False)
    km = KeyframeModel(
        _Brightness(), ["a", "b"], 16, stride, 32, 32, torch.device("cpu"), transform=transform, sampler="auto"
    )
    scorer = WindowScorer(km, batch_size=4, every=stride)
    for frame in _bright_frame_video(700, 516):  # on a sample of every stride
        scorer.push(frame)
    scorer.finish()
    scores = scorer.consensus_scores()
    assert scores.shape == (700,) and int(scores.argmax()) == 516
    assert min(w[0] for w in scorer.windows) == 0 and max(w[1] for w in scorer.windows) == 699


class _Lit(torch.nn.Module):
    """A stand-in model whose class-"b" logit sums the brightness of the frames brighter than average: its
    evidence is each such frame's brightness, in every view that reads it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lit = torch.relu(x.mean((1, 3, 4))).sum(-1)
        return torch.stack([torch.zeros_like(lit), lit], dim=-1)


def _every_frame_scorer(model: torch.nn.Module, frames: np.ndarray, stride: int):
    from vidattn.data.transforms import VideoTransform
    from vidattn.keyframes.model import KeyframeModel, WindowScorer

    km = KeyframeModel(
        model, ["a", "b"], 32, stride, 32, 32, torch.device("cpu"), transform=VideoTransform(32, train=False),
        sampler="auto",
    )  # fmt: skip
    assert km.read_step == 1  # a whole-video model reads every frame
    scorer = WindowScorer(km, batch_size=4, every=stride)
    for frame in frames:
        scorer.push(frame)
    scorer.finish()
    return scorer


def test_key_frames_are_what_every_view_agrees_on():
    """Three views (every 3rd frame, a frame apart) each see two frames of a 6-frame event; a brighter single
    frame only one of them reads is a spike of that view's sampling and loses to the event in the consensus."""
    frames = np.full((90, 32, 32, 3), 130, dtype=np.uint8)  # every frame is some evidence
    frames[20] = 250  # one frame: only the view of phase 20 % 3 reads it
    frames[60:66] = 180  # the event: every view reads two of its frames
    scorer = _every_frame_scorer(_Lit(), frames, stride=3)
    assert sorted({w[0] for w in scorer.windows}) == [0, 1, 2] and len(scorer.windows) == 3
    assert int(scorer.frame_scores().argmax()) == 20  # each frame by the one view that reads it: the spike
    consensus = scorer.consensus_scores()
    assert consensus.shape == (90,) and 60 <= int(consensus.argmax()) <= 65


def test_every_frame_evidence_of_a_difference_model_sits_midway_in_each_view():
    frames = np.full((90, 32, 32, 3), 60, dtype=np.uint8)
    frames[50:] = 200  # the scene changes between frames 49 and 50
    scorer = _every_frame_scorer(_Change(), frames, stride=3)
    # Views read ...48, 51... / ...49, 52... / ...47, 50...: the change is placed at 49.5, 50.5 and 48.5.
    assert int(scorer.consensus_scores().argmax()) in (49, 50)


class _Change(torch.nn.Module):
    """A stand-in difference model: its class-"b" logit is a soft maximum of how much each step changed."""

    input_mode = "diff"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from vidattn.models.resnet import frame_differences

        seen = frame_differences(x) if self.input_mode == "diff" else x
        change = torch.logsumexp(seen.abs().mean((1, 3, 4)) * 20, dim=-1)
        return torch.stack([torch.zeros_like(change), change], dim=-1)


def test_evidence_of_a_difference_model_is_on_the_change_and_reported_midway():
    from vidattn.keyframes.model import evidence_frame_offsets, frame_evidence

    model = _Change()
    x = torch.zeros(1, 3, 12, 8, 8)
    x[:, :, 7:] = 1.0  # the scene changes between samples 6 and 7
    logits, evidence = frame_evidence(model, x)
    assert model.input_mode == "diff"  # restored after being fed its own differences
    assert int(logits.argmax()) == 1 and int(evidence.argmax()) == 7 and evidence[0, 0] == 0
    assert (evidence[0, :7] < 1e-3 * evidence[0, 7]).all()  # nothing before the change counts
    # Samples every 3rd frame: sample 7 (frame 21) holds the change since frame 18, reported at frame 20.
    indices = np.arange(0, 36, 3)
    assert (indices - evidence_frame_offsets(indices, "diff"))[7] == 20
    assert evidence_frame_offsets(indices, "rgb").tolist() == [0] * 12
    assert evidence_frame_offsets(np.array([5]), "diff").tolist() == [0]


@pytest.fixture(scope="module")
def coverage_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny model trained (as its config says) with whole-video coverage at stride 2."""
    from vidattn.config import load_config
    from vidattn.engine.checkpoint import FORMAT, atomic_save
    from vidattn.models import create_model

    cfg = load_config(None).to_dict()
    cfg["data"].update(clip_len=16, stride=2, size=48, crop_size=48, sampler="auto")
    torch.manual_seed(0)
    model = create_model("r2plus1d_tiny", num_classes=2, attn="stc", head="attn")
    torch.nn.init.normal_(model.head.attn[2].weight, std=0.5)
    path = tmp_path_factory.mktemp("ckpt") / "coverage.pt"
    atomic_save({"format": FORMAT, "model": model.state_dict(), "classes": ["a", "b"], "config": cfg}, path)
    return path


def test_checkpoint_scores_map_to_true_frame_indices_on_a_long_video(coverage_checkpoint, tmp_path, capsys):
    video = tmp_path / "long.mp4"
    write_video(video, _scene(5, 120) + _scene(6, 120) + _scene(7, 61), fps=20, reproducible=True)  # 301 frames
    args = ["keyframes", str(video), "--checkpoint", str(coverage_checkpoint), "-k", "3", "--json", "--device", "cpu"]
    code, stdout, stderr = _run_cli(args, capsys)
    assert code == 0, stderr
    doc = json.loads(stdout)
    assert doc["num_frames"] == 301
    indices = [s["frame_index"] for s in doc["scores"]]
    assert indices == list(range(301))  # a whole-video model: every true frame is scored, none invented
    for s in doc["scores"]:
        assert s["time_s"] == pytest.approx(s["frame_index"] / 20, abs=1e-6)
    assert all(k["frame_index"] in indices for k in doc["keyframes"])
    # Each view spans the whole video, and together they score every sample.
    assert all(w["start_frame"] <= 20 and w["end_frame"] >= 280 for w in doc["windows"])
    assert len(doc["windows"]) == -(-len(indices) // 16)
