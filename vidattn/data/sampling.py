"""Clip samplers: which frame indices of a video make up each clip.

A sampler is called with the number of frames in a video and a random generator, and returns a
list of `ClipInfo` records. Indices are positions in presentation order, ready for
`VideoReader.get_frames`. All randomness comes from the generator, so sampling is deterministic
given a seed (`make_rng(seed, index, epoch)`).

Samplers (after TSN, Wang et al. 2016, and the clip samplers of SlowFast / PyTorchVideo):

- `CoverageSampler` ("auto", the default): the whole video in every clip, whatever its length.
- `SegmentSampler`: TSN segments, one frame per segment (random in training, centre in test).
- `RandomClipSampler`: one dense clip of ``clip_len`` frames every ``stride`` frames at a random start.
- `UniformClipSampler`: ``num_clips`` dense clips spread evenly, for multi-view testing.

A video shorter than a clip is handled by ``short="loop" | "pad" | "skip"``: loop the frames,
repeat the last frame, or raise `ClipTooShortError` so the caller can skip the video.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence

from vidattn.errors import VidattnError

__all__ = [
    "ClipInfo",
    "ClipSampler",
    "ClipTooShortError",
    "CoverageSampler",
    "SegmentSampler",
    "RandomClipSampler",
    "UniformClipSampler",
    "make_rng",
    "create_sampler",
    "sampler_for",
]

SHORT_POLICIES = ("loop", "pad", "skip")


class ClipTooShortError(VidattnError):
    """The video has fewer frames than one clip needs and the policy is "skip"."""


@dataclass(frozen=True)
class ClipInfo:
    """One clip: its frame indices and where it sits among the clips drawn from the video."""

    frame_indices: tuple[int, ...]
    clip_index: int = 0
    num_clips: int = 1


def make_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator seeded by `seed` and any number of integer keys (sample index, epoch, rank)."""
    # As a uint32 array, not a list: the same entropy (each key is one 32-bit word either way), so the same
    # stream, without numpy coercing every int of the list on its own (a fifth of the call; one call per sample).
    return np.random.default_rng(np.array([int(seed) & 0xFFFFFFFF, *(int(k) & 0xFFFFFFFF for k in keys)], np.uint32))


# SeedSequence's constants (numpy/random/bit_generator.pyx): its hash of the entropy into a pool of 4 words,
# and of the pool into the words a bit generator is seeded with.
_M32 = 0xFFFFFFFF
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715


def _pcg64_seed(entropy: list[int]) -> list[int]:
    """``SeedSequence(entropy).generate_state(4, np.uint64)`` (PCG64's seed) for up to 4 uint32 words, in Python
    ints: the same words, bit for bit."""
    h = _INIT_A
    pool = []
    for i in range(4):
        v = (entropy[i] if i < len(entropy) else 0) ^ h
        h = (h * _MULT_A) & _M32
        v = (v * h) & _M32
        pool.append(v ^ (v >> 16))
    for src in range(4):
        for dst in range(4):
            if src != dst:
                v = pool[src] ^ h
                h = (h * _MULT_A) & _M32
                v = (v * h) & _M32
                r = (_MIX_L * pool[dst] - _MIX_R * (v ^ (v >> 16))) & _M32
                pool[dst] = r ^ (r >> 16)
    h = _INIT_B
    words = []
    for i in range(8):
        v = pool[i % 4] ^ h
        h = (h * _MULT_B) & _M32
        v = (v * h) & _M32
        words.append(v ^ (v >> 16))
    return [words[2 * k] | (words[2 * k + 1] << 32) for k in range(4)]


class _SeedWords(ISpawnableSeedSequence):
    """A seed sequence whose PCG64 seed is already computed (`_pcg64_seed`); anything else asked of it comes from
    ``SeedSequence(entropy)``, as `make_rng`'s generator would give it."""

    def __init__(self, entropy: list[int]) -> None:
        self.entropy = entropy

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> np.ndarray:
        if n_words == 4 and np.dtype(dtype) == np.uint64 and len(self.entropy) <= 4:
            return np.array(_pcg64_seed(self.entropy), dtype=np.uint64)
        return np.random.SeedSequence(np.array(self.entropy, np.uint32)).generate_state(n_words, dtype)

    def spawn(self, n_children: int) -> list[np.random.SeedSequence]:
        return np.random.SeedSequence(np.array(self.entropy, np.uint32)).spawn(n_children)


def _sample_rng(seed: int, *keys: int) -> _SampleRng:
    """`make_rng(seed, *keys)`'s stream (the same draws, bit for bit) for less, for `VideoDataset`'s one generator
    per sample: a `_SampleRng` (each Generator method, its `generator` a real one). numpy's seeding (a SeedSequence
    object, its hash under an errstate context) and draw were the dearest part of a sample's Python right after a
    decode, where every cold library call is slow."""
    return _SampleRng([int(seed) & _M32, *(int(k) & _M32 for k in keys)])


