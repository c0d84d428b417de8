"""Clip samplers: determinism, ranges, short-video policies, TSN centres, uniform spread, whole-video coverage
over many lengths."""

from __future__ import annotations

import numpy as np
import pytest

from vidattn.data import (
    ClipTooShortError,
    CoverageSampler,
    RandomClipSampler,
    SegmentSampler,
    UniformClipSampler,
    create_sampler,
    make_rng,
    sampler_for,
)
from vidattn.errors import VidattnError

SAMPLERS = {
    "segment": lambda short="loop": SegmentSampler(8, random=True, short=short),
    "segment-test": lambda short="loop": SegmentSampler(8, random=False, num_clips=3, short=short),
    "random": lambda short="loop": RandomClipSampler(8, stride=4, short=short),
    "uniform": lambda short="loop": UniformClipSampler(8, stride=2, num_clips=4, short=short),
    "coverage": lambda short="loop": CoverageSampler(8, stride=2, snippet=2),
    "coverage-test": lambda short="loop": CoverageSampler(8, stride=2, random=False, num_clips=3),
}


def flat(clips) -> list[tuple[int, ...]]:
    return [c.frame_indices for c in clips]


@pytest.mark.parametrize("kind", SAMPLERS)
def test_deterministic_given_seed(kind):
    sampler = SAMPLERS[kind]()
    for n in (40, 300):
        a = flat(sampler(n, make_rng(7, 3, 11)))
        b = flat(sampler(n, make_rng(7, 3, 11)))
        assert a == b
    # Different sample / epoch keys give different random draws.
    if kind in ("segment", "random", "coverage"):
        draws = {tuple(flat(sampler(300, make_rng(7, epoch, 11)))) for epoch in range(10)}
        assert len(draws) > 5


def test_dataset_generator_is_make_rngs_stream():
    """`VideoDataset` seeds each sample's generator through `_sample_rng` (numpy's seed hash redone in Python ints):
    the same state and draws as `make_rng` for any keys, wrapped to 32 bits alike, and the same spawned children."""
    from vidattn.data.sampling import _sample_rng

    keys = np.random.default_rng(0).integers(0, 2**40, (200, 3)).tolist()
    keys += [[0, 0, 0], [2**32 - 1, 2**32, 2**32 + 1], [-1, -7, 5], [3, 4]]
    for k in keys:
        a, b = make_rng(*k), _sample_rng(*k)
        assert a.bit_generator.state == b.bit_generator.state, k
        assert a.integers(0, 1000, 8).tolist() == b.integers(0, 1000, 8).tolist()
        assert a.random(3).tolist() == b.random(3).tolist()
    a, b = make_rng(5, 1, 2).spawn(2), _sample_rng(5, 1, 2).spawn(2)
    assert [g.integers(0, 2**62, 4).tolist() for g in a] == [g.integers(0, 2**62, 4).tolist() for g in b]


def test_sample_rng_draws_single_integers_in_python_as_numpy_does():
    """`_sample_rng` draws single int64s over ranges up to 2**32 (a clip's start, a crop's corner) in Python ints:
    numpy's numbers, including the one-value range (no draw) and rejections; anything else asked of it (more values,
    floats, a wider range) goes on from the same state in numpy."""
    from vidattn.data.sampling import _sample_rng

    keys = np.random.default_rng(1).integers(0, 2**40, (150, 3)).tolist() + [[0, 0, 0], [-1, -7, 5], [3, 4]]
    spans = [1, 2, 3, 7, 111, 2**31 + 5, 2**32 - 1, 1000]
    for j, k in enumerate(keys):
        a, b = make_rng(*k), _sample_rng(*k)
        for t in range(j % 6 + 1):
            low = (j + t) % 5 - 2
            high = low + spans[(j + t) % len(spans)]
            assert int(a.integers(low, high)) == b.integers(low, high), (k, low, high)
        assert b._gen is None  # all of those were drawn in Python
        assert a.integers(0, 2**32 + 1) == b.integers(0, 2**32 + 1)  # past 32 bits: numpy's, in the same state
        assert a.bit_generator.state == b.bit_generator.state
        assert a.random(3).tolist() == b.random(3).tolist()
        assert int(a.integers(0, 50)) == int(b.integers(0, 50))


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("num_frames", [1, 5, 29, 30, 31, 64, 1000])
def test_indices_in_range_and_sizes(kind, num_frames):
    sampler = SAMPLERS[kind]()
    clips = sampler(num_frames, make_rng(0, num_frames))
    assert clips
    for k, clip in enumerate(clips):
        assert len(clip.frame_indices) == sampler.frames_per_clip
        assert all(0 <= i < num_frames for i in clip.frame_indices)
        assert clip.clip_index == k and clip.num_clips == len(clips)
        if num_frames >= sampler.span:
            assert list(clip.frame_indices) == sorted(clip.frame_indices)


