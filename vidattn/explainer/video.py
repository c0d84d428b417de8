"""`vidattn explain` on one video: the prediction, and where and when the model looks, at true frame indices.

Two passes over the model, both bounded in memory whatever the video's length:

1. **Prediction**, exactly as `vidattn score` makes it (`vidattn.scoring.pipeline.model_input`: ``clips``
   test views at the model's clip length, stride and size; `vidattn.scoring.model.Classifier` averages their
   class probabilities and keeps the top-k).
2. **Attention**, through the key frames' `vidattn.keyframes.model.WindowScorer` (the per-frame weights are the
   model's ``frame_weights``, not the key frames' evidence): the samples every ``stride`` frames, at the model's
   size, go through the model in the views it was evaluated with (whole-video views for coverage-trained models,
   sliding windows otherwise, and sliding windows past ``WindowScorer.max_samples``); `ExplainScorer` also
   collects, inside `collect_attention`, each chosen layer's map per sample (`vidattn.explainer.maps`), averaged
   over the views covering it, at the map's resolution (at most ``MAX_MAP_SIDE`` a side), and the frames a hard
   attention picked.

Every sample keeps its true frame index and presentation time; frames between samples take the nearest
sample's map (`VideoExplanation.sample_of`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vidattn.errors import VidattnError, VideoDecodeError
from vidattn.explainer.maps import MapLayer, batch_maps, batch_picks, glimpse_frames, select_layers
from vidattn.keyframes.model import KeyframeModel, WindowScorer
from vidattn.layers import collect_attention
from vidattn.models.glimpse import GlimpseNet

__all__ = [
    "MAX_MAP_SIDE",
    "ExplainModel",
    "ExplainOptions",
    "ExplainScorer",
    "VideoExplanation",
    "explain_video",
    "seen_box",
]

#: Maps are kept at most this many cells a side per sample (a long video at stride 1 stays a few MB per layer).
MAX_MAP_SIDE = 32


@dataclass
class ExplainOptions:
    """Settings of one `vidattn explain` run (defaults are the CLI's)."""

    layers: tuple[str, ...] = ()  # map layers (names or prefixes); empty = every layer with a spatial map
    clips: int = 3  # test views of the prediction, as `vidattn score --clips`
    topk: int = 5  # labels in the prediction
    top_frames: int = 6  # most attended frames on the contact sheet
    batch_size: int = 8  # windows / views per model call
    device: str = "auto"
    backend: str = "auto"
    timeout_s: float | None = 60.0
    max_side: int = 480  # overlay frames: long side at most this (small videos are enlarged to min_side)
    min_side: int = 256


@dataclass
class ExplainModel:
    """A checkpoint's model, ready for both passes (`load`)."""

    windows: KeyframeModel  # the attention pass (weights per sample)
    classifier: Any  # vidattn.scoring.model.Classifier: the prediction pass
    layers: list[MapLayer]

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, options: ExplainOptions) -> ExplainModel:
        """Rebuild a `vidattn train` checkpoint once for both passes; check the layers asked for."""
        from vidattn.engine.checkpoint import load_model
        from vidattn.engine.distributed import resolve_device
        from vidattn.scoring.model import Classifier

        device = resolve_device(options.device)
        model, classes, cfg = load_model(checkpoint, device)
        if not hasattr(model, "frame_weights"):
            raise VidattnError(f"{checkpoint}: {type(model).__name__} has no frame_weights(); nothing to explain")
        layers = select_layers(model, options.layers, where=os.fspath(checkpoint))
        classifier = Classifier.from_loaded(model, classes, cfg, checkpoint, device, options.topk)
        return cls(KeyframeModel.from_loaded(model, classes, cfg, checkpoint, device), classifier, layers)