_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645  # PCG64's 128-bit LCG multiplier (numpy/random/src/pcg64)
_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1


class _SampleRng:
    """`_sample_rng`'s generator, drawn in Python ints while it is asked only for single int64s from a range of up to
    2**32 (``integers(low, high)``: `RandomClipSampler`'s start, a random crop's corner): numpy's PCG64 and its bounded
    draw (Lemire's method on the 32-bit halves PCG64 buffers), the same numbers bit for bit. Anything else is asked
    of `generator`, a numpy Generator in the same state, which then draws everything. The sampler's draw after each
    320x240 clip's decode cost ~140 us through numpy (seeding 96, the draw 44; cold library calls).
    """

    __slots__ = ("_entropy", "_gen", "_has32", "_inc", "_state", "_u32")

    def __init__(self, entropy: list[int]) -> None:
        self._entropy = entropy
        self._gen: np.random.Generator | None = None
        words = _pcg64_seed(entropy)
        # pcg64_set_seed: state from 0, one step, + the seed's first 128 bits, one step; the increment from the rest.
        inc = (((words[2] << 64) | words[3]) << 1 | 1) & _M128
        self._inc = inc
        self._state = ((inc + ((words[0] << 64) | words[1])) * _PCG_MULT + inc) & _M128
        self._has32, self._u32 = 0, 0

    def _next32(self) -> int:
        if self._has32:
            self._has32 = 0
            return self._u32
        state = self._state = (self._state * _PCG_MULT + self._inc) & _M128
        x, rot = ((state >> 64) ^ state) & _M64, state >> 122  # XSL-RR output
        out = ((x >> rot) | (x << (64 - rot))) & _M64
        self._has32, self._u32 = 1, out >> 32
        return out & _M32

    def integers(self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64, endpoint: bool = False):
        if self._gen is None and size is None and dtype is np.int64 and not endpoint and type(low) is type(high) is int:
            span = high - 1 - low  # numpy's `rng`: the largest offset drawn
            if 0 <= span < _M32:
                if not span:
                    return low
                excl = span + 1
                m = self._next32() * excl
                if m & _M32 < excl:
                    threshold = (_M32 - span) % excl
                    while m & _M32 < threshold:
                        m = self._next32() * excl
                return low + (m >> 32)
        return self.generator().integers(low, high, size, dtype, endpoint)

    def generator(self) -> np.random.Generator:
        """The numpy Generator in this one's state (made once; every draw goes to it from then on)."""
        if self._gen is None:
            gen = np.random.Generator(np.random.PCG64(_SeedWords(self._entropy)))
            gen.bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": self._state, "inc": self._inc},
                "has_uint32": self._has32,
                "uinteger": self._u32,
            }
            self._gen = gen
        return self._gen

    def __getattr__(self, name: str) -> Any:
        return getattr(self.generator(), name)


class ClipSampler(ABC):
    """Maps a video length to clips. Subclasses implement `_sample` for videos long enough."""

    def __init__(self, *, short: str = "loop") -> None:
        if short not in SHORT_POLICIES:
            raise ValueError(f"short must be one of {SHORT_POLICIES}, got {short!r}")
        self.short = short

    @property
    @abstractmethod
    def span(self) -> int:
        """Frames one clip covers (first to last index + 1) when the video is long enough."""

    @property
    @abstractmethod
    def frames_per_clip(self) -> int:
        """Number of indices in each clip."""

    def __call__(self, num_frames: int, rng: np.random.Generator | None = None) -> list[ClipInfo]:
        if num_frames <= 0:
            raise ClipTooShortError(f"video has no frames (num_frames={num_frames})")
        rng = rng if rng is not None else np.random.default_rng(0)
        if num_frames < self.span and self.needs_full_span():
            if self.short == "skip":
                raise ClipTooShortError(f"video has {num_frames} frames, a clip needs {self.span}")
            return [self._fit_short(c, num_frames) for c in self._sample(self.span, rng)]
        return self._sample(num_frames, rng)

    def needs_full_span(self) -> bool:
        return True

    def _fit_short(self, clip: ClipInfo, num_frames: int) -> ClipInfo:
        """Map a clip drawn for `span` frames onto a shorter video by looping or padding."""
        if self.short == "loop":
            idx = tuple(i % num_frames for i in clip.frame_indices)
        else:  # pad with the last frame
            idx = tuple(min(i, num_frames - 1) for i in clip.frame_indices)
        return ClipInfo(idx, clip.clip_index, clip.num_clips)

    @abstractmethod
    def _sample(self, num_frames: int, rng: np.random.Generator) -> list[ClipInfo]: ...


