"""The model scorer of `vidattn keyframes`: how much each sampled frame decides a checkpoint's prediction.

A frame's score is its *evidence*: the gradient of the predicted class's logit margin (over the
runner-up) with respect to what the network sees at that frame, times that input, taken per pixel and summed
over the frame (gradient x input; Shrikumar et al. 2016, Simonyan et al. 2014). It passes through the
model's temporal attention (a frame the attention pooling ignores gets no gradient) and, unlike the
attention weights alone, it is specific to the predicted class: a classifier's attention may rest
anywhere once it has seen enough, while the evidence stays on the frames that decide the class. On the
long synthetic set (48-192 frames, a 6-frame event) it put the top key frame in the event for 0.92 of
the validation videos against 0.77 for the attention weights of the same checkpoint. For a model on
frame differences (``model.input: diff``) the network sees, at each sample, the change since the
previous sample, so that is where the evidence is measured and `evidence_frame_offsets` places it
midway.

A model trained with whole-video coverage (``data.sampler`` auto or segment) scores the whole video
the way it was evaluated: test views that each span the whole video, so every moment of the entire
video competes for the prediction. `vidattn keyframes` reads every frame for it (`KeyframeModel.read_step`)
and the views, each every ``stride``-th frame from a phase a frame apart, together see every frame. A
frame's score is what the views agree on (`WindowScorer.consensus_scores`: the geometric mean of each
view's evidence curve): the moment that decides the class shows in every view, while a distractor that
one view's sampling turns into a burst does not. On the long synthetic sets of issue 15 (nine checkpoints,
three sets of three seeds) this put the top key frame in the event for 0.958-1.000 of the validation
videos (median 1.000), against 0.896-0.979 (median 0.938) for one view's evidence on every ``stride``-th
frame. A model trained on dense clips (``random``) scores overlapping sliding windows of its clip length
on every ``stride``-th frame. Either way a score belongs to a sample position, which the caller maps to
its true frame index.

Imported only when a checkpoint is given (it imports torch); the training-free path stays numpy only.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from vidattn.config import Config

__all__ = ["KeyframeModel", "WindowScorer", "evidence_frame_offsets", "frame_evidence"]


def frame_evidence(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame evidence for the predicted class (see the module docstring) and the logits.

    Args:
        model: a classifier of clips ``(B, C, T, H, W)``; with ``input_mode == "diff"`` the evidence is
            taken on the frame differences it computes inside.
        x: normalised clips ``(B, C, T, H, W)``.

    Returns:
        ``(logits (B, K), evidence (B, T))``; evidence >= 0. For a difference model, position 0 (a copy
        of position 1's difference) gets 0.
    """
    from vidattn.models.resnet import frame_differences

    diff = getattr(model, "input_mode", "rgb") == "diff"
    seen = (frame_differences(x) if diff else x).detach().requires_grad_(True)
    if diff:
        model.input_mode = "rgb"  # it is fed the differences it would compute itself: the same function
    try:
        with torch.enable_grad():
            logits = model(seen)
            (grad,) = torch.autograd.grad(_margin(logits.float()).sum(), seen)
    finally:
        if diff:
            model.input_mode = "diff"
    evidence = (grad * seen).sum(1).abs().sum((2, 3)).float()  # (B, T): |contribution| per pixel, per frame
    if diff:
        evidence[:, 0] = 0.0
    return logits.detach(), evidence.detach()


