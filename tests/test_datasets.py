"""Datasets: every annotation format, the stable class map, failure-tolerant loading, lazy indexing, transforms."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vidattn.data import (
    ErrorsManifest,
    RandomClipSampler,
    SegmentSampler,
    UniformClipSampler,
    VideoDataset,
    VideoRecord,
    VideoTransform,
    build_loader,
    center_crop,
    load_annotations,
    load_classes,
    open_video,
    save_classes,
    spatial_views,
    three_crop,
)
from vidattn.data.transforms import KINETICS_MEAN, KINETICS_STD, flip_mirror, mirror_classes
from vidattn.errors import ConfigError, VideoDecodeError
from vidattn.testing import make_faststart_index_video, read_index

CLASSES = ["brush_hair", "cartwheel", "jump"]


def touch_videos(root: Path, names: list[str]) -> list[Path]:
    out = []
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not decoded at index time")
        out.append(path)
    return out


def by_path(records) -> dict[str, int]:
    return {Path(r.path).name: r.label for r in records}


# ------------------------------------------------------------------------------------------------
# Annotation formats
# ------------------------------------------------------------------------------------------------
def test_folder_per_class(tmp_path):
    touch_videos(tmp_path, ["jump/a.mp4", "cartwheel/b.avi", "cartwheel/c.MKV", "brush_hair/d.webm", "jump/notes.txt"])
    (tmp_path / ".cache").mkdir()  # hidden folders are not classes
    records, classes = load_annotations(tmp_path)
    assert classes == CLASSES  # sorted: stable whatever the file system's order
    assert by_path(records) == {"a.mp4": 2, "b.avi": 1, "c.MKV": 1, "d.webm": 0}


def test_split_folders_auto_detected(tmp_path):
    touch_videos(tmp_path, ["train/jump/a.mp4", "train/cartwheel/b.mp4", "train/brush_hair/c.mp4"])
    touch_videos(tmp_path, ["val/jump/d.mp4", "val/brush_hair/e.mp4"])
    train, classes = load_annotations(tmp_path, "train")
    assert classes == CLASSES and by_path(train) == {"a.mp4": 2, "b.mp4": 1, "c.mp4": 0}
    # The validation split reuses the training class map (it lacks "cartwheel"): indices stay stable.
    val, val_classes = load_annotations(tmp_path, "val", classes=classes)
    assert val_classes == CLASSES and by_path(val) == {"d.mp4": 2, "e.mp4": 0}
    test, _ = load_annotations(tmp_path, "test", classes=classes)  # "test" is accepted for val
    assert by_path(test) == by_path(val)


def test_split_folders_missing_split(tmp_path):
    touch_videos(tmp_path, ["train/jump/a.mp4"])
    with pytest.raises(ConfigError, match="split"):
        load_annotations(tmp_path, "val")


@pytest.mark.parametrize("labels", ["int", "name"])
def test_path_label_list(tmp_path, labels):
    touch_videos(tmp_path, ["videos/x 1.mp4", "videos/y.mp4", "videos/z.mp4"])
    lab = (["2", "0", "1"]) if labels == "int" else ["jump", "brush_hair", "cartwheel"]
    text = "# Kinetics-style list\n\n" + "".join(
        f"videos/{n} {lab_}\n" for n, lab_ in zip(["x 1.mp4", "y.mp4", "z.mp4"], lab, strict=True)
    )
    (tmp_path / "train.txt").write_text(text)
    records, classes = load_annotations(tmp_path, ann_file="train.txt")
    assert by_path(records) == {"x 1.mp4": 2, "y.mp4": 0, "z.mp4": 1}  # paths with spaces survive
    assert classes == (["0", "1", "2"] if labels == "int" else CLASSES)
    assert all(Path(r.path).is_absolute() and Path(r.path).exists() for r in records)


def test_list_with_bad_line(tmp_path):
    (tmp_path / "bad.txt").write_text("only_a_path.mp4\n")
    with pytest.raises(ConfigError, match="bad.txt:1"):
        load_annotations(tmp_path, ann_file="bad.txt")


def test_csv_with_header_and_trim(tmp_path):
    touch_videos(tmp_path, ["a.mp4", "b.mp4", "c.mp4"])
    (tmp_path / "ann.csv").write_text(
        "path,label,start,end\na.mp4,jump,1.5,3.0\nb.mp4,cartwheel,,\nc.mp4,brush_hair,0,2\n"
    )
    records, classes = load_annotations(tmp_path, ann_file=tmp_path / "ann.csv")
    assert classes == CLASSES
    rec = {Path(r.path).name: r for r in records}
    assert rec["a.mp4"] == VideoRecord(str(tmp_path / "a.mp4"), 2, 1.5, 3.0)
    assert (rec["b.mp4"].start_s, rec["b.mp4"].end_s) == (None, None)
    (tmp_path / "plain.csv").write_text("path,label\na.mp4,1\nb.mp4,0\n")
    records, classes = load_annotations(tmp_path, ann_file="plain.csv")
    assert classes == ["0", "1"] and by_path(records) == {"a.mp4": 1, "b.mp4": 0}
    (tmp_path / "nohead.csv").write_text("a.mp4,1\n")
    with pytest.raises(ConfigError, match="header"):
        load_annotations(tmp_path, ann_file="nohead.csv")


def make_ucf101(root: Path) -> None:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    ucf = ["ApplyEyeMakeup", "Basketball", "YoYo"]
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(ucf)))
    train, test = [], []
    for i, c in enumerate(ucf):
        for g in (8, 9, 1):
            rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
            touch_videos(root, [rel])
            if g == 1:
                test.append(f"{rel}\r\n")  # the official files have Windows line ends
            else:
                train.append(f"{rel} {i + 1}\r\n")
    (lists / "trainlist01.txt").write_text("".join(train))
    (lists / "testlist01.txt").write_text("".join(test))


def test_ucf101_official_splits(tmp_path):
    make_ucf101(tmp_path)
    train, classes = load_annotations(tmp_path, "train")  # auto-detected from classInd.txt
    assert classes == ["ApplyEyeMakeup", "Basketball", "YoYo"]
    assert len(train) == 6
    assert by_path(train)["v_Basketball_g08_c01.avi"] == 1  # trainlist labels are 1-based; ours 0-based
    test, _ = load_annotations(tmp_path, "val", fmt="ucf101", classes=classes)
    assert by_path(test) == {"v_ApplyEyeMakeup_g01_c01.avi": 0, "v_Basketball_g01_c01.avi": 1, "v_YoYo_g01_c01.avi": 2}
    assert all(Path(r.path).exists() for r in train + test)
    with pytest.raises(ConfigError, match="trainlist02"):
        load_annotations(tmp_path, "train", split_id=2)


def test_hmdb51_split_files(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for c in CLASSES:
        lines = []
        for k, flag in enumerate([1, 1, 2, 0]):
            name = f"{c}_clip{k}.avi"
            touch_videos(tmp_path, [f"{c}/{name}"])
            lines.append(f"{name} {flag} \n")
        (splits / f"{c}_test_split1.txt").write_text("".join(lines))
        (splits / f"{c}_test_split2.txt").write_text("".join(lines[::-1]))
    train, classes = load_annotations(tmp_path, "train")
    assert classes == CLASSES
    assert by_path(train) == {f"{c}_clip{k}.avi": i for i, c in enumerate(CLASSES) for k in (0, 1)}
    test, _ = load_annotations(tmp_path, "val", classes=classes)
    assert by_path(test) == {f"{c}_clip2.avi": i for i, c in enumerate(CLASSES)}  # 0 = unused is left out
    assert all(Path(r.path).exists() for r in train + test)


def test_class_map_saved_and_loaded(tmp_path):
    save_classes(CLASSES, tmp_path / "classes.json")
    assert load_classes(tmp_path / "classes.json") == CLASSES
    assert json.loads((tmp_path / "classes.json").read_text()) == CLASSES
    # A new class folder appearing later does not renumber the saved map.
    touch_videos(tmp_path / "data", ["jump/a.mp4", "cartwheel/b.mp4", "brush_hair/c.mp4"])
    records, classes = load_annotations(tmp_path / "data", classes=load_classes(tmp_path / "classes.json"))
    assert classes == CLASSES
    touch_videos(tmp_path / "data", ["aardvark/d.mp4"])
    with pytest.raises(ConfigError, match="aardvark"):
        load_annotations(tmp_path / "data", classes=CLASSES)
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(ConfigError):
        load_classes(tmp_path / "bad.json")


def test_missing_root_and_annotation(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_annotations(tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_annotations(tmp_path, ann_file="missing.txt")
    with pytest.raises(ConfigError, match="no class folders"):
        load_annotations(tmp_path)


def test_indexing_never_decodes(tmp_path):
    """2,000 garbage 'videos': indexing is a directory walk, not a decode per file."""
    rng = np.random.default_rng(0)
    for c in range(20):
        folder = tmp_path / f"class_{c:02d}"
        folder.mkdir()
        for k in range(100):
            (folder / f"clip_{k}.mp4").write_bytes(rng.bytes(64))
    t0 = time.perf_counter()
    records, classes = load_annotations(tmp_path)
    assert time.perf_counter() - t0 < 5
    assert len(records) == 2000 and len(classes) == 20


# ------------------------------------------------------------------------------------------------
# Samples and the loader
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, index_videos) -> Path:
    """Folder-per-class tree of square index videos plus one corrupt file and one too-short video."""
    root = tmp_path_factory.mktemp("dataset")
    for c, names in {"a": ["0.mp4", "1.mp4", "2.mp4"], "b": ["3.mp4", "4.mp4", "broken.mp4"]}.items():
        (root / c).mkdir()
        for name in names:
            if name == "broken.mp4":
                (root / c / name).write_bytes(np.random.default_rng(1).bytes(4096))
            else:
                shutil.copy(index_videos["square.mp4"], root / c / name)
    return root


def check_exact(batch) -> None:
    """Every frame of every clip shows the index the sample says it decoded."""
    for video, indices in zip(batch["video"], batch["frame_indices"], strict=True):
        for view in video:  # (T, S, S, C); views of one temporal clip share its indices
            assert [read_index(f) for f in view] in [row.tolist() for row in indices]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 2])
def test_loader_skips_corrupt_video_and_records_it(dataset_dir, tmp_path, workers):
    records, classes = load_annotations(dataset_dir)
    ds = VideoDataset(records, classes, RandomClipSampler(6, stride=3), size=96, crop="center", seed=5)
    loader = build_loader(ds, batch_size=4, shuffle=True, num_workers=workers, seed=1)
    manifest = ErrorsManifest(tmp_path / "errors.jsonl")
    seen, labels = [], {}
    for batch in loader:
        assert batch["video"].dtype == torch.uint8
        assert batch["video"].shape[1:] == (1, 6, 96, 96, 3)
        check_exact(batch)
        seen += batch["path"]
        labels.update(zip(batch["path"], batch["label"].tolist(), strict=True))
        manifest.record(batch["errors"], epoch=0)
    good = [r.path for r in records if not r.path.endswith("broken.mp4")]
    assert sorted(seen) == sorted(good)  # the epoch completed; the bad one is dropped, nothing swapped in
    assert labels == {r.path: r.label for r in records if r.path in good}
    assert manifest.count == 1
    lines = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["path"].endswith("broken.mp4") and lines[0]["epoch"] == 0
    assert "cannot open" in lines[0]["error"] and lines[0]["path"] not in lines[0]["error"]
    # The same failure next epoch is a new line; the same epoch again is not.
    assert manifest.record([{"path": lines[0]["path"], "error": "x"}], epoch=0) == 0
    assert manifest.record([{"path": lines[0]["path"], "error": "x"}], epoch=1) == 1


def test_same_samples_with_and_without_workers(dataset_dir):
    records, classes = load_annotations(dataset_dir)
    ds = VideoDataset(records, classes, RandomClipSampler(4, stride=2), size=96, crop="random", seed=3)
    by_workers = {}
    for workers in (0, 2):
        loader = build_loader(ds, batch_size=2, num_workers=workers, persistent_workers=False)
        by_workers[workers] = {
            p: idx.tolist() for b in loader for p, idx in zip(b["path"], b["frame_indices"], strict=True)
        }
    assert by_workers[0] == by_workers[2]  # randomness depends on (seed, epoch, index) only
    ds.set_epoch(1)
    assert {r["path"]: r["frame_indices"].tolist() for r in (ds[i] for i in range(5))} != by_workers[0]


def test_decoded_video_cache_gives_the_same_samples(dataset_dir):
    records, classes = load_annotations(dataset_dir)
    sampler = RandomClipSampler(5, stride=2)
    plain = VideoDataset(records, classes, sampler, size=96, crop="random", seed=4)
    cached = VideoDataset(records, classes, sampler, size=96, crop="random", seed=4, cache_mb=64)
    for epoch in (0, 1, 2):  # epoch 0 fills the cache, later epochs read from it
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(records)):
            a, b = plain[i], cached[i]
            assert ("error" in a) == ("error" in b)
            if "error" in a:
                assert a["error"] == b["error"]
                continue
            assert torch.equal(a["frame_indices"], b["frame_indices"])
            assert torch.equal(a["video"], b["video"])
            check_exact({"video": [b["video"]], "frame_indices": [b["frame_indices"]]})
    good = {r.path for r in records if not r.path.endswith("broken.mp4")}
    assert set(cached._decoded) == good  # whole videos held; the broken file is not
    assert not cached._cache._readers  # readers of cached videos are closed


def test_decoded_video_cache_stops_at_its_budget(dataset_dir):
    records, classes = load_annotations(dataset_dir)
    one_video_mb = 48 * 96 * 96 * 3 / 2**20  # square.mp4: 48 frames of 96x96
    ds = VideoDataset(records, classes, RandomClipSampler(4), size=96, crop="center", cache_mb=2.5 * one_video_mb)
    samples = [ds[i] for i in range(len(records))]
    assert len(ds._decoded) == 2
    for s in samples:
        if "error" not in s:
            check_exact({"video": [s["video"]], "frame_indices": [s["frame_indices"]]})


@pytest.mark.parametrize("backend", ["pyav", "auto"])
def test_decoded_video_cache_keeps_what_a_truncated_file_decodes(tmp_path, backend):
    data = make_faststart_index_video(tmp_path / "full.mp4", 60, height=96, width=96).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    ds = VideoDataset(
        [VideoRecord(str(cut), 0)], ["x"], RandomClipSampler(8), size=96, crop="center", cache_mb=64, backend=backend
    )
    sample = ds[0]
    n = len(ds._decoded[str(cut)].frames)
    assert 0 < n < 60
    idx = sample["frame_indices"][0].tolist()
    assert max(idx) < n and [read_index(f) for f in sample["video"][0]] == idx


@pytest.mark.timeout(120)
def test_dataset_used_in_parent_then_forked_into_workers(dataset_dir):
    """Readers opened in the main process (e.g. `ds[0]` to peek) must not be reused by forked workers:
    their decoder threads stay in the parent, so reuse hangs or segfaults."""
    records, classes = load_annotations(dataset_dir)
    ds = VideoDataset(records, classes, RandomClipSampler(4, stride=2), size=96, crop="center", seed=3)
    peek = [ds[i]["path"] for i in range(len(ds))]  # fills the main process's reader cache
    assert len(peek) == len(records)
    loader = build_loader(ds, batch_size=2, num_workers=2, persistent_workers=False)
    t0 = time.perf_counter()
    batches = list(loader)
    assert time.perf_counter() - t0 < 60
    assert not [e for b in batches for e in b["errors"] if not e["path"].endswith("broken.mp4")]
    for batch in batches:
        check_exact(batch)


_INHERITED: dict = {}


def _use_inherited_reader() -> str:
    try:
        _INHERITED["reader"].get_frames([2])
    except VideoDecodeError as exc:
        return str(exc)
    return "no error"


@pytest.mark.timeout(60)
def test_reader_used_after_fork_fails_cleanly(index_videos):
    import multiprocessing as mp

    reader = _INHERITED["reader"] = open_video(index_videos["h264.mp4"], backend="pyav")
    try:
        reader.get_frames([1])  # starts the reader's decode thread in this process
        with mp.get_context("fork").Pool(1) as pool:
            assert "another process" in pool.apply(_use_inherited_reader)
        assert read_index(reader.get_frames([3])[0]) == 3  # still fine in its own process
    finally:
        _INHERITED.clear()
        reader.close()


def test_all_failed_batch_still_reports_errors(dataset_dir):
    bad = [VideoRecord(str(dataset_dir / "b" / "broken.mp4"), 1), VideoRecord(str(dataset_dir / "nope.mp4"), 0)]
    ds = VideoDataset(bad, ["a", "b"], RandomClipSampler(4), size=96)
    (batch,) = list(build_loader(ds, batch_size=2))
    assert batch["video"].numel() == 0 and batch["path"] == []
    assert [e["path"] for e in batch["errors"]] == [r.path for r in bad]
    assert "no such file" in batch["errors"][1]["error"]


def test_short_video_skip_policy_is_recorded(index_videos):
    rec = [VideoRecord(str(index_videos["short.mp4"]), 0)]
    skip = VideoDataset(rec, ["x"], RandomClipSampler(8, stride=2, short="skip"), size=64, crop="center")
    assert "a clip needs 15" in skip[0]["error"]
    pad = VideoDataset(rec, ["x"], RandomClipSampler(8, stride=2, short="pad"), size=64, crop="center")
    assert pad[0]["frame_indices"].tolist() == [[0, 2, 4, 4, 4, 4, 4, 4]]


def test_multi_view_test_sample(index_videos):
    rec = [VideoRecord(str(index_videos["h264.mp4"]), 0)]  # 96x64 frames
    ds = VideoDataset(rec, ["x"], UniformClipSampler(4, stride=2, num_clips=2), size=48, crop="three")
    sample = ds[0]
    assert sample["video"].shape == (6, 4, 48, 48, 3)  # 2 clips x 3 crops
    assert sample["frame_indices"].shape == (2, 4)
    seg = VideoDataset(rec, ["x"], SegmentSampler(5, random=False), size=48, crop="center")
    assert seg[0]["frame_indices"].tolist() == [[6, 18, 30, 42, 54]]


def test_trimmed_record_samples_inside_the_trim(index_videos):
    rec = [VideoRecord(str(index_videos["square.mp4"]), 0, start_s=1.0, end_s=1.5)]  # 25 fps: frames 25..37
    ds = VideoDataset(rec, ["x"], RandomClipSampler(4, stride=2), size=96, crop="center")
    for seed in range(5):
        ds.seed = seed
        sample = ds[0]
        idx = sample["frame_indices"][0].tolist()
        assert all(25 <= i < 38 for i in idx)
        assert [read_index(f) for f in sample["video"][0]] == idx


# ------------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------------
def test_video_transform_eval_shape_dtype_normalisation():
    video = torch.full((2, 4, 40, 50, 3), 128, dtype=torch.uint8)
    out = VideoTransform(32)(video)
    assert out.shape == (2, 3, 4, 32, 32) and out.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(KINETICS_MEAN)) / torch.tensor(KINETICS_STD)
    assert torch.allclose(out[0, :, 0, 0, 0], expected, atol=1e-5)
    views = VideoTransform(32)(torch.zeros((2, 3, 4, 32, 32, 3), dtype=torch.uint8))
    assert views.shape == (2, 3, 3, 4, 32, 32)  # (B, V, C, T, S, S)
    with pytest.raises(ValueError, match="expected uint8 video"):
        VideoTransform(32)(torch.zeros((2, 4, 32, 32), dtype=torch.uint8))


def _left_dark_right_bright(b: int = 16) -> torch.Tensor:
    video = torch.zeros((b, 2, 32, 32, 3), dtype=torch.uint8)
    video[..., 16:, :] = 255
    return video


def test_video_transform_train_random_crop_and_flip():
    video = _left_dark_right_bright()
    gen = torch.Generator().manual_seed(0)
    out = VideoTransform(16, train=True, flip=True)(video, generator=gen)
    assert out.shape == (16, 3, 2, 16, 16) and torch.isfinite(out).all()
    left, right = out[..., :4].mean((1, 2, 3, 4)), out[..., -4:].mean((1, 2, 3, 4))
    flipped = left > right
    assert flipped.any() and (~flipped).any()  # some flipped, some not
    # Same generator seed: same augmentation.
    again = VideoTransform(16, train=True, flip=True)(video, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_flip_off_keeps_orientation():
    video = _left_dark_right_bright(32)
    transform = VideoTransform(16, train=True, flip=False, scale=(0.9, 1.0))
    out = transform(video, generator=torch.Generator().manual_seed(1))
    left, right = out[..., :3].mean((1, 2, 3, 4)), out[..., -3:].mean((1, 2, 3, 4))
    assert (left < right).all()  # direction-sensitive classes keep left/right


def test_mirror_classes_pairs_side_words_and_names_the_unmatched():
    classes = [
        "appear",
        "move_left",
        "move_right",
        "Pushing something from left to right",
        "Pushing something from right to left",
        "spin clockwise",
        "spin anticlockwise",
        "turn_left",
    ]
    mirror, unmatched = mirror_classes(classes)
    assert mirror == [0, 2, 1, 4, 3, 6, 5, 7]  # appear is its own mirror; turn_left has none
    assert unmatched == ["turn_left"]
    assert mirror_classes(["cleft lip", "bright"]) == ([0, 1], [])  # whole words only


def test_flip_setting_decides_whether_flips_happen_and_says_why_not():
    """`flip_mirror` (data.flip, data.test_flip): auto stops at a side class with no mirror; true flips anyway."""
    paired, lone = ["appear", "move_left", "move_right"], ["appear", "turn_left"]
    assert flip_mirror(False, paired) == (None, None)
    assert flip_mirror("auto", paired) == ([0, 2, 1], None) == flip_mirror(True, paired)
    assert flip_mirror("auto", lone) == (None, "turn_left")
    assert flip_mirror(True, lone) == ([0, 1], "turn_left")  # turn_left keeps its label


def test_flipped_clip_is_relabelled_as_its_mirror_class():
    video = _left_dark_right_bright(64)
    labels = torch.arange(64) % 3  # 0 = move_left, 1 = move_right, 2 = no_event
    transform = VideoTransform(16, train=True, flip=True, mirror=[1, 0, 2])
    out, new = transform.augment(video, labels, generator=torch.Generator().manual_seed(0))
    flipped = out[..., :4].mean((1, 2, 3, 4)) > out[..., -4:].mean((1, 2, 3, 4))
    assert flipped.any() and (~flipped).any()
    assert torch.equal(new[flipped], torch.tensor([1, 0, 2])[labels[flipped]])
    assert torch.equal(new[~flipped], labels[~flipped])
    with pytest.raises(ValueError, match="augment"):  # a flip without its label would teach the wrong class
        transform(video)
    # no flips: the labels pass through
    kept = VideoTransform(16, train=True, flip=False, mirror=[1, 0, 2]).augment(video, labels)[1]
    assert torch.equal(kept, labels)


def test_contrast_jitter_scales_each_clip_alike_in_every_frame():
    gen = torch.Generator().manual_seed(0)
    base = torch.randint(100, 140, (64, 1, 8, 8, 3), generator=gen, dtype=torch.uint8)  # no gain clips it
    video = base.expand(64, 3, 8, 8, 3).clone()
    video[:, 1:, 2:5, 2:5] += 20  # something appears in frames 1 and 2
    plain = VideoTransform(8, train=True, flip=False, scale=(1.0, 1.0))
    jittered = VideoTransform(8, train=True, flip=False, scale=(1.0, 1.0), jitter=0.4)
    a = plain(video, generator=torch.Generator().manual_seed(3))
    b = jittered(video, generator=torch.Generator().manual_seed(3))
    diff_a, diff_b = a[:, :, 1] - a[:, :, 0], b[:, :, 1] - b[:, :, 0]  # (B, C, S, S): what moved
    ratio = diff_b[..., 3, 3] / diff_a[..., 3, 3]  # per clip and channel
    assert ratio.min() >= 0.6 * 0.8 - 1e-4 and ratio.max() <= 1.4 * 1.2 + 1e-4
    assert ratio.std() > 0.1  # the strength of the change varies from clip to clip
    # one gain per clip and channel: frames 1 -> 2 did not change, and the moved patch scaled alike everywhere
    torch.testing.assert_close(b[:, :, 2], b[:, :, 1])
    torch.testing.assert_close(diff_b[..., 2, 2] / diff_a[..., 2, 2], ratio)
    assert torch.equal(b, jittered(video, generator=torch.Generator().manual_seed(3)))  # seeded: reproducible
    assert torch.equal(VideoTransform(8, jitter=0.4)(video), VideoTransform(8)(video))  # evaluation: never
    with pytest.raises(ConfigError, match="data.jitter"):
        from vidattn.config import Config

        Config.from_dict({"data": {"jitter": 1.0}}).validate()


def test_hue_jitter_turns_colours_and_keeps_brightness_and_grey():
    gen = torch.Generator().manual_seed(0)
    video = torch.randint(90, 160, (32, 4, 8, 8, 3), generator=gen, dtype=torch.uint8)  # nothing gets clipped
    video[:, :, :2] = 120  # a grey band
    plain = VideoTransform(8, train=True, flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0))  # the whole frame
    turned = VideoTransform(8, train=True, flip=False, scale=(1.0, 1.0), ratio=(1.0, 1.0), hue=1.0)
    mean, std = plain.mean, plain.std
    a = plain(video, generator=torch.Generator().manual_seed(3)) * std + mean  # back to [0, 1] RGB
    b = turned(video, generator=torch.Generator().manual_seed(3)) * std + mean
    torch.testing.assert_close(b.mean(1), a.mean(1), atol=1e-5, rtol=0)  # brightness kept, pixel by pixel
    torch.testing.assert_close(b[..., :2, :], a[..., :2, :], atol=1e-5, rtol=0)  # grey stays grey
    colour_a, colour_b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    assert (colour_b - colour_a).abs().mean() > 0.01  # the colours changed
    # one colour map per clip: the same in every frame, so what moves keeps its colour through the clip
    ratio = colour_b.norm(dim=1).mean(dim=(2, 3)) / colour_a.norm(dim=1).mean(dim=(2, 3))  # (B, T) saturation
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), atol=1e-3, rtol=0)
    assert ratio.min() >= 0.5 - 1e-3 and ratio.max() <= 1.5 + 1e-3 and ratio[:, 0].std() > 0.1
    assert torch.equal(VideoTransform(8, hue=1.0)(video), VideoTransform(8)(video))  # evaluation: never
    with pytest.raises(ConfigError, match="data.hue"):
        from vidattn.config import Config

        Config.from_dict({"data": {"hue": 1.5}}).validate()


def test_center_and_three_crop_shapes():
    frames = torch.arange(4 * 10 * 16 * 3, dtype=torch.int32).view(4, 10, 16, 3).to(torch.uint8)
    assert center_crop(frames, 8).shape == (4, 8, 8, 3)
    assert torch.equal(center_crop(frames, 8), frames[:, 1:9, 4:12])
    crops = three_crop(frames, 10)  # wide frames: crops along the width
    assert crops.shape == (3, 4, 10, 10, 3)
    assert torch.equal(crops[0], frames[:, :, :10]) and torch.equal(crops[2], frames[:, :, 6:])
    tall = frames.transpose(1, 2)  # (4, 16, 10, 3): crops along the height
    assert three_crop(tall, 10).shape == (3, 4, 10, 10, 3)
    assert torch.equal(three_crop(tall, 10)[2], tall[:, 6:])


def test_spatial_views_pad_small_frames():
    frames = torch.randint(0, 255, (2, 3, 20, 30, 3), dtype=torch.uint8)  # (V, T, H, W, C) smaller than 32
    rng = np.random.default_rng(0)
    for mode, views in (("center", 2), ("random", 2), ("three", 6)):
        out = spatial_views(frames, 32, mode, rng)
        assert out.shape == (views, 3, 32, 32, 3) and out.dtype == torch.uint8
    out = spatial_views(frames, 32, "center", rng)
    assert torch.equal(out[:, :, :20, :30], frames)  # original at the top-left
    assert torch.equal(out[:, :, 25, :30], frames[:, :, -1])  # padding repeats the edge
    assert torch.equal(out[:, :, :20, 31], frames[:, :, :, -1])
    big = torch.zeros((1, 2, 40, 60, 3), dtype=torch.uint8)
    assert spatial_views(big, 32, "random", rng).shape == (1, 2, 32, 32, 3)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_loader_with_forkserver_workers(dataset_dir):
    """Workers started from a clean process (no inherited decoder threads); the dataset pickles."""
    records, classes = load_annotations(dataset_dir)
    ds = VideoDataset(records, classes, RandomClipSampler(4, stride=2), size=96, crop="center", seed=3)
    ds[0]  # a reader open in the parent must not travel to the workers
    loader = build_loader(ds, batch_size=3, num_workers=2, multiprocessing_context="forkserver")
    batches = list(loader)
    assert sorted(p for b in batches for p in b["path"]) == sorted(
        r.path for r in records if not r.path.endswith("broken.mp4")
    )
    assert [e["path"] for b in batches for e in b["errors"]] == [str(dataset_dir / "b" / "broken.mp4")]
    for batch in batches:
        check_exact(batch)


def test_spatial_views_copy_flag():
    frames = torch.zeros((1, 2, 40, 60, 3), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    copied = spatial_views(frames, 32, "center", rng)
    assert copied.is_contiguous() and copied.untyped_storage().data_ptr() != frames.untyped_storage().data_ptr()
    view = spatial_views(frames, 32, "center", rng, copy=False)  # what VideoDataset uses: batching copies once
    assert view.untyped_storage().data_ptr() == frames.untyped_storage().data_ptr()
    assert torch.equal(view, copied)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("crop", ["center", "random", "three"])
def test_batches_decoded_in_place_equal_the_cropped_full_frames(tmp_path, index_videos, crop):
    """`__getitems__` decodes each clip's crop straight into one batch, which the collate hands on without a
    copy: the same pixels, bit for bit, as cropping full decoded frames; failed samples are still reported."""
    from vidattn.data import collate_videos, make_rng

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(1).bytes(4096))
    paths = [index_videos[n] for n in ("h264.mp4", "mpeg4.avi", "anim.gif", "hevc.mp4")]
    with open_video(paths[0]) as reader:
        short = min(reader.width, reader.height)
    for size in (short, short - 14):  # no resize, and a resize at decode
        records = [VideoRecord(str(p), 0) for p in paths for _ in range(2)] + [VideoRecord(str(broken), 0)]
        ds = VideoDataset(records, ["x"], RandomClipSampler(5, stride=2), size=size, crop=crop, seed=2, cache_size=2)
        for start in range(0, len(records), 3):
            keys = [(1, i) for i in range(start, min(start + 3, len(records)))]
            samples = ds.__getitems__(keys)
            batch = collate_videos(samples)
            good = [s for s in samples if "error" not in s]
            assert [e["path"] for e in batch["errors"]] == [str(broken)] * (len(keys) - len(good))
            if len(good) == len(keys) and crop != "three":  # one batch, decoded in place: no copy
                assert batch["video"].data_ptr() == good[0]["video"].data_ptr()
            for sample, video in zip(good, batch["video"], strict=True):
                rng = make_rng(2, 1, sample["index"])
                with open_video(sample["path"], size=size) as reader:
                    ds.sampler(reader.num_frames, rng)  # the draws the sample made before its crop
                    full = reader.get_frames(sample["frame_indices"].reshape(-1).tolist())
                # The index band is whole in the full frames (a crop can cut it).
                assert [read_index(f) for f in full] == sample["frame_indices"].reshape(-1).tolist()
                full = full.view(len(sample["frame_indices"]), -1, *full.shape[1:])
                assert torch.equal(video, spatial_views(full, size, crop, rng))
                assert torch.equal(ds[(1, sample["index"])]["video"], video)  # one at a time: the same clip


@pytest.mark.timeout(300)
def test_main_process_batches_equal_the_collated_samples(tmp_path, index_videos, backend):
    """Without workers the loader takes each batch from `VideoDataset._collated`, made with no sample dict or torch
    view per clip: the same batches, bit for bit, as `collate_videos` of `__getitems__` (the workers' path), with a
    failed file, clips with repeated frames (a short video padded), clips cropped after decoding (three crops)
    and several clips per sample."""
    from vidattn.data import collate_videos

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(np.random.default_rng(1).bytes(4096))
    paths = [index_videos[n] for n in ("h264.mp4", "mpeg4.avi", "anim.gif", "short.mp4")]
    records = [VideoRecord(str(p), k % 3) for k, p in enumerate(paths * 2)]
    records.insert(5, VideoRecord(str(broken), 1))

    class Counted(VideoDataset):
        calls = 0

        def _collated(self, keys):
            Counted.calls += 1
            return super()._collated(keys)

    samplers = [RandomClipSampler(4, stride=2, short="pad"), UniformClipSampler(3, stride=2, num_clips=2)]
    for crop in ("center", "random", "three"):
        for sampler in samplers:
            ds = Counted(records, CLASSES, sampler, size=48, crop=crop, seed=3, backend=backend, cache_size=2)
            loader = build_loader(ds, batch_size=3, num_workers=0, pin_memory=False)
            before = Counted.calls
            batches = list(loader)
            assert Counted.calls - before == len(batches) == 3
            for keys, batch in zip(loader.batch_sampler, batches, strict=True):
                want = collate_videos(ds.__getitems__(keys))
                assert list(batch) == list(want)
                for name in ("video", "label", "frame_indices", "index"):
                    assert batch[name].dtype == want[name].dtype and torch.equal(batch[name], want[name]), name
                assert batch["path"] == want["path"] and batch["errors"] == want["errors"]
            assert [e["path"] for b in batches for e in b["errors"]] == [str(broken)]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.bfloat16])
def test_batch_buffer_in_the_main_process(dtype):
    """Outside a worker a batch's memory comes from numpy's allocator (where numpy has the dtype), which gives a
    freed batch's pages to the next: a writable, contiguous CPU tensor of the shape, as torch.empty's."""
    from vidattn.data.loader import batch_buffer

    first = batch_buffer((2, 3, 4), dtype)
    assert first.shape == (2, 3, 4) and first.dtype == dtype and first.is_contiguous() and first.device.type == "cpu"
    first.fill_(1)
    assert first.sum().item() == 24


def test_batch_buffer_reuses_a_batch_only_once_nothing_refers_to_it():
    from vidattn.data.loader import batch_buffer

    first = batch_buffer((3, 5, 7), torch.uint8)
    ptr = first.data_ptr()
    view, array = first[1], first.numpy()
    del first
    second = batch_buffer((3, 5, 7), torch.uint8)  # kept: only `first`'s array may come back
    assert second.data_ptr() != ptr  # a view still refers to it
    del view
    third = batch_buffer((3, 5, 7), torch.uint8)
    assert third.data_ptr() != ptr  # and an array over it
    del array
    assert batch_buffer((3, 5, 8), torch.uint8).data_ptr() != ptr  # another shape
    assert batch_buffer((3, 5, 7), torch.uint8).data_ptr() == ptr  # now free
    assert second.data_ptr() != third.data_ptr()