class SegmentSampler(ClipSampler):
    """TSN: split the video into `num_segments` equal segments and take one frame from each.

    Args:
        num_segments: frames per clip.
        random: pick a random frame per segment (training) or the centre frame (test).
        num_clips: test-time views; clip k shifts the centre by k / num_clips of a segment.
    """

    def __init__(self, num_segments: int, *, random: bool = True, num_clips: int = 1, short: str = "loop") -> None:
        super().__init__(short=short)
        if num_segments < 1 or num_clips < 1:
            raise ValueError("num_segments and num_clips must be >= 1")
        self.num_segments, self.random, self.num_clips = num_segments, random, num_clips

    @property
    def span(self) -> int:
        return self.num_segments

    @property
    def frames_per_clip(self) -> int:
        return self.num_segments

    def _sample(self, num_frames: int, rng: np.random.Generator) -> list[ClipInfo]:
        edges = np.linspace(0, num_frames, self.num_segments + 1)
        seg_len = edges[1] - edges[0]
        clips = []
        n_clips = 1 if self.random else self.num_clips
        for k in range(n_clips):
            if self.random:
                pos = edges[:-1] + rng.random(self.num_segments) * seg_len
            else:
                pos = edges[:-1] + seg_len * (k + 0.5) / n_clips
            idx = np.clip(np.floor(pos).astype(int), 0, num_frames - 1)
            clips.append(ClipInfo(tuple(int(i) for i in idx), k, n_clips))
        return clips


class _StridedClip:
    """`span` and `frames_per_clip` of a sampler whose clips are `clip_len` frames `stride` apart."""

    clip_len: int
    stride: int

    @property
    def span(self) -> int:
        return (self.clip_len - 1) * self.stride + 1

    @property
    def frames_per_clip(self) -> int:
        return self.clip_len


class RandomClipSampler(_StridedClip, ClipSampler):
    """One dense clip of `clip_len` frames taken every `stride` frames, at a uniformly random start."""

    def __init__(self, clip_len: int, stride: int = 1, *, short: str = "loop") -> None:
        super().__init__(short=short)
        if clip_len < 1 or stride < 1:
            raise ValueError("clip_len and stride must be >= 1")
        self.clip_len, self.stride = clip_len, stride

    def _sample(self, num_frames: int, rng: np.random.Generator) -> list[ClipInfo]:
        start = int(rng.integers(0, num_frames - self.span + 1))
        return [ClipInfo(tuple(range(start, start + self.span, self.stride)))]


