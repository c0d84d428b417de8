"""`vidattn explain`: maps from every kind of spatial attention, the whole-video pass at true frame indices,
the overlay video, contact sheet and plot, the Python API, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidattn.cli import main
from vidattn.data.decode import open_video
from vidattn.errors import VidattnError
from vidattn.explainer import ExplainModel, ExplainOptions, explain, explain_video, map_layers, select_layers
from vidattn.explainer.outputs import FILES
from vidattn.explainer.render import MAX_PANELS, panel_size
from vidattn.keyframes.model import WindowScorer
from vidattn.models import create_model
from vidattn.testing import make_index_video


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out, captured.err


def _shake(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights in the identity-initialised attention layers, so maps and weights are not flat."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "attn" in name or "score" in name:
            torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def _checkpoint(path: Path, *, attn="stc", stride: int = 2, clip_len: int = 8, sampler: str = "auto", **kw) -> Path:
    """A tiny model in the `vidattn train` checkpoint format (as tests/test_keyframes.py makes them)."""
    from vidattn.config import load_config
    from vidattn.engine.checkpoint import FORMAT, atomic_save

    cfg = load_config(None).to_dict()
    cfg["data"].update(clip_len=clip_len, stride=stride, size=32, crop_size=32, sampler=sampler)
    cfg["model"].update(attn=attn, **kw)
    classes = ["a", "b", "c"]
    model = _shake(create_model(cfg["model"]["name"], num_classes=len(classes), attn=attn, head="attn", **kw))
    atomic_save({"format": FORMAT, "model": model.state_dict(), "classes": classes, "config": cfg}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain")
    out = {
        "ckpt": _checkpoint(root / "stc.pt"),
        "se": _checkpoint(root / "se.pt", attn="se"),
        "short": make_index_video(root / "short.mp4", 41, height=48, width=64),  # 4:3, 25 fps
        "long": make_index_video(root / "long.mp4", 150, height=32, width=32),
    }
    bad = root / "corrupt.mp4"
    bad.write_bytes(out["short"].read_bytes()[:64] + b"\x00" * 4096)
    out["corrupt"] = bad
    return out


# --- maps and the Python API ---------------------------------------------------------------------
def test_api_returns_arrays_of_the_clip_shape():
    import vidattn

    model = _shake(create_model("r2plus1d_tiny", num_classes=3, attn="stc", head="attn"))
    clip = torch.randn(2, 3, 8, 32, 32)
    ex = vidattn.explain(model, clip)
    names = [m.name for m in map_layers(model)]
    assert names == [f"layer{i}.0.attn.spatial" for i in range(1, 5)]
    assert ex.probs.shape == (2, 3) and np.allclose(ex.probs.sum(1), 1, atol=1e-5)
    assert ex.temporal.shape == (2, 8) and np.allclose(ex.temporal.sum(1), 1, atol=1e-5)
    assert set(ex.spatial) == set(names) and ex.picked is None
    for maps in ex.spatial.values():
        assert isinstance(maps, np.ndarray) and maps.shape == (2, 8, 32, 32)
        assert maps.min() >= 0 and maps.max() <= 1  # sigmoid gates
    assert not np.allclose(ex.spatial[names[0]][0, 0], ex.spatial[names[0]][0, 0].mean())  # a real map
    one = explain(model, clip[0], layers=["layer2"])  # (C, T, H, W) and a prefix
    assert list(one.spatial) == ["layer2.0.attn.spatial"] and one.temporal.shape == (1, 8)


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [({"attn": "stn"}, "stn"), ({"attn": "cbam"}, "spatial"), ({"attn": "local"}, "spatial"), ({}, "nonlocal")],
)
def test_every_spatial_kind_gives_a_map_per_frame(kwargs, kind):
    extra = {"nonlocal_stages": (2,)} if kind == "nonlocal" else {}
    model = create_model("r2plus1d_tiny", num_classes=2, head="attn", **kwargs, **extra).eval()
    if kind == "stn":  # every warp zooms 2x onto the centre: the region it samples is the centre half
        for name, p in model.named_parameters():
            if name.endswith("attn.fc.bias"):
                p.data.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0, 0.5, 0.0]))
    else:
        _shake(model)
    layers = [m for m in map_layers(model) if m.kind == kind]
    assert layers
    ex = explain(model, torch.randn(1, 3, 6, 32, 48), layers=[m.name for m in layers])  # not square: h != w
    for maps in ex.spatial.values():
        assert maps.shape == (1, 6, 32, 48) and np.isfinite(maps).all()
    if kind == "stn":
        region = ex.spatial[layers[0].name][0, 0]
        assert region[16, 24] == 1 and region[0, 0] == 0 and region[31, 47] == 0
        assert region.mean() == pytest.approx(0.25, abs=0.05)


def test_glimpse_model_reports_its_picks_and_maps_only_where_it_looked():
    model = _shake(create_model("r2plus1d_glimpse", num_classes=2, attn="stc", k=2, glimpse_len=4))
    ex = explain(model, torch.randn(1, 3, 24, 32, 32))
    assert ex.picked is not None and ex.picked.shape == (1, 24) and ex.picked.sum() == 2
    maps = ex.spatial["backbone.layer1.0.attn.spatial"]
    looked = ~np.isnan(maps[0]).all((1, 2))
    assert looked.sum() == 8  # two glimpses of four frames
    assert all(looked[i] for i in np.flatnonzero(ex.picked[0]))  # each pick is inside its glimpse


def test_layer_selection_errors_name_the_choices():
    model = create_model("r2plus1d_tiny", num_classes=2, attn="stc", head="attn")
    with pytest.raises(VidattnError, match="unknown layer 'layer9'.*layer1.0.attn.spatial"):
        select_layers(model, ["layer9"])
    se = create_model("r2plus1d_tiny", num_classes=2, attn="se", head="attn")
    assert select_layers(se, None) == []
    with pytest.raises(VidattnError, match="no spatial attention"):
        select_layers(se, ["layer1"])


# --- one video, true frame indices ---------------------------------------------------------------
@pytest.mark.parametrize("max_samples", [4096, 10])  # whole-video views, and the bounded-memory fallback
def test_long_video_weights_and_maps_sit_at_true_frame_indices(files, monkeypatch, max_samples):
    monkeypatch.setattr(WindowScorer, "max_samples", max_samples)
    opts = ExplainOptions(device="cpu")
    model = ExplainModel.load(files["ckpt"], opts)
    ex = explain_video(files["long"], model, opts)
    assert ex.indices.tolist() == list(range(0, 150, 2))  # stride 2: every second true frame, none invented
    assert np.allclose(ex.times, ex.indices / 25)
    assert ex.weights.shape == (75,) and np.isfinite(ex.weights).all()
    assert [layer.name for layer in ex.layers] == list(ex.maps)
    assert ex.maps["layer1.0.attn.spatial"].shape == (75, 8, 8)  # 32 px input, spatial stride 4 at layer1
    assert all(np.isfinite(m).all() for m in ex.maps.values())
    assert min(w[0] for w in ex.windows) == 0 and max(w[1] for w in ex.windows) == 74  # the views cover it all
    assert ex.sample_of(np.array([0, 1, 2, 3, 149])).tolist() == [0, 0, 1, 1, 74]
    # The prediction is `vidattn score`'s: its views, averaged.
    assert [label for label, _ in ex.topk] and abs(sum(p for _, p in ex.topk) - 1) < 1e-3


def test_explain_shows_the_attention_weights_not_the_key_frames_evidence(files, monkeypatch):
    import vidattn.keyframes.model as kf_model

    def no_evidence(*args, **kwargs):
        raise AssertionError("explain must not score frames by their evidence")

    monkeypatch.setattr(kf_model, "frame_evidence", no_evidence)
    opts = ExplainOptions(device="cpu")
    model = ExplainModel.load(files["ckpt"], opts)
    ex = explain_video(files["short"], model, opts)
    views = [torch.stack([torch.zeros(32, 32, 3, dtype=torch.uint8)] * 8)]
    weights, _ = model.windows.attention_windows(torch.stack(views))
    assert weights.shape == (1, 8) and torch.allclose(weights.sum(1), torch.tensor(8.0))  # frame_weights, mean 1
    assert np.isfinite(ex.weights).all() and ex.weights.max() > ex.weights.min()  # the shaken attention is not flat


def test_dense_clip_model_slides_windows_also_over_a_video_shorter_than_one(files, tmp_path):
    ckpt = _checkpoint(tmp_path / "dense.pt", sampler="random", stride=1)
    opts = ExplainOptions(device="cpu")
    model = ExplainModel.load(ckpt, opts)
    ex = explain_video(files["short"], model, opts)
    assert ex.indices.tolist() == list(range(41)) and len(ex.windows) > 1  # overlapping windows of 8
    assert ex.maps["layer1.0.attn.spatial"].shape == (41, 8, 8)
    tiny = make_index_video(tmp_path / "three.mp4", 3, height=32, width=32)
    ex = explain_video(tiny, model, opts)  # one window, padded with the last frame
    assert ex.indices.tolist() == [0, 1, 2] and len(ex.windows) == 1
    assert all(m.shape[0] == 3 and np.isfinite(m).all() for m in ex.maps.values())


def test_cli_writes_json_overlay_sheet_and_plot(files, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["explain", str(files["short"]), "--checkpoint", str(files["ckpt"]), "--out", str(out), "--device", "cpu"]
    code, stdout, stderr = _run_cli([*args, "--json", "--top-frames", "4"], capsys)
    assert code == 0, stderr
    doc = json.loads(stdout)
    folder = out / "short"
    assert json.loads((folder / FILES["json"]).read_text()) == doc
    assert doc["num_frames"] == 41 and (doc["width"], doc["height"]) == (64, 48)
    assert doc["model_view"] == {"x": 8, "y": 0, "side": 48}  # the centre square the model sees
    assert [f["frame_index"] for f in doc["frames"]] == list(range(0, 41, 2))
    assert all(f["time_s"] == pytest.approx(f["frame_index"] / 25) for f in doc["frames"])
    for f in doc["frames"]:  # peaks are frame pixels inside the part the model sees
        for x, y in f["peaks"].values():
            assert 8 <= x <= 56 and 0 <= y <= 48
    assert [t["rank"] for t in doc["top_frames"]] == [1, 2, 3, 4]
    assert {t["frame_index"] for t in doc["top_frames"]} <= set(range(0, 41, 2))
    assert doc["prediction"][0]["label"] in ("a", "b", "c") and len(doc["layers"]) == 4
    # Overlay: every frame of the video, panels (frame + each layer) above the weight strip.
    pw, ph = panel_size(64, 48)
    with open_video(folder / FILES["overlay"], backend="pyav") as reader:
        assert reader.num_frames == 41 == doc["overlay_frames"]
        assert reader.width == pw * (1 + min(4, MAX_PANELS)) and reader.height > ph
        assert len(list(reader.iter_frames(numpy=True))) == 41
    sheet = Image.open(folder / FILES["contact_sheet"])
    assert sheet.size == (pw * 5 + 2 * 6, 4 * (ph + 16 + 6) + 6)  # one row per top frame: frame + 4 maps
    plot = Image.open(folder / FILES["plot"])
    assert plot.format == "PNG" and plot.size == (1000, 340)
    arrays = np.load(folder / FILES["maps"])
    assert arrays["frame_index"].tolist() == list(range(0, 41, 2))
    assert arrays["map:layer1.0.attn.spatial"].shape == (21, 8, 8)
    assert not list(folder.glob(".*.tmp*"))  # atomic writes left nothing behind
    assert sorted(p.name for p in out.iterdir()) == ["short"]  # nothing outside --out/<stem>


def test_cli_without_spatial_attention_explains_time_only(files, capsys):
    args = ["explain", str(files["short"]), "--checkpoint", str(files["se"]), "--json", "--device", "cpu"]
    code, stdout, stderr = _run_cli(args, capsys)
    assert code == 0 and "no spatial attention" in stderr
    doc = json.loads(stdout)
    assert doc["layers"] == [] and all("peaks" not in f for f in doc["frames"])


# --- bad input: one line, non-zero exit ----------------------------------------------------------
def _one_error(code: int, stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("Error:"), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_input_gets_one_clear_line(files, tmp_path, capsys):
    video, ckpt = str(files["short"]), str(files["ckpt"])
    _one_error(*_run_cli(["explain", video], capsys)[::2], "--checkpoint is required")
    _one_error(*_run_cli(["explain", video, "--checkpoint", str(tmp_path / "no.pt")], capsys)[::2], "does not exist")
    not_ckpt = tmp_path / "junk.pt"
    not_ckpt.write_bytes(b"not a checkpoint")
    _one_error(*_run_cli(["explain", video, "--checkpoint", str(not_ckpt)], capsys)[::2], "not a loadable")
    args = ["explain", video, "--checkpoint", str(files["se"]), "--layers", "layer1", "--device", "cpu"]
    _one_error(*_run_cli(args, capsys)[::2], "no spatial attention")
    args = ["explain", video, "--checkpoint", ckpt, "--layers", "layer1.0.attn.spatal", "--device", "cpu"]
    _one_error(*_run_cli(args, capsys)[::2], "unknown layer", "layer1.0.attn.spatial")
    for bad in (str(tmp_path / "missing.mp4"), str(files["corrupt"])):
        _one_error(*_run_cli(["explain", bad, "--checkpoint", ckpt, "--device", "cpu"], capsys)[::2], bad)


def test_read_only_out_dir_is_one_line(files, tmp_path, capsys, make_read_only):
    locked = tmp_path / "locked"
    locked.mkdir()
    make_read_only(locked)
    args = ["explain", str(files["short"]), "--checkpoint", str(files["ckpt"]), "--out", str(locked / "x")]
    _one_error(*_run_cli([*args, "--device", "cpu"], capsys)[::2], "cannot write")


# --- the generator's ground truth ----------------------------------------------------------------
def test_synthetic_boxes_leave_the_videos_unchanged(tmp_path):
    from vidattn.data.synthetic import CLASSES, SynthSpec, generate_dataset, render_video, render_video_boxes

    spec = SynthSpec(min_frames=24, max_frames=30)
    for ci, label in enumerate(CLASSES):
        frames, start, end = render_video(label, np.random.default_rng([7, ci]), spec)
        again, start2, end2, boxes = render_video_boxes(label, np.random.default_rng([7, ci]), spec)
        assert np.array_equal(frames, again) and (start, end) == (start2, end2)
        assert len(boxes) == len(frames)
        if start is None:  # no_event: no target, no box
            assert all(box is None for box in boxes)
            continue
        assert all((box is not None) == (start <= t <= end) for t, box in enumerate(boxes))
        for box in filter(None, boxes):
            x, y, w, h = box
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 32 and y + h <= 32
        if label.startswith("move"):  # the box is where the pixels changed: it moves with the target
            assert boxes[start] != boxes[end]
    root = generate_dataset(tmp_path / "d", per_class=1, val_per_class=1, spec=spec)
    lines = [json.loads(line) for line in (root / "train" / "boxes.jsonl").read_text().splitlines()]
    assert len(lines) == len(CLASSES) and all(len(d["boxes"]) >= 24 for d in lines)
    # A split made before boxes.jsonl existed gets the boxes only: its videos are not rewritten.
    video = root / "val" / lines[0]["path"]
    stamp = video.stat().st_mtime_ns
    (root / "val" / "boxes.jsonl").unlink()
    generate_dataset(tmp_path / "d", per_class=1, val_per_class=1, spec=spec)
    assert (root / "val" / "boxes.jsonl").is_file() and video.stat().st_mtime_ns == stamp
