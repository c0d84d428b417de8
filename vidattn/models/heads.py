"""Classifier heads for video feature maps ``(B, C, T, H, W)``.

- :class:`ClassifierHead`: global average pool + linear, as torchvision's VideoResNet
  (so its ``fc`` weights load one-to-one).
- :class:`AttentionPoolHead`: attention pooling over time (Ilse, Tomczak, Welling,
  "Attention-based Deep Multiple Instance Learning", ICML 2018): a small MLP scores each
  feature time step, a softmax over time turns the scores into weights, and the clip
  feature is the weighted sum. The weights say *when* the class is visible; mapped back
  to input frames they are the key-frame scores.

- :class:`PeakPoolHead`: peak pooling, a hard attention over time and space: per channel, the largest rise
  of the feature above its own temporal mean at that position. What is there all the time (a video's
  background, its clutter) cancels, and what happens at one moment is kept at full strength wherever it is.

All heads expose ``time_weights(feats) -> (B, T')`` (sums to 1 over feature time);
:func:`expand_time_weights` maps them to one weight per input frame.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from vidattn.layers import RecordsAttention

__all__ = ["HEADS", "AttentionPoolHead", "ClassifierHead", "PeakPoolHead", "create_head", "expand_time_weights"]


def _linear(in_features: int, num_classes: int) -> nn.Module:
    if num_classes <= 0:
        return nn.Identity()
    fc = nn.Linear(in_features, num_classes)
    nn.init.normal_(fc.weight, 0, 0.01)  # torchvision VideoResNet's init
    nn.init.zeros_(fc.bias)
    return fc


def _class_time_weights(fc: nn.Module, num_classes: int, steps: Tensor, class_index: Tensor | None) -> Tensor:
    """Softmax over time of each step's logit for a class (default: the predicted one); uniform without classes.

    Args:
        fc: the head's linear layer.
        num_classes: its outputs (0: no classifier, the weights are uniform).
        steps: ``(B, C, T')`` one pooled feature per time step.
        class_index: ``(B,)`` classes to explain.
    """
    if num_classes <= 0:
        return torch.full(steps.shape[:1] + steps.shape[2:3], 1.0 / steps.shape[2], device=steps.device)
    step_logits = fc(rearrange(steps, "b c t -> b t c"))  # (B, T', K)
    if class_index is None:
        class_index = step_logits.mean(1).argmax(-1)
    chosen = step_logits.gather(2, rearrange(class_index, "b -> b 1 1").expand(-1, step_logits.shape[1], 1))
    return torch.softmax(rearrange(chosen, "b t 1 -> b t"), dim=-1)


class ClassifierHead(nn.Module):
    """Average pool over (T, H, W), dropout, linear.

    Args:
        in_features: channels of the feature map.
        num_classes: outputs; 0 gives pooled features (``fc`` is an identity).
        drop_rate: dropout before the linear layer.
    """

    def __init__(self, in_features: int, num_classes: int, *, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = _linear(in_features, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear layer with a freshly initialised one for ``num_classes``."""
        self.num_classes = num_classes
        self.fc = _linear(self.in_features, num_classes)

    def forward(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.drop(feats.mean((2, 3, 4)))
        return pooled if pre_logits else self.fc(pooled)

    def time_weights(self, feats: Tensor, class_index: Tensor | None = None) -> Tensor:
        """Temporal class activation: softmax over time of each step's logit for a class.

        Args:
            feats: ``(B, C, T', H', W')``.
            class_index: ``(B,)`` classes to explain; default the predicted class.

        Returns:
            ``(B, T')`` weights summing to 1.
        """
        return _class_time_weights(self.fc, self.num_classes, feats.mean((3, 4)), class_index)


class AttentionPoolHead(RecordsAttention, nn.Module):
    """Attention pooling over time, then dropout and linear.

    ``score(f_t) = w2 . tanh(W1 f_t)`` on the spatially averaged features ``f_t``;
    ``a = softmax_t(score)``; ``clip = sum_t a_t f_t``. ``w2`` is zero-initialised, so at
    step 0 the weights are uniform and the head equals :class:`ClassifierHead` (average
    pooling): pretrained ``fc`` weights keep their behaviour.

    Weights recorded: ``(B, T')`` per feature time step, softmax (sums to 1). Use the
    model's ``frame_weights`` for one weight per input frame.

    Args:
        in_features: channels of the feature map.
        num_classes: outputs; 0 gives pooled features.
        hidden: width of the scoring MLP; default ``max(16, in_features // 4)``.
        drop_rate: dropout before the linear layer.
    """

    def __init__(
        self, in_features: int, num_classes: int, *, hidden: int | None = None, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        hidden = hidden or max(16, in_features // 4)
        self.attn = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.attn[2].weight)
        nn.init.zeros_(self.attn[2].bias)
        self.drop = nn.Dropout(drop_rate)
        self.fc = _linear(in_features, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the linear layer with a freshly initialised one for ``num_classes``."""
        self.num_classes = num_classes
        self.fc = _linear(self.in_features, num_classes)

    def _pool(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        steps = rearrange(feats.mean((3, 4)), "b c t -> b t c")
        weights = torch.softmax(rearrange(self.attn(steps), "b t 1 -> b t"), dim=-1)
        self._record(weights)
        return einsum(weights, steps, "b t, b t c -> b c"), weights

    def time_weights(self, feats: Tensor, class_index: Tensor | None = None) -> Tensor:
        """Attention weights ``(B, T')`` over feature time steps (class-agnostic; sums to 1)."""
        return self._pool(feats)[1]

    def forward(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.drop(self._pool(feats)[0])
        return pooled if pre_logits else self.fc(pooled)

    def forward_with_weights(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the ``(B, T')`` time weights from one pass."""
        pooled, weights = self._pool(feats)
        return self.fc(self.drop(pooled)), weights


def _rise(feats: Tensor) -> Tensor:
    """Each feature's rise above its own mean over time (dimension 2), at every position: what peak pooling maxes."""
    return feats - feats.mean(2, keepdim=True)


class PeakPoolHead(ClassifierHead):
    """Peak pooling: each channel's largest rise above its own temporal mean, then dropout and linear.

    ``rise = f - mean_t(f)`` at every position; ``clip_c = max_{t,h,w} rise_c``. A hard attention: every channel
    attends to the one place and moment where it fires most above its usual level. A feature that is there all
    video long (the background, clutter that moves the same way throughout) rises nowhere and pools to ~0, so the
    head cannot tell videos apart by them; a short event keeps its full strength however long the clip is (an
    average would dilute it by the clip's length). On the 4-class, 160-video long-video set of issue 15 the
    attention-pooling head memorised the videos by their clutter in two of three runs; this head learnt the event
    in every run (README, "Long videos").

    Args:
        in_features: channels of the feature map.
        num_classes: outputs; 0 gives pooled features.
        drop_rate: dropout before the linear layer.
    """

    def forward(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = self.drop(_rise(feats).amax((2, 3, 4)))
        return pooled if pre_logits else self.fc(pooled)

    def time_weights(self, feats: Tensor, class_index: Tensor | None = None) -> Tensor:
        """Softmax over time of each step's logit (its channels' peaks over space) for a class: ``(B, T')``."""
        return _class_time_weights(self.fc, self.num_classes, _rise(feats).amax((3, 4)), class_index)


#: The classification heads by name (``model.head``).
HEADS: dict[str, type[nn.Module]] = {"attn": AttentionPoolHead, "avg": ClassifierHead, "peak": PeakPoolHead}


def create_head(kind: str, in_features: int, num_classes: int, *, drop_rate: float = 0.0) -> nn.Module:
    """The head registered as `kind` in `HEADS` (``"attn"``, ``"avg"``, ``"peak"``)."""
    if kind not in HEADS:
        from vidattn.errors import VidattnError

        raise VidattnError(f"unknown head {kind!r} (known: {', '.join(repr(k) for k in HEADS)})")
    return HEADS[kind](in_features, num_classes, drop_rate=drop_rate)


def expand_time_weights(weights: Tensor, num_frames: int) -> Tensor:
    """Map weights over feature time steps ``(B, T')`` to input frames ``(B, T)``.

    Input frame ``i`` belongs to feature step ``floor(i * T' / T)`` (nearest, which is
    ``i // stride`` when ``T`` is a multiple of the temporal stride). A step's weight is
    shared equally by its frames, so the result still sums to 1.
    """
    steps = weights.shape[1]
    if steps == num_frames:
        return weights
    step_of_frame = torch.arange(num_frames, device=weights.device) * steps // num_frames  # (T,)
    frames_per_step = torch.bincount(step_of_frame, minlength=steps).clamp_min(1)
    return weights[:, step_of_frame] / frames_per_step[step_of_frame].to(weights.dtype)