class UniformClipSampler(RandomClipSampler):
    """`num_clips` dense clips with evenly spaced starts covering the video (multi-view testing)."""

    def __init__(self, clip_len: int, stride: int = 1, num_clips: int = 1, *, short: str = "loop") -> None:
        super().__init__(clip_len, stride, short=short)
        if num_clips < 1:
            raise ValueError("num_clips must be >= 1")
        self.num_clips = num_clips

    def _sample(self, num_frames: int, rng: np.random.Generator) -> list[ClipInfo]:
        room = num_frames - self.span
        if self.num_clips == 1:
            starts = [room // 2]
        else:
            starts = [int(round(room * k / (self.num_clips - 1))) for k in range(self.num_clips)]
        return [ClipInfo(tuple(range(s, s + self.span, self.stride)), k, self.num_clips) for k, s in enumerate(starts)]


class CoverageSampler(_StridedClip, ClipSampler):
    """Whole-video coverage: every clip spans the entire video, so no clip misses the moment that decides the class.

    The choice depends on the video's length ``T`` against the clip's span ``(clip_len - 1) * stride + 1``:

    - ``T <= span`` (the video fits one clip): every `stride`-th frame of the whole video, from a phase in
      ``[0, stride)`` (random in training; 0, then spread over the test views at test), and the last of them held until
      the clip has `clip_len` frames. The spacing is the same in every video whatever its length, so a
      motion looks the same in a short video as in a long one (stretching a short video to fill the clip
      would make the same event 3x slower in a video a third as long, and the model would have to learn
      every speed), and the order of events is kept (nothing loops).
    - ``T > span``: TSN segments. The video is cut into ``clip_len // snippet`` equal segments and each
      gives `snippet` consecutive frames: at a random place in training, the centre at test.

    Test views (``num_clips > 1``, ``random=False``) shift every pick by ``k / num_clips`` of the spacing
    (of a segment for long videos), so together they cover the video evenly.

    Args:
        clip_len: frames per clip.
        stride: the largest spacing at which a video still counts as fitting one clip.
        snippet: consecutive frames per segment for long videos (must divide `clip_len`); more than 1 keeps
            short-range motion visible when the segments are far apart.
        random: random position per segment (training) or the centre (test).
        num_clips: test-time views.
    """

    def __init__(
        self, clip_len: int, stride: int = 1, *, snippet: int = 1, random: bool = True, num_clips: int = 1
    ) -> None:
        super().__init__(short="pad")
        if clip_len < 1 or stride < 1 or num_clips < 1 or snippet < 1:
            raise ValueError("clip_len, stride, snippet and num_clips must be >= 1")
        if clip_len % snippet:
            raise ValueError(f"snippet ({snippet}) must divide clip_len ({clip_len})")
        self.clip_len, self.stride, self.snippet, self.random, self.num_clips = (
            clip_len,
            stride,
            snippet,
            random,
            num_clips,
        )

    def needs_full_span(self) -> bool:
        return False  # a short video is read at the same spacing with its last frame held, never looped

    def _sample(self, num_frames: int, rng: np.random.Generator) -> list[ClipInfo]:
        if num_frames <= self.span:
            return self._strided(num_frames, rng)
        snippet = self.snippet
        segments = self.clip_len // snippet
        seg_len = num_frames / segments
        # A snippet may start anywhere from its segment's start to `snippet` frames before the next one's
        # (the +1: the whole last frame of the segment can end a snippet).
        room = max(seg_len - snippet, 0.0) + (1.0 if snippet > 1 else 0.0)
        n_clips = 1 if self.random else self.num_clips
        clips = []
        for k in range(n_clips):
            offset = rng.random(segments) if self.random else np.full(segments, (k + 0.5) / n_clips)
            starts = np.floor(np.arange(segments) * seg_len + offset * room).astype(int) if snippet > 1 else None
            if starts is None:
                idx = np.floor((np.arange(segments) + offset) * seg_len).astype(int)
            else:
                idx = (starts[:, None] + np.arange(snippet)[None, :]).reshape(-1)
            idx = np.clip(idx, 0, num_frames - 1)
            clips.append(ClipInfo(tuple(int(i) for i in idx), k, n_clips))
        return clips

    def _strided(self, num_frames: int, rng: np.random.Generator) -> list[ClipInfo]:
        """A video that fits one clip: every `stride`-th frame from a phase, the last one held to `clip_len`."""
        stride = min(self.stride, num_frames)
        n_clips = 1 if self.random else self.num_clips
        clips = []
        for k in range(n_clips):
            phase = int(rng.integers(0, stride)) if self.random else k * stride // n_clips
            idx = np.arange(phase, num_frames, stride)[: self.clip_len]
            idx = np.concatenate([idx, np.full(self.clip_len - len(idx), idx[-1])])
            clips.append(ClipInfo(tuple(int(i) for i in idx), k, n_clips))
        return clips


def create_sampler(kind: str, **kwargs: object) -> ClipSampler:
    """Build a sampler by name: "auto" (coverage), "segment", "random" or "uniform"."""
    table = {
        "auto": CoverageSampler,
        "segment": SegmentSampler,
        "random": RandomClipSampler,
        "uniform": UniformClipSampler,
    }
    if kind not in table:
        raise VidattnError(f"unknown sampler {kind!r}; choose one of {sorted(table)}")
    return table[kind](**kwargs)  # type: ignore[arg-type]


#: The `data.sampler` values of a config, each naming a pair of training and test samplers.
SAMPLER_KINDS = ("auto", "segment", "random")


def sampler_for(
    kind: str,
    *,
    clip_len: int,
    stride: int = 1,
    train: bool,
    num_clips: int = 1,
    snippet: int = 1,
    short: str = "loop",
) -> ClipSampler:
    """The training or test sampler for a config's ``data.sampler``.

    - ``"auto"``: `CoverageSampler` (whole video; random per segment in training, centred test views);
    - ``"segment"``: TSN `SegmentSampler`, one frame per segment;
    - ``"random"``: one dense `RandomClipSampler` clip in training, `num_clips` `UniformClipSampler` views at test.

    Args:
        kind: one of `SAMPLER_KINDS`.
        clip_len: frames per clip.
        stride: frame spacing of a dense clip.
        train: the training sampler (random) or the test one (deterministic views).
        num_clips: test views per video.
        snippet: consecutive frames per segment for "auto".
        short: videos shorter than a clip for "segment" / "random" (loop | pad | skip).

    Raises:
        VidattnError: unknown kind.
    """
    views = 1 if train else num_clips
    if kind == "auto":
        return CoverageSampler(clip_len, stride, snippet=snippet, random=train, num_clips=views)
    if kind == "segment":
        return SegmentSampler(clip_len, random=train, num_clips=views, short=short)
    if kind == "random":
        if train:
            return RandomClipSampler(clip_len, stride, short=short)
        return UniformClipSampler(clip_len, stride, views, short=short)
    raise VidattnError(f"data.sampler must be one of {', '.join(SAMPLER_KINDS)}; got {kind!r}")
