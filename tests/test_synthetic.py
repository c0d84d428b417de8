"""The synthetic long-video generator and the settings derived from a dataset's videos."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from vidattn.config import DataConfig
from vidattn.data import probe, scan_videos
from vidattn.data.profile import DataProfile, derive_data_settings, profile_videos
from vidattn.data.synthetic import EVENT_CLASSES, NO_EVENT, PRESETS, SynthSpec, generate_dataset, render_video


@pytest.mark.parametrize("label", EVENT_CLASSES)
def test_lengths_and_event_vary_and_stay_inside_the_video(label):
    spec = SynthSpec(min_frames=30, max_frames=90, min_event=4, max_event=9, num_distractors=1, num_decoys=1)
    lengths, events = set(), set()
    for seed in range(6):
        frames, start, end = render_video(label, np.random.default_rng([seed, 1]), spec)
        assert 30 <= len(frames) <= 90 and 1 <= start <= end < len(frames) - 1
        assert 4 <= end - start + 1 <= 9
        lengths.add(len(frames))
        events.add((start, end - start))
    assert len(lengths) > 3 and len(events) > 3  # a random moment and duration, not one fixed clip


def test_no_event_videos_have_the_clutter_but_no_target(tmp_path):
    spec = SynthSpec(min_frames=30, max_frames=40)
    for seed in range(3):
        frames, start, end = render_video(NO_EVENT, np.random.default_rng([seed, 1]), spec)
        with_event, s, e = render_video("appear", np.random.default_rng([seed, 1]), spec)
        assert start is None and end is None and frames.shape == with_event.shape  # same draws, same length
        outside = np.ones(len(frames), dtype=bool)
        outside[s : e + 1] = False
        assert np.array_equal(frames[outside], with_event[outside])  # the clutter is the same frame for frame
        assert not np.array_equal(frames[s : e + 1], with_event[s : e + 1])  # only the target is missing
    root = generate_dataset(tmp_path / "d", per_class=1, val_per_class=1, spec=spec, classes=("move_up", NO_EVENT))
    rows = {r["label"]: r for r in csv.DictReader((root / "train" / "events.csv").open())}
    assert rows[NO_EVENT]["event_start"] == rows[NO_EVENT]["event_end"] == ""  # no window to find
    assert int(rows["move_up"]["event_start"]) >= 1


def test_default_is_longer_than_a_clip_and_hard_preset_is_harder():
    default, hard = PRESETS["default"], PRESETS["hard"]
    assert default == SynthSpec() and default.max_frames > 4 * 16  # must search: far longer than a 16-frame clip
    assert hard.max_frames > default.max_frames and hard.num_decoys > default.num_decoys
    with pytest.raises(ValueError):
        SynthSpec(min_frames=10, max_frames=9)


def test_events_csv_is_the_ground_truth_and_a_new_spec_regenerates(tmp_path):
    spec = SynthSpec(min_frames=20, max_frames=40, min_event=6, max_event=6)
    root = generate_dataset(tmp_path / "d", per_class=1, val_per_class=1, seed=3, spec=spec, classes=("move_left",))
    (row,) = list(csv.DictReader((root / "train" / "events.csv").open()))
    info = probe(root / "train" / row["path"])
    start, end = int(row["event_start"]), int(row["event_end"])
    assert 20 <= info.num_frames <= 40 and end - start == 5 and end < info.num_frames
    longer = dataclasses.replace(spec, min_frames=50, max_frames=60)
    generate_dataset(tmp_path / "d", per_class=1, val_per_class=1, seed=3, spec=longer, classes=("move_left",))
    assert probe(root / "train" / row["path"]).num_frames >= 50  # not kept from the earlier spec


def test_synth_classes_option_writes_only_those_and_a_new_choice_regenerates(tmp_path):
    from click.testing import CliRunner

    from vidattn.cli import cli

    out = tmp_path / "dirs"
    args = ["synth", str(out), "--per-class", "1", "--val-per-class", "1", "--frames", "20-30"]
    result = CliRunner().invoke(cli, [*args, "--classes", "move_left,move_right"])
    assert result.exit_code == 0, result.output
    labels = {r["label"] for r in csv.DictReader((out / "train" / "events.csv").open())}
    assert labels == {"move_left", "move_right"}
    result = CliRunner().invoke(cli, [*args, "--classes", "move_up,move_down"])  # same count, other classes
    assert result.exit_code == 0, result.output
    labels = {r["label"] for r in csv.DictReader((out / "train" / "events.csv").open())}
    assert labels == {"move_up", "move_down"}  # not kept from the earlier choice
    for bad in ("move_left,jump", "move_left", "move_left,move_left"):
        result = CliRunner().invoke(cli, [*args, "--classes", bad])
        assert result.exit_code == 2 and "--classes" in result.output and "Traceback" not in result.output


def test_profile_derives_only_what_is_unset(tmp_path):
    spec = SynthSpec(min_frames=20, max_frames=60)
    root = generate_dataset(tmp_path / "d", per_class=2, val_per_class=1, seed=0, spec=spec, classes=("appear",))
    profile = profile_videos([str(p) for p in scan_videos(root / "train")])
    assert profile is not None and profile.probed == 2 and profile.fps == pytest.approx(12)
    assert profile.short_side == 32 and all(20 <= f <= 60 for f in profile.frames)
    derived = derive_data_settings(DataConfig(), profile)
    # Videos of at most 60 frames fit a 64-frame clip: every frame is seen.
    assert derived["stride"] == 1 and derived["size"] == derived["crop_size"] == 32
    assert derived["clip_len"] % 8 == 0 and derived["clip_len"] >= max(profile.frames)  # covers the longest
    assert derive_data_settings(DataConfig(clip_len=8, stride=1, size=48, crop_size=40), profile) == {}
    # Real-footage-like metadata: 25 fps, 240 px, up to 300 frames: every 5th frame, 60 of them (64 with rounding).
    real = DataProfile(4, 4, (250, 240, 180, 300), 25.0, 240)
    assert derive_data_settings(DataConfig(), real) == {"stride": 5, "clip_len": 64, "size": 112, "crop_size": 112}
    # The spacing follows the length, not the frame rate: the same videos at 60 fps are sampled the same way.
    assert derive_data_settings(DataConfig(), dataclasses.replace(real, fps=60.0))["stride"] == 5
    assert derive_data_settings(DataConfig(), None)["clip_len"] == 16  # nothing probed: the classic clip