class ExplainScorer(WindowScorer):
    """A `WindowScorer` that also keeps, per sample, each chosen layer's map, the picks and the class probs.

    Args:
        km: the model.
        layers: the map layers to keep.
        batch_size: windows per model call.
    """

    def __init__(self, km: KeyframeModel, layers: list[MapLayer], batch_size: int) -> None:
        super().__init__(km, batch_size)
        self.layers = layers
        self.map_sum: dict[str, list[np.ndarray]] = {layer.name: [] for layer in layers}
        self.map_n: dict[str, list[int]] = {layer.name: [] for layer in layers}
        self.picked: list[bool] | None = None
        self.window_probs: list[np.ndarray] = []  # (K,) per window, in `windows` order

    def flush(self) -> None:
        if not self.pending:
            return
        positions = [p for p, _ in self.pending]
        t = self.pending[0][1].shape[0]  # frames per clip (a window of a short video has fewer positions)
        with collect_attention(self.km.model) as recorded:
            super().flush()
        maps = batch_maps(recorded, self.layers, t, glimpses=glimpse_frames(self.km.model, recorded, t))
        for name, m in maps.items():
            if max(m.shape[-2:]) > MAX_MAP_SIDE:
                side = (min(m.shape[-2], MAX_MAP_SIDE), min(m.shape[-1], MAX_MAP_SIDE))
                m = F.adaptive_avg_pool2d(m.flatten(0, 1), side).reshape(*m.shape[:2], *side)
            self._add_maps(name, positions, m.cpu().numpy())
        picks = batch_picks(recorded, t)
        if picks is not None:
            self._add_picks(positions, picks.cpu().numpy())

    def score(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's temporal attention weights (not the key frames' evidence): where and when it looks."""
        return self.km.attention_windows(clips)

    def add_window(self, positions: list[int], weights: torch.Tensor, probs: torch.Tensor) -> None:
        super().add_window(positions, weights, probs)
        self.window_probs.append(probs.numpy())

    def _add_maps(self, name: str, positions: list[list[int]], maps: np.ndarray) -> None:
        store, count = self.map_sum[name], self.map_n[name]
        for view, clip_maps in zip(positions, maps, strict=True):
            while len(store) <= max(view):
                store.append(np.zeros(clip_maps.shape[1:], np.float32))
                count.append(0)
            seen = set()
            for j, pos in enumerate(view):
                # A short video looped or padded into a clip: each sample once per view. NaN: no glimpse there.
                if pos in seen or np.isnan(clip_maps[j]).any():
                    continue
                seen.add(pos)
                store[pos] += clip_maps[j]
                count[pos] += 1

    def _add_picks(self, positions: list[list[int]], picks: np.ndarray) -> None:
        if self.picked is None:
            self.picked = []
        for view, clip_picks in zip(positions, picks, strict=True):
            while len(self.picked) < max(view) + 1:
                self.picked.append(False)
            for pos, p in zip(view, clip_picks[: len(view)], strict=True):
                self.picked[pos] = self.picked[pos] or bool(p)

    def sample_maps(self, count: int) -> dict[str, np.ndarray]:
        """Per layer ``(count, h, w)``: each sample's map averaged over the views covering it.

        A sample no view reached takes its nearest covered neighbour's map; a glimpse model's backbone
        layers leave the samples outside every glimpse NaN (nothing looked at them).
        """
        out = {}
        glimpse = isinstance(self.km.model, GlimpseNet)
        for layer in self.layers:
            store, n = self.map_sum[layer.name], np.zeros(count, np.int64)
            n[: len(self.map_n[layer.name])] = self.map_n[layer.name][:count]
            seen = np.flatnonzero(n)
            if not len(seen):
                continue
            arr = np.full((count, *store[seen[0]].shape), np.nan, np.float32)
            arr[seen] = np.stack([store[p] for p in seen]) / n[seen, None, None]
            if len(seen) < count and not (glimpse and layer.name.startswith("backbone.")):
                arr = arr[seen[np.abs(np.arange(count)[:, None] - seen[None]).argmin(1)]]
            out[layer.name] = arr
        return out


def seen_box(width: int, height: int) -> tuple[int, int, int]:
    """``(x, y, side)``: the centre square of a ``width x height`` frame, the part the model's input is made of
    (`vidattn.data.transforms.spatial_views` with ``"center"``, then a resize)."""
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


@dataclass
class VideoExplanation:
    """Everything `explain_video` found in one video (numpy arrays over the ``N`` samples).

    Attributes:
        video: the path.
        info: the reader's `VideoInfo` (final frame count).
        indices: ``(N,)`` true frame index of each sample.
        times: ``(N,)`` presentation time in seconds of each sample.
        weights: ``(N,)`` temporal attention weight (uniform = 1), averaged over the views covering each sample.
        maps: per map layer ``(N, h, w)`` at the map's resolution.
        picked: ``(N,)`` bool, the samples a hard attention picked; None for a soft-attention model.
        topk: ``[(label, probability), ...]``: the prediction, as `vidattn score` makes it.
        windows: ``(first sample, last sample, class index, probability)`` per view or window.
        window_probs: ``(W, K)`` class probabilities of each view or window.
        layers: the `MapLayer` of each entry of `maps`.
        classes, checkpoint, model_name, clip_len, stride: the model's.
    """

    video: str
    info: Any
    indices: np.ndarray
    times: np.ndarray
    weights: np.ndarray
    maps: dict[str, np.ndarray]
    picked: np.ndarray | None
    topk: list[tuple[str, float]]
    windows: list[tuple[int, int, int, float]]
    window_probs: np.ndarray
    layers: list[MapLayer] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    checkpoint: str = ""
    model_name: str = ""
    clip_len: int = 0
    stride: int = 1

    @property
    def fps(self) -> float:
        return float(self.info.fps) if self.info.fps > 0 else 25.0

    @property
    def seen_box(self) -> tuple[int, int, int]:
        """``(x, y, side)`` in frame pixels of the centre square the model sees (the maps cover only it)."""
        return seen_box(int(self.info.width), int(self.info.height))

    def sample_of(self, frame_indices: np.ndarray) -> np.ndarray:
        """The nearest sample (position in `indices`) of each true frame index."""
        frames = np.asarray(frame_indices, dtype=np.int64)
        right = np.clip(np.searchsorted(self.indices, frames), 0, len(self.indices) - 1)
        left = np.clip(right - 1, 0, len(self.indices) - 1)
        take_left = np.abs(frames - self.indices[left]) <= np.abs(self.indices[right] - frames)
        return np.where(take_left, left, right)

    def top_samples(self, count: int) -> list[int]:
        """Positions of the `count` most attended samples, best first.

        Neighbours of a chosen sample (closer than an eighth of the video over `count`) are passed over while
        others remain, so the contact sheet shows several moments rather than one moment several times.
        """
        gap = max(1, len(self.weights) // max(1, 8 * count))
        chosen: list[int] = []
        rest: list[int] = []
        for p in np.argsort(-self.weights, kind="stable").tolist():
            (rest if any(abs(p - c) < gap for c in chosen) else chosen).append(p)
        return (chosen + rest)[:count]


def _predict(path: str, model: ExplainModel, options: ExplainOptions) -> tuple[list[tuple[str, float]], Any]:
    """Top-k over the whole video exactly as `vidattn score` computes it (its views, its classifier), and the
    native-size reader's `VideoInfo`."""
    from vidattn.data.decode import open_video
    from vidattn.scoring.pipeline import DecodeSpec, model_input

    spec = DecodeSpec(backend=options.backend, timeout_s=options.timeout_s).for_model(
        model.classifier.data, options.clips
    )
    with open_video(path, backend=options.backend, timeout_s=options.timeout_s) as reader:
        video = model_input(path, reader, spec)
        native = reader.info()
    return model.classifier([video])[0], native