def _margin(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class's logit minus the runner-up's (the logit itself with one class): what the decision
    rests on, and unlike its log-probability it does not saturate (a confident softmax has no gradient left)."""
    if logits.shape[-1] < 2:
        return logits[..., 0]
    top2 = logits.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def evidence_frame_offsets(indices: np.ndarray, input_mode: str) -> np.ndarray:
    """Frames back from each sample to where its evidence belongs: half the gap to the previous sample for a
    difference model (its input there is the change since that sample), 0 otherwise."""
    if input_mode != "diff" or len(indices) < 2:
        return np.zeros(len(indices), dtype=np.int64)
    return np.diff(indices, prepend=indices[0]) // 2


@dataclass
class KeyframeModel:
    """A trained model ready for window scoring (see `load`)."""

    model: torch.nn.Module
    classes: list[str]
    clip_len: int
    stride: int
    size: int
    crop_size: int
    device: torch.device
    name: str = ""
    checkpoint: str = ""
    transform: Any = field(default=None, repr=False)
    amp: str = "off"  # mixed precision of training (engine.modeling.amp_mode)
    sampler: str = "random"  # the checkpoint's data.sampler: random -> sliding windows, else whole-video views
    snippet: int = 1

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, device: torch.device) -> KeyframeModel:
        """Rebuild the model of a `vidattn train` checkpoint with its data settings."""
        from vidattn.engine.checkpoint import load_model

        model, classes, cfg = load_model(checkpoint, device)
        return cls.from_loaded(model, classes, cfg, checkpoint, device)

    @classmethod
    def from_loaded(
        cls,
        model: torch.nn.Module,
        classes: list[str],
        cfg: Config,
        checkpoint: str | os.PathLike,
        device: torch.device,
    ) -> KeyframeModel:
        """Wrap a model `vidattn.engine.checkpoint.load_model` rebuilt (``(model, classes, cfg)``) on `device`."""
        from vidattn.data.transforms import VideoTransform
        from vidattn.engine.modeling import amp_mode

        d = cfg.data
        transform = VideoTransform(d.crop_size, train=False).to(device)
        amp = amp_mode(cfg.train.amp, device)
        return cls(
            model, classes, d.clip_len, d.stride, d.size, d.crop_size, device, cfg.model.name, os.fspath(checkpoint),
            transform, amp, d.sampler, d.snippet,
        )  # fmt: skip

    @property
    def read_step(self) -> int:
        """Frames apart that `vidattn keyframes` reads: every frame for a whole-video model (its views, shifted a
        frame apart, together see them all), every ``stride``-th for a dense-clip model (its sliding windows)."""
        return 1 if self.sampler != "random" else self.stride

    @property
    def input_mode(self) -> str:
        """What the network sees: ``"rgb"`` frames or ``"diff"`` (changes between samples)."""
        return getattr(self.model, "input_mode", "rgb")

    @torch.no_grad()
    def attention_windows(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, T, S, S, C)`` square clips -> the model's frame weights ``(B, T)`` (its temporal attention,
        ``frame_weights``; uniform = 1) and class probs: what `vidattn explain` shows."""
        from vidattn.engine.modeling import autocast_for

        x = self.transform(clips.to(self.device, non_blocking=True))
        with autocast_for(self.device, self.amp):
            logits, weights = self.model.frame_weights(x, return_logits=True)
        return (weights * weights.shape[1]).float().cpu(), torch.softmax(logits.float(), -1).cpu()

    def score_windows(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, T, S, S, C)`` square clips -> frame evidence ``(B, T)`` (mean 1) and class probs."""
        from vidattn.engine.modeling import autocast_for

        with torch.no_grad():
            x = self.transform(clips.to(self.device, non_blocking=True))
        with autocast_for(self.device, self.amp):
            logits, evidence = frame_evidence(self.model, x)
        total = evidence.sum(1, keepdim=True)
        # A view whose decision does not depend on any frame (no gradient anywhere) ranks its frames equally.
        evidence = torch.where(total > 0, evidence / total.clamp_min(1e-30), 1.0 / evidence.shape[1])
        return (evidence * evidence.shape[1]).cpu(), torch.softmax(logits.float(), -1).cpu()


def _square(frame: torch.Tensor, size: int) -> torch.Tensor:
    """Centre square crop of side `size` (edge-padded when the frame is smaller), as in evaluation."""
    from vidattn.data.transforms import spatial_views

    return spatial_views(frame[None, None], size, "center", np.random.default_rng(0))[0, 0]


class WindowScorer:
    """Scores every sample of a video with the model; see the module docstring for the two modes.

    Sliding mode: windows of `clip_len` model samples, hop clip_len // 2, batched; keeps only the last window.
    Whole-video mode: keeps the samples (at the model's input size) until `finish`, up to `max_samples`
    of them; a longer video falls back to sliding windows so memory stays bounded.

    Args:
        km: the model.
        batch_size: windows per model call.
        every: the model reads every `every`-th pushed sample. 1 when the caller pushes the model's own samples
            (every ``stride``-th frame); ``km.stride`` when it pushes every frame (`KeyframeModel.read_step`), so
            that the whole-video views, shifted a frame apart, together see every frame.
    """

    #: Samples held for whole-video scoring (~150 MB at 112x112); beyond it, sliding windows.
    max_samples = 4096
    #: Floor of a view's evidence (mean 1) in the views' geometric mean (`consensus_scores`).
    consensus_floor = 1e-3

    def __init__(self, km: KeyframeModel, batch_size: int, *, every: int = 1) -> None:
        self.km = km
        self.batch_size = max(1, batch_size)
        self.every = max(1, every)
        self.hop = max(1, km.clip_len // 2)
        self.buffer: deque[tuple[int, torch.Tensor]] = deque(maxlen=km.clip_len)  # (position, sample)
        self.count = 0  # samples seen
        self.kept = 0  # samples the sliding windows read (every `every`-th)
        self.next_start = 0  # in kept samples
        self.last_end = -1  # position after the last emitted window's last sample
        self.pending: list[tuple[list[int], torch.Tensor]] = []
        self.windows: list[tuple[int, int, int, float]] = []  # (first pos, last pos, class, prob)
        self.scored: list[tuple[list[int], np.ndarray]] = []  # (positions, per-sample scores) per window or view
        self.whole: list[torch.Tensor] | None = [] if km.sampler != "random" else None
        self.whole_views = False  # whether `finish` scored whole-video views (not sliding windows)

    def push(self, frame: np.ndarray) -> None:
        """Add the next sample (uint8 ``(H, W, C)``)."""
        square = _square(torch.from_numpy(frame), self.km.size)
        if self.whole is not None:
            self.whole.append(square)
            if len(self.whole) > self.max_samples:  # too long to hold: stream it through sliding windows
                held, self.whole = self.whole, None
                for f in held:
                    self._push_window(f)
            return
        self._push_window(square)

    def _push_window(self, square: torch.Tensor) -> None:
        """Sliding mode: score every window the new sample completes."""
        pos = self.count
        self.count += 1
        if pos % self.every:
            return
        self.buffer.append((pos, square))
        self.kept += 1
        if self.kept - self.km.clip_len == self.next_start:
            self._emit(list(self.buffer))
            self.next_start += self.hop

    def _emit(self, held: list[tuple[int, torch.Tensor]]) -> None:
        frames = [f for _, f in held]
        while len(frames) < self.km.clip_len:  # shorter than a window: repeat the last frame
            frames.append(frames[-1])
        positions = [p for p, _ in held]
        self.pending.append((positions, torch.stack(frames)))
        self.last_end = positions[-1] + 1
        if len(self.pending) >= self.batch_size:
            self.flush()

    def finish(self) -> None:
        """Score what is left: the whole video (whole-video mode) or the last, partial window."""
        if self.whole is not None:
            self._score_whole()
            return
        if self.buffer and self.last_end != self.buffer[-1][0] + 1:
            self._emit(list(self.buffer)[-min(self.kept, self.km.clip_len) :])
        self.flush()

    def _score_whole(self) -> None:
        """Test views that together cover every sample, each spanning the whole video, as evaluation reads it."""
        from vidattn.data.sampling import sampler_for

        frames, self.whole = self.whole or [], None
        n = self.count = len(frames)
        self.whole_views = True
        if not n:
            return
        clip_len = self.km.clip_len
        fits = self.km.sampler == "auto" and n <= (clip_len - 1) * self.every + 1
        # A video that fits one clip: `every` views a sample apart; a longer one: enough views to reach every sample.
        views = min(self.every, n) if fits else max(1, -(-n // clip_len))
        sampler = sampler_for(
            self.km.sampler, clip_len=clip_len, stride=self.every, train=False, num_clips=views, snippet=self.km.snippet
        )
        video = torch.stack(frames)  # (N, S, S, C)
        for clip in sampler(n):
            positions = list(clip.frame_indices)
            self.pending.append((positions, video[torch.tensor(positions)]))
            if len(self.pending) >= self.batch_size:
                self.flush()
        self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        weights, probs = self.score(torch.stack([clip for _, clip in self.pending]))
        for (positions, _), w, p in zip(self.pending, weights, probs, strict=True):
            self.add_window(positions, w, p)
        self.pending.clear()

    def score(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame scores ``(B, T)`` and class probs of a batch of clips: the frames' evidence here."""
        return self.km.score_windows(clips)

    def add_window(self, positions: list[int], weights: torch.Tensor, probs: torch.Tensor) -> None:
        """Count one scored window: its frame weights ``(T,)`` at sample `positions`, its class probs ``(K,)``."""
        self.scored.append((list(positions), weights[: len(positions)].float().numpy()))
        cls = int(probs.argmax())
        self.windows.append((min(positions), max(positions), cls, float(probs[cls])))

    def frame_scores(self) -> np.ndarray:
        """``(T,)`` each sample's attention weight averaged over the windows/views covering it.

        A sample no view reached (rounding in a long video) takes the value of its nearest scored neighbours.
        """
        total, n = self._sums()
        scores = total / np.maximum(n, 1)
        seen = np.flatnonzero(n)
        if 0 < len(seen) < len(n):
            scores = np.interp(np.arange(len(n)), seen, scores[seen])
        return scores.astype(np.float32)

    def _sums(self) -> tuple[np.ndarray, np.ndarray]:
        """Per sample: the sum of the scores the windows or views gave it, and how many did."""
        total, n = np.zeros(self.count), np.zeros(self.count, dtype=np.int64)
        for positions, values in self.scored:
            np.add.at(total, positions, values)
            np.add.at(n, positions, 1)
        return total, n

    def consensus_scores(self) -> np.ndarray:
        """``(T,)`` the key frames' score of each sample: what every view agrees on.

        Whole-video views each span the video, so each gives a score curve over all of it (its samples'
        evidence, linearly interpolated between them); a sample's score is the geometric mean of the views'
        curves. A moment that decides the class shows in every view, a spike that one view's sampling makes of
        a distractor does not. When samples are frames (``every > 1``) a difference model's evidence sits midway
        between a view's sample and its previous one (`evidence_frame_offsets` does that for sparser samples).
        Sliding windows are averaged where they overlap; with ``every == 1`` (the caller pushed the model's own
        samples, e.g. at ``--sample-fps``) the result is `frame_scores`.
        """
        n = self.count
        if self.every == 1 or not self.scored:
            return self.frame_scores()
        diff = self.km.input_mode == "diff"
        if self.whole_views:
            curves = [self._curve(positions, values, n, diff) for positions, values in self.scored]
            logs = np.log(np.maximum(np.stack(curves), 0.0) + self.consensus_floor)
            return np.exp(logs.mean(0)).astype(np.float32)
        total, counts = self._sums()
        seen = np.flatnonzero(counts)
        mean = total[seen] / counts[seen]
        return self._curve(seen.tolist(), mean, n, diff).astype(np.float32)

    @staticmethod
    def _curve(positions: list[int], values: np.ndarray, n: int, diff: bool) -> np.ndarray:
        """One view's scores at its `positions` (repeats dropped) -> a curve over samples ``0..n-1``."""
        pos, first = np.unique(np.asarray(positions), return_index=True)
        vals = np.asarray(values, dtype=np.float64)[first]
        x = pos.astype(np.float64)
        if diff and len(pos) > 1:
            x = x - np.diff(x, prepend=x[0]) / 2  # the change since the previous sample: midway
        return np.interp(np.arange(n), x, vals)