def test_make_rng_keys():
    assert make_rng(1, 2, 3).integers(1 << 30) == make_rng(1, 2, 3).integers(1 << 30)
    assert make_rng(1, 2, 3).integers(1 << 30) != make_rng(1, 3, 2).integers(1 << 30)
    assert make_rng(-1, 2**40).random() == make_rng(-1, 2**40).random()  # any int keys
    # The stream of the list seeding it always had: a run resumed under a later version draws the same clips.
    for args in [(0,), (1, 2, 3), (-1, 2**40), (7, 0, 123456), (2**32 - 1, -(2**35))]:
        listed = np.random.default_rng([int(a) & 0xFFFFFFFF for a in args])
        assert make_rng(*args).bit_generator.state == listed.bit_generator.state


def test_segment_random_one_frame_per_segment():
    sampler = SegmentSampler(4, random=True)
    for seed in range(50):
        (clip,) = sampler(100, make_rng(seed))
        for s, i in enumerate(clip.frame_indices):
            assert 25 * s <= i < 25 * (s + 1)


def test_segment_centre_is_tsn_test_sampling():
    (clip,) = SegmentSampler(4, random=False)(100)
    assert clip.frame_indices == (12, 37, 62, 87)  # centre of each 25-frame segment
    clips = SegmentSampler(4, random=False, num_clips=2)(100)
    assert [c.frame_indices for c in clips] == [(6, 31, 56, 81), (18, 43, 68, 93)]
    # Deterministic: no randomness involved at test time.
    assert SegmentSampler(4, random=False)(100, make_rng(1)) == SegmentSampler(4, random=False)(100, make_rng(2))


def test_random_clip_is_dense_with_stride_and_covers_all_starts():
    sampler = RandomClipSampler(4, stride=3)
    starts = set()
    for seed in range(400):
        (clip,) = sampler(20, make_rng(seed))
        s = clip.frame_indices[0]
        assert clip.frame_indices == (s, s + 3, s + 6, s + 9)
        starts.add(s)
    assert starts == set(range(20 - 10 + 1))  # every valid start, and only those


def test_uniform_clips_evenly_spread():
    clips = UniformClipSampler(4, stride=2, num_clips=5)(107)
    starts = [c.frame_indices[0] for c in clips]
    assert starts[0] == 0 and clips[-1].frame_indices[-1] == 106  # first at the start, last at the end
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1
    (single,) = UniformClipSampler(4, stride=2, num_clips=1)(107)
    assert single.frame_indices == (50, 52, 54, 56)  # centred


@pytest.mark.parametrize("kind", ["random", "uniform", "segment"])
def test_short_video_policies(kind):
    n = 5
    loop = SAMPLERS[kind]("loop")
    pad = SAMPLERS[kind]("pad")
    skip = SAMPLERS[kind]("skip")
    assert loop.span > n
    looped, padded = flat(loop(n, make_rng(0))), flat(pad(n, make_rng(0)))
    drawn = flat(loop._sample(loop.span, make_rng(0)))  # the clip drawn as if the video were long enough
    assert looped == [tuple(i % n for i in c) for c in drawn]
    assert padded == [tuple(min(i, n - 1) for i in c) for c in drawn]
    with pytest.raises(ClipTooShortError, match="5 frames"):
        skip(n, make_rng(0))


def test_pad_policy_repeats_last_frame_and_loop_wraps():
    (clip,) = RandomClipSampler(6, stride=1, short="pad")(4)
    assert clip.frame_indices == (0, 1, 2, 3, 3, 3)
    (clip,) = RandomClipSampler(6, stride=1, short="loop")(4)
    assert clip.frame_indices == (0, 1, 2, 3, 0, 1)