def _times(path: str, indices: np.ndarray, fps: float, timeout_s: float | None) -> np.ndarray:
    """Presentation times of the samples (the stream's timestamps where reliable, else index / fps)."""
    from vidattn.data.decode import open_video

    with contextlib.suppress(VideoDecodeError), open_video(path, backend="pyav", timeout_s=timeout_s) as reader:
        return np.asarray(reader.frame_times(indices.tolist()), dtype=np.float64)
    return indices.astype(np.float64) / fps


def explain_video(
    path: str | os.PathLike, model: ExplainModel, options: ExplainOptions | None = None
) -> VideoExplanation:
    """The prediction and the attention of `model` over the whole video at `path` (see the module docstring).

    Raises:
        VideoDecodeError: the file cannot be opened or decoded.
        VidattnError: a chosen layer recorded nothing.
    """
    from vidattn.keyframes.stream import KeyframeOptions, open_frames

    opts = options or ExplainOptions()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoDecodeError(path, "no such file")
    km = model.windows
    topk, native = _predict(path, model, opts)
    scorer = ExplainScorer(km, model.layers, opts.batch_size)
    stream_opts = KeyframeOptions(backend=opts.backend, timeout_s=opts.timeout_s, batch_size=opts.batch_size)
    indices: list[int] = []
    with open_frames(path, stream_opts, size=km.size, step=km.stride) as frames:
        for index, frame in frames:
            indices.append(index)
            scorer.push(frame)
        scorer.finish()
        # The stream's frame count is final (corrected on a truncated file); its size is the model's.
        info = dataclasses.replace(frames.info(), width=native.width, height=native.height)
    if not indices:
        raise VideoDecodeError(path, "no frames decode")
    idx = np.asarray(indices, dtype=np.int64)
    fps = info.fps if info.fps > 0 else 25.0
    picked = None
    if scorer.picked is not None:
        picked = np.zeros(len(idx), dtype=bool)
        picked[: len(scorer.picked)] = scorer.picked[: len(idx)]
    probs = np.stack(scorer.window_probs) if scorer.window_probs else np.zeros((0, len(km.classes)), np.float32)
    return VideoExplanation(
        video=path,
        info=info,
        indices=idx,
        times=_times(path, idx, fps, opts.timeout_s),
        weights=scorer.frame_scores()[: len(idx)],
        maps=scorer.sample_maps(len(idx)),
        picked=picked,
        topk=topk,
        windows=list(scorer.windows),
        window_probs=probs,
        layers=list(model.layers),
        classes=list(km.classes),
        checkpoint=km.checkpoint,
        model_name=km.name,
        clip_len=km.clip_len,
        stride=km.stride,
    )
