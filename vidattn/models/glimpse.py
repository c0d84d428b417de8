"""Two-stage glimpse model: hard temporal attention that saves compute on long videos.

A cheap scorer looks at every frame of the input at low resolution and gives each frame a score;
the `k` best moments (straight-through / Gumbel top-k, with non-maximum suppression so two glimpses
do not look at the same moment) are cut out as short full-resolution snippets, and only those go
through the attention 3D-CNN. The cost per video then grows with its length only through the
scorer. After Korbar, Tran, Torresani, "SCSampler: Sampling Salient Clips from Video for Efficient
Action Recognition", ICCV 2019, and Mnih et al., "Recurrent Models of Visual Attention" (glimpses),
NeurIPS 2014; the discrete choice is trained end to end as in `vidattn.layers.hard`.

Two paths train the scorer: the straight-through mask multiplies each glimpse, so the loss on what
the glimpses lead to reaches the scores; and the scorer's own per-frame features, pooled with the
softmax of the same scores, are appended to the classifier's input (the whole-video context), so the
scores also learn where the frames that tell the class are. That softmax is the model's
``frame_weights``: one weight per input frame, over the whole video. With ``head="peak"`` the context also
gets each scorer channel's largest rise above its mean over the video (peak pooling, as the head does): a
softmax average dilutes a few frames' event over a long video, and until the scores find the event the
glimpses rarely land on it (2 glimpses of 8 among 384 frames), so nothing would learn it. On 768-frame
videos of issue 15's shape that took the model from 0.375 (chance 0.25) to 0.958 (README, "Long videos").

The feature map of `forward_features` is ``(B, F + S, k * L', H', W')``: the glimpses' backbone
features concatenated in time (glimpses in temporal order), with the scorer's pooled context
(``S`` channels) broadcast over every position.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from vidattn.layers import RecordsAttention, check_video, select_topk

from ._registry import create_model, register_model
from .heads import _linear, _rise, create_head, expand_time_weights
from .resnet import check_input_mode, frame_differences

__all__ = ["GlimpseNet", "GlimpseScorer"]


def _temporal_conv(in_ch: int, out_ch: int) -> nn.Conv3d:
    # Replicate padding: zero padding makes the ends of a video look special to a scorer whose argmax is a key frame.
    return nn.Conv3d(in_ch, out_ch, kernel_size=(3, 1, 1), padding=(1, 0, 0), padding_mode="replicate", bias=False)


class GlimpseScorer(nn.Module):
    """Cheap whole-video scorer: frames pooled to ``size`` x ``size``, two (2+1)D conv pairs, a 1-D conv over time.

    Args:
        in_chans: input channels.
        width: feature channels per frame.
        size: frames are average-pooled to this side first (the scorer's cost per frame is fixed).

    Returns (forward): per-frame features ``(B, width, T)`` and score logits ``(B, T)``.
    """

    def __init__(self, in_chans: int = 3, width: int = 24, size: int = 16) -> None:
        super().__init__()
        self.size, self.width = size, width
        mid = max(4, width // 2)
        self.frames = nn.Sequential(
            nn.Conv3d(in_chans, mid, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            _temporal_conv(mid, width),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.Conv3d(width, width, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            _temporal_conv(width, width),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        self.context = nn.Conv1d(width, width, kernel_size=5, padding=2, padding_mode="replicate")
        self.score = nn.Sequential(nn.Conv1d(width, width, 1), nn.Tanh(), nn.Conv1d(width, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = x.shape[2]
        if x.shape[-1] > self.size or x.shape[-2] > self.size:
            x = F.adaptive_avg_pool3d(x, (t, min(self.size, x.shape[-2]), min(self.size, x.shape[-1])))
        feats = self.frames(x).mean((3, 4))  # (B, width, T)
        feats = feats + F.relu(self.context(feats))
        return feats, rearrange(self.score(feats), "b 1 t -> b t")


class GlimpseNet(RecordsAttention, nn.Module):
    """Scorer over the whole input, top-k glimpses of ``glimpse_len`` frames, a backbone on the glimpses only.

    Args:
        backbone: a VideoResNet-style model with ``forward_features``, ``num_features``, ``temporal_stride``
            and ``spatial_stride`` (its own head is not used).
        num_classes: classifier outputs; 0 gives pooled features.
        k: glimpses per video.
        glimpse_len: frames per glimpse (fewer when the input is shorter).
        scorer_width: channels of the scorer's per-frame features.
        scorer_size: the scorer's frame side (pixels).
        estimator: ``"gumbel"`` (Gumbel-top-k while training, plain top-k in eval) or ``"st"`` (plain top-k).
        tau: softmax temperature of the scores.
        head: how the glimpses' time steps are pooled: a name in `vidattn.models.heads.HEADS` ("attn", "avg", "peak");
            with "peak" the scorer's context adds its channels' peak rise over the whole input (module docstring).
        drop_rate: dropout before the classifier.
        input_mode: ``"rgb"`` or ``"diff"``: the scorer and the glimpses see the differences between
            consecutive input frames (`vidattn.models.resnet.frame_differences`, taken over the whole input).

    Weights recorded: ``""`` the scorer's softmax over input frames ``(B, T)`` and ``":mask"`` the glimpse
    centres ``(B, T)`` (0/1).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        k: int = 2,
        glimpse_len: int = 8,
        scorer_width: int = 24,
        scorer_size: int = 16,
        estimator: str = "gumbel",
        tau: float = 1.0,
        head: str = "attn",
        drop_rate: float = 0.0,
        input_mode: str = "rgb",
    ) -> None:
        super().__init__()
        check_input_mode(input_mode, "GlimpseNet")
        if getattr(backbone, "input_mode", "rgb") != "rgb":
            raise ValueError("GlimpseNet: give input_mode to the GlimpseNet, not to its backbone")
        self.input_mode = input_mode
        if k < 1 or glimpse_len < 1:
            raise ValueError(f"GlimpseNet: k and glimpse_len must be >= 1, got {k}, {glimpse_len}")
        if estimator not in ("st", "gumbel"):
            raise ValueError(f"GlimpseNet: estimator must be 'st' or 'gumbel', got {estimator!r}")
        self.k, self.glimpse_len, self.estimator, self.tau = k, glimpse_len, estimator, tau
        self.in_chans = getattr(backbone, "in_chans", 3)
        self.scorer = GlimpseScorer(self.in_chans, scorer_width, scorer_size)
        backbone.head = nn.Identity()  # replaced by the pooling below
        self.backbone = backbone
        self.backbone_features = backbone.num_features
        self.num_features = backbone.num_features + scorer_width
        self.temporal_stride = backbone.temporal_stride
        self.spatial_stride = backbone.spatial_stride
        self.num_classes = num_classes
        self.pool = create_head(head, backbone.num_features, 0)
        self.peak_context = head == "peak"
        self.drop = nn.Dropout(drop_rate)
        self.fc = _linear(self.num_features, num_classes)
        self.default_cfg = getattr(backbone, "default_cfg", {})

    def glimpse_plan(self, t: int) -> tuple[int, int]:
        """``(glimpses, frames per glimpse)`` for an input of ``t`` frames (never more frames than the input)."""
        length = min(self.glimpse_len, t)
        return max(1, min(self.k, t // length)), length

    def _select(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scorer pass: the glimpse clips ``(B*k, C, L, H, W)``, the context ``(B, S)`` and the weights ``(B, T)``."""
        b, c, t, h, w = x.shape
        feats, scores = self.scorer(x)
        k, length = self.glimpse_plan(t)
        mask, centres, soft = select_topk(
            scores, k, tau=self.tau, gumbel=self.training and self.estimator == "gumbel", min_gap=length
        )
        if self.is_recording:
            self._record(soft)
            self._record(torch.zeros_like(soft).scatter_(1, centres, 1.0), ":mask")  # exactly 0/1
        context = torch.einsum("bt,bct->bc", soft, feats)
        if self.peak_context:
            context = context + _rise(feats).amax(2)
        starts = (centres - length // 2).clamp(0, t - length)  # (B, k)
        frame_idx = rearrange(starts[..., None] + torch.arange(length, device=x.device), "b k l -> b (k l)")
        clips = x.gather(2, repeat(frame_idx, "b n -> b c n h w", c=c, h=h, w=w))  # (B, C, k*L, H, W)
        # Straight-through: each glimpse is scaled by its mask value (1 forward), so its loss reaches the scores.
        gate = repeat(mask.gather(1, centres), "b k -> b 1 (k l) 1 1", l=length)
        clips = rearrange(clips * gate, "b c (k l) h w -> (b k) c l h w", k=k)
        return clips, context, soft

    def forward_features(self, x: Tensor) -> Tensor:
        """Video ``(B, C, T, H, W)`` -> ``(B, F + S, k * L', H', W')`` (see the module docstring)."""
        return self._features(x)[0]

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_video(x, self.in_chans, type(self).__name__)
        if self.input_mode == "diff":
            x = frame_differences(x)
        b = x.shape[0]
        clips, context, soft = self._select(x)
        g = self.backbone.forward_features(clips)  # (B*k, F, L', H', W')
        g = rearrange(g, "(b k) f l h w -> b f (k l) h w", b=b)
        ctx = repeat(context, "b s -> b s n h w", n=g.shape[2], h=g.shape[3], w=g.shape[4])
        return torch.cat([g, ctx], dim=1), soft

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map -> logits: the glimpses pooled over time, next to the whole-video context."""
        g, ctx = feats[:, : self.backbone_features], feats[:, self.backbone_features :]
        pooled = torch.cat([self.pool(g, pre_logits=True), ctx.mean((2, 3, 4))], dim=1)
        pooled = self.drop(pooled)
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def frame_weights(self, x: Tensor, *, return_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The scorer's softmax over the input frames ``(B, T)`` (sums to 1), optionally with the logits."""
        feats, soft = self._features(x)
        weights = expand_time_weights(soft, x.shape[2])
        return (self.forward_head(feats), weights) if return_logits else weights

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.fc = _linear(self.num_features, num_classes)


_GLIMPSE_KWARGS = ("k", "glimpse_len", "scorer_width", "scorer_size", "estimator", "tau", "input_mode")


def _glimpse(backbone_name: str, *, num_classes: int = 400, head: str = "attn", drop_rate: float = 0.0, **kwargs: Any):
    glimpse = {key: kwargs.pop(key) for key in _GLIMPSE_KWARGS if key in kwargs}
    backbone = create_model(backbone_name, num_classes=0, **kwargs)
    model = GlimpseNet(backbone, num_classes, head=head, drop_rate=drop_rate, **glimpse)
    model.model_name = f"{backbone_name}_glimpse"
    return model


def _register(fn: Any) -> Any:
    fn.accepted_kwargs = [  # type: ignore[attr-defined]
        "num_classes", "in_chans", "attn", "attn_kwargs", "head", "drop_rate", "pretrained", "widths",
        "temporal_padding", *_GLIMPSE_KWARGS,
    ]  # fmt: skip
    return register_model(fn)


@_register
def r2plus1d_glimpse(**kwargs: Any) -> GlimpseNet:
    """Glimpse model on a tiny R(2+1)D (CPU): 2 glimpses of 8 frames, scorer at 16x16."""
    return _glimpse("r2plus1d_tiny", **kwargs)


@_register
def r2plus1d_18_glimpse(**kwargs: Any) -> GlimpseNet:
    """Glimpse model on R(2+1)D-18 (torchvision weights for the backbone with ``pretrained``): 2 glimpses of 16."""
    return _glimpse("r2plus1d_18", **{"glimpse_len": 16, "scorer_size": 32, **kwargs})