def test_empty_video_always_raises():
    for kind in SAMPLERS:
        with pytest.raises(ClipTooShortError):
            SAMPLERS[kind]("loop")(0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        RandomClipSampler(0)
    with pytest.raises(ValueError):
        RandomClipSampler(4, stride=0)
    with pytest.raises(ValueError):
        SegmentSampler(0)
    with pytest.raises(ValueError):
        UniformClipSampler(4, num_clips=0)
    with pytest.raises(ValueError, match="short"):
        RandomClipSampler(4, short="wrap")


def test_create_sampler_by_name():
    assert isinstance(create_sampler("segment", num_segments=3), SegmentSampler)
    assert isinstance(create_sampler("random", clip_len=3), RandomClipSampler)
    assert isinstance(create_sampler("uniform", clip_len=3, num_clips=2), UniformClipSampler)
    assert isinstance(create_sampler("auto", clip_len=3), CoverageSampler)
    with pytest.raises(VidattnError, match="unknown sampler"):
        create_sampler("tsn")


# --- whole-video coverage (data.sampler: auto) ----------------------------------------------------
LENGTHS = [1, 2, 5, 7, 8, 15, 16, 17, 24, 33, 48, 97, 160, 192, 500, 768]


@pytest.mark.parametrize("snippet", [1, 2, 4])
@pytest.mark.parametrize("num_frames", LENGTHS)
def test_coverage_training_can_sample_every_frame_in_order(num_frames, snippet):
    sampler = sampler_for("auto", clip_len=16, stride=2, train=True, snippet=snippet)
    seen: set[int] = set()
    draws = 300 + 40 * -(-num_frames * snippet // 16)  # enough for each start in a segment to come up
    for epoch in range(draws):
        (clip,) = sampler(num_frames, make_rng(0, epoch, num_frames))
        idx = clip.frame_indices
        assert len(idx) == 16 and all(0 <= i < num_frames for i in idx)
        assert list(idx) == sorted(idx)  # the order of events is kept: never looped
        seen.update(idx)
    assert seen == set(range(num_frames))  # no part of the video is out of reach


@pytest.mark.parametrize("snippet", [1, 4])
@pytest.mark.parametrize("num_frames", LENGTHS)
def test_coverage_every_clip_spans_the_video(num_frames, snippet):
    """Training clips and test views reach into the first and the last segment of the video, whatever its length."""
    clip_len, stride = 16, 2
    # A video that fits one clip is sampled every `stride` frames; a longer one by segments.
    reach = stride if num_frames <= (clip_len - 1) * stride + 1 else max(1.0, num_frames / (clip_len // snippet))
    for train in (True, False):
        sampler = sampler_for("auto", clip_len=clip_len, stride=stride, train=train, num_clips=3, snippet=snippet)
        clips = sampler(num_frames, make_rng(1, num_frames))
        assert len(clips) == (1 if train else 3)
        for clip in clips:
            assert clip.frame_indices[0] < reach
            assert clip.frame_indices[-1] >= num_frames - reach - 1


@pytest.mark.parametrize("num_frames", [16, 40, 100, 333, 768])
def test_coverage_test_views_together_reach_every_frame(num_frames):
    views = -(-num_frames // 16)
    clips = sampler_for("auto", clip_len=16, train=False, num_clips=views)(num_frames)
    assert {i for c in clips for i in c.frame_indices} == set(range(num_frames))
    assert len({c.frame_indices for c in clips}) == len(clips) or num_frames <= 16


def test_coverage_picks_by_length_against_the_clip():
    sampler = CoverageSampler(8, stride=2, snippet=4, random=False)
    (fits,) = sampler(15)  # the span of 8 frames at stride 2: every second frame, one frame at a time
    assert fits.frame_indices == (0, 2, 4, 6, 8, 10, 12, 14)
    (short,) = sampler(7)  # shorter than the span: the same spacing, the last frame held, never looped
    assert short.frame_indices == (0, 2, 4, 6, 6, 6, 6, 6)
    views = CoverageSampler(8, stride=2, random=False, num_clips=2)(7)  # test views: one per phase
    assert [v.frame_indices for v in views] == [(0, 2, 4, 6, 6, 6, 6, 6), (1, 3, 5, 5, 5, 5, 5, 5)]
    (long,) = sampler(100)  # longer than the span: 2 segments of 50, a 4-frame snippet at each centre
    assert long.frame_indices == (23, 24, 25, 26, 73, 74, 75, 76)


def test_sampler_for_pairs_and_errors():
    assert isinstance(sampler_for("random", clip_len=4, train=True), RandomClipSampler)
    assert isinstance(sampler_for("random", clip_len=4, train=False, num_clips=2), UniformClipSampler)
    assert isinstance(sampler_for("segment", clip_len=4, train=False), SegmentSampler)
    assert sampler_for("auto", clip_len=4, train=True, num_clips=5).num_clips == 1  # one view in training
    with pytest.raises(VidattnError, match="data.sampler"):
        sampler_for("dense", clip_len=4, train=True)
    with pytest.raises(ValueError, match="snippet"):
        CoverageSampler(6, snippet=4)
