"""VideoResNet backbones (R3D, MC3, R(2+1)D) with attention in the residual blocks.

Paper: Tran, Wang, Torresani, Ray, LeCun, Paluri, "A Closer Look at Spatiotemporal
Convolutions for Action Recognition", CVPR 2018 (R3D, MCx, R(2+1)D).

The layout follows torchvision's ``models/video/resnet.py`` module for module (stem,
``layer1``..``layer4``, ``BasicBlock`` with ``conv1``/``conv2``/``downsample``, the same
conv builders and the same ``midplanes`` rule), so torchvision's Kinetics-400 weights
load one-to-one (see :mod:`vidattn.models._pretrained`). What is added:

- ``attn``: an attention layer (:func:`vidattn.layers.create_attn`) in every residual
  block of a stage, after ``conv2`` and before the residual sum (where SENet puts it);
  one name for all stages or a per-stage list;
- ``nonlocal_stages``: a non-local block after the last block of chosen stages;
- ``widths`` / ``strides`` as explicit ``(t, h, w)`` tuples, so tiny CPU variants can
  keep full temporal resolution (the conv builders below take a ``(t, h, w)`` stride;
  torchvision's take one int for all three axes);
- ``head="avg"`` (torchvision's), ``"attn"`` (attention pooling over time) or ``"peak"`` (peak pooling);
- ``input_mode="diff"``: the network sees the differences between consecutive input frames
  (what moved) instead of the frames (see :func:`frame_differences`);
- ``forward_features`` / ``forward_head`` / ``frame_weights``.

Every variant is a five-line builder differing in ``conv_makers``, ``layers``, ``stem``
and widths.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vidattn.layers import NonLocalBlock, RecordsAttention, check_video, create_attn

from ._registry import keyword_names, register_model
from .heads import AttentionPoolHead, create_head, expand_time_weights

__all__ = [
    "INPUT_MODES",
    "frame_differences",
    "BasicBlock",
    "BasicStem",
    "Conv2Plus1D",
    "Conv3DNoTemporal",
    "Conv3DSimple",
    "R2Plus1dStem",
    "VideoResNet",
]

Stride3 = tuple[int, int, int]
#: Kinetics-400 normalisation of torchvision's video weights.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


#: What a model sees of its input clip: the frames, or the differences between consecutive frames.
INPUT_MODES = ("rgb", "diff")


def frame_differences(x: Tensor) -> Tensor:
    """``x[t] - x[t-1]`` for a clip ``(B, C, T, H, W)``; frame 0 gets frame 1's difference (same shape).

    What moved between two sampled frames, with the static scene removed: a model trained from scratch
    on a few hundred videos otherwise learns to recognise each training video by its background and
    memorises the labels (TSN's "RGB difference" modality: Wang et al., ECCV 2016). A clip of one frame
    gives zeros.
    """
    if x.shape[2] < 2:
        return x.new_zeros(x.shape)
    d = x[:, :, 1:] - x[:, :, :-1]
    return torch.cat([d[:, :, :1], d], dim=2)


def check_input_mode(input_mode: str, where: str) -> None:
    """Raise ValueError unless `input_mode` is one of `INPUT_MODES`."""
    if input_mode not in INPUT_MODES:
        raise ValueError(f"{where}: input_mode must be one of {', '.join(INPUT_MODES)}, got {input_mode!r}")


# --- conv builders: (in_planes, out_planes, midplanes, stride) -> module -------------------
# Same modules and parameter names as torchvision's Conv3DSimple / Conv3DNoTemporal /
# Conv2Plus1D; the stride is a (t, h, w) tuple.


class Conv3DSimple(nn.Conv3d):
    """Full 3x3x3 convolution (R3D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: Stride3 = (1, 1, 1)):
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride, padding=(1, 1, 1), bias=False)


class Conv3DNoTemporal(nn.Conv3d):
    """Per-frame 1x3x3 convolution (the 2-D stages of MC3); never strides in time."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: Stride3 = (1, 1, 1)):
        super().__init__(
            in_planes,
            out_planes,
            kernel_size=(1, 3, 3),
            stride=(1, stride[1], stride[2]),
            padding=(0, 1, 1),
            bias=False,
        )

    @staticmethod
    def downsample_stride(stride: Stride3) -> Stride3:
        return (1, stride[1], stride[2])


class Conv2Plus1D(nn.Sequential):
    """(2+1)D factorisation: 1x3x3 spatial conv, BN, ReLU, then 3x1x1 temporal conv."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: Stride3 = (1, 1, 1)):
        super().__init__(
            nn.Conv3d(
                in_planes,
                midplanes,
                kernel_size=(1, 3, 3),
                stride=(1, stride[1], stride[2]),
                padding=(0, 1, 1),
                bias=False,
            ),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(
                midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride[0], 1, 1), padding=(1, 0, 0), bias=False
            ),
        )


def _downsample_stride(conv_maker: Callable[..., nn.Module], stride: Stride3) -> Stride3:
    fn = getattr(conv_maker, "downsample_stride", None)
    return fn(stride) if fn is not None else stride


# --- stems ---------------------------------------------------------------------------------


class BasicStem(nn.Sequential):
    """3x7x7 conv, BN, ReLU (R3D / MC3 stem; torchvision's with configurable width and stride)."""

    def __init__(self, in_chans: int = 3, width: int = 64, *, stride: Stride3 = (1, 2, 2)) -> None:
        super().__init__(
            nn.Conv3d(in_chans, width, kernel_size=(3, 7, 7), stride=stride, padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        self.out_channels, self.stride = width, tuple(stride)


class R2Plus1dStem(nn.Sequential):
    """(2+1)D stem: 1x7x7 conv to ``mid`` channels, BN, ReLU, 3x1x1 conv, BN, ReLU."""

    def __init__(self, in_chans: int = 3, width: int = 64, *, mid: int | None = None, stride: Stride3 = (1, 2, 2)):
        mid = mid or max(1, round(width * 45 / 64))  # torchvision: 45 for width 64
        super().__init__(
            nn.Conv3d(
                in_chans, mid, kernel_size=(1, 7, 7), stride=(1, stride[1], stride[2]), padding=(0, 3, 3), bias=False
            ),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(stride[0], 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        self.out_channels, self.stride = width, tuple(stride)


# --- block ---------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two conv builders with BN/ReLU, optional attention, residual sum.

    ``out = relu(attn(bn(conv2(relu(bn(conv1(x)))))) + downsample(x))``. With an
    identity-initialised attention layer (the default) the block equals torchvision's.

    Args:
        in_planes: input channels.
        planes: output channels.
        conv_maker: one of the conv builders above.
        stride: ``(t, h, w)`` stride of the first conv.
        downsample: projection for the residual when the shape changes.
        attn: attention name for :func:`vidattn.layers.create_attn`, or None.
        attn_kwargs: keyword arguments for the attention layer.
    """

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        *,
        conv_maker: Callable[..., nn.Module],
        stride: Stride3 = (1, 1, 1),
        downsample: nn.Module | None = None,
        attn: str | None = None,
        attn_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        midplanes = (in_planes * planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * planes)  # torchvision's rule
        self.conv1 = nn.Sequential(
            conv_maker(in_planes, planes, midplanes, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(conv_maker(planes, planes, midplanes), nn.BatchNorm3d(planes))
        self.attn = create_attn(attn, planes, **(attn_kwargs or {})) or nn.Identity()
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.attn(self.conv2(self.conv1(x)))
        return self.relu(out + residual)


# --- model ---------------------------------------------------------------------------------


def _per_stage(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what}: expected one entry per stage ({n}), got {len(value)}")
        return list(value)
    return [value] * n


class VideoResNet(nn.Module):
    """Generic VideoResNet: stem, four stages of residual blocks, head.

    Args:
        conv_makers: one conv builder per stage.
        layers: number of blocks per stage.
        stem: stem class, called as ``stem(in_chans, widths[0])``.
        widths: output channels per stage.
        strides: ``(t, h, w)`` stride of the first block of each stage.
        num_classes: classifier outputs (0: ``forward`` returns pooled features).
        in_chans: input channels.
        attn: attention name for every block, or a per-stage list of names / None.
        attn_kwargs: keyword arguments for the attention layers (one dict, or one per stage).
        nonlocal_stages: stage numbers (1..4) that get a non-local block after their last block.
        nonlocal_kwargs: keyword arguments for :class:`vidattn.layers.NonLocalBlock`.
        head: ``"avg"`` (average pool + linear, torchvision's), ``"attn"`` (attention
            pooling over time; gives per-frame weights) or ``"peak"`` (`PeakPoolHead`).
        drop_rate: dropout before the classifier.
        zero_init_residual: zero the last BN of each block (torchvision's option).
        temporal_padding: ``"zeros"`` (torchvision's) or ``"replicate"``: how the purely temporal
            convolutions (the ``(t, 1, 1)`` halves of R(2+1)D and the temporal gates' 1-D scorers)
            pad the ends of a clip. Zero padding makes the first and last frames look different
            from the rest, and an attention head can latch onto that instead of the content;
            replicate padding shows them their own content. The weights are the same either way.
        input_mode: ``"rgb"`` (the frames) or ``"diff"`` (`frame_differences` of the frames, computed
            inside the model, so every caller feeds plain frames).

    Attributes:
        num_classes: classifier outputs.
        num_features: channels of the ``forward_features`` map.
        temporal_stride: input frames per feature time step (1 for the tiny variants,
            8 for the R3D / R(2+1)D 18/34, 1 for MC3); ``T' = ceil(T / temporal_stride)``.
        spatial_stride: input pixels per feature pixel.
        default_cfg: ``{"mean", "std", "input_size"}`` of torchvision's Kinetics weights.
        model_name: the registered name (set by the builders).
    """

    def __init__(
        self,
        *,
        conv_makers: Sequence[Callable[..., nn.Module]],
        layers: Sequence[int],
        stem: Callable[..., nn.Module],
        widths: Sequence[int] = (64, 128, 256, 512),
        strides: Sequence[Stride3] = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)),
        num_classes: int = 400,
        in_chans: int = 3,
        attn: str | Sequence[str | None] | None = None,
        attn_kwargs: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
        nonlocal_stages: Sequence[int] = (),
        nonlocal_kwargs: dict[str, Any] | None = None,
        head: str = "avg",
        drop_rate: float = 0.0,
        zero_init_residual: bool = False,
        temporal_padding: str = "zeros",
        input_mode: str = "rgb",
    ) -> None:
        super().__init__()
        check_input_mode(input_mode, "VideoResNet")
        self.input_mode = input_mode
        n = len(layers)
        if not (len(conv_makers) == len(widths) == len(strides) == n):
            raise ValueError("conv_makers, layers, widths and strides need one entry per stage")
        bad = [s for s in nonlocal_stages if not 1 <= s <= n]
        if bad:
            raise ValueError(f"nonlocal_stages must be stage numbers in 1..{n}, got {list(nonlocal_stages)}")
        stage_attn = _per_stage(attn, n, "attn")
        stage_attn_kwargs = _per_stage(attn_kwargs, n, "attn_kwargs")
        self.in_chans = in_chans
        self.attn = stage_attn
        self.stem = stem(in_chans, widths[0])
        in_planes = widths[0]
        for i in range(n):
            stride = tuple(strides[i])
            blocks: list[nn.Module] = []
            for j in range(layers[i]):
                block_stride = stride if j == 0 else (1, 1, 1)
                downsample = None
                if block_stride != (1, 1, 1) or in_planes != widths[i]:
                    downsample = nn.Sequential(
                        nn.Conv3d(
                            in_planes,
                            widths[i],
                            kernel_size=1,
                            stride=_downsample_stride(conv_makers[i], block_stride),
                            bias=False,
                        ),
                        nn.BatchNorm3d(widths[i]),
                    )
                blocks.append(
                    BasicBlock(
                        in_planes,
                        widths[i],
                        conv_maker=conv_makers[i],
                        stride=block_stride,
                        downsample=downsample,
                        attn=stage_attn[i],
                        attn_kwargs=stage_attn_kwargs[i],
                    )
                )
                in_planes = widths[i]
            if i + 1 in nonlocal_stages:
                blocks.append(NonLocalBlock(in_planes, **(nonlocal_kwargs or {})))
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = n
        self.num_features = in_planes
        self.num_classes = num_classes
        self.head = create_head(head, in_planes, num_classes, drop_rate=drop_rate)
        self.temporal_stride = self.stem.stride[0] * math.prod(
            _downsample_stride(conv_makers[i], tuple(strides[i]))[0] for i in range(n)
        )
        self.spatial_stride = self.stem.stride[1] * math.prod(
            _downsample_stride(conv_makers[i], tuple(strides[i]))[1] for i in range(n)
        )
        self.default_cfg = {"mean": KINETICS_MEAN, "std": KINETICS_STD, "input_size": (3, 16, 112, 112)}
        _init_backbone(self)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2[1].weight)
        if temporal_padding not in ("zeros", "replicate"):
            raise ValueError(f"temporal_padding must be zeros or replicate, got {temporal_padding!r}")
        for m in self.modules():
            pure_temporal = (isinstance(m, nn.Conv3d) and m.padding[0] > 0 and not any(m.padding[1:])) or (
                isinstance(m, nn.Conv1d) and m.padding[0] > 0
            )
            if pure_temporal:
                m.padding_mode = temporal_padding

    # --- forward ---------------------------------------------------------------------------

    def stages(self) -> list[nn.Module]:
        """``[layer1, ..., layerN]``."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: Tensor) -> Tensor:
        """Clip ``(B, C, T, H, W)`` -> feature map ``(B, num_features, T', H', W')``.

        ``T' = ceil(T / temporal_stride)``, ``H' = ceil(H / spatial_stride)``.
        """
        check_video(x, self.in_chans, type(self).__name__)
        if self.input_mode == "diff":
            x = frame_differences(x)
        x = self.stem(x)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, feats: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map -> logits ``(B, num_classes)`` (or pooled features with ``pre_logits``)."""
        return self.head(feats, pre_logits=pre_logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def frame_weights(self, x: Tensor, *, return_logits: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """One weight per INPUT frame saying how much that frame decides the prediction.

        With ``head="attn"`` these are the attention-pooling weights (softmax over the
        ``T'`` feature time steps; class-agnostic). With ``head="avg"`` or ``"peak"`` they are a
        temporal class-activation map: the softmax over time of each step's logit for
        the predicted class. Either way the ``T'`` step weights are mapped back to the
        ``T`` input frames (each step's weight is shared by the ``temporal_stride``
        frames it covers), so the result sums to 1 over input frames. Frame ``i``'s
        weight localises an event to within ``temporal_stride`` frames.

        Args:
            x: clip ``(B, C, T, H, W)``.
            return_logits: also return the logits from the same forward pass.

        Returns:
            ``(B, T)`` weights, or ``(logits, weights)`` with ``return_logits``.
        """
        feats = self.forward_features(x)
        if isinstance(self.head, AttentionPoolHead):
            logits, step_weights = self.head.forward_with_weights(feats)
        else:
            logits = self.head(feats)
            step_weights = self.head.time_weights(feats)
        weights = expand_time_weights(step_weights, x.shape[2])
        return (logits, weights) if return_logits else weights

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.head.reset_classifier(num_classes)


def _init_backbone(module: nn.Module) -> None:
    """torchvision's VideoResNet init, skipping attention layers (they own their init)."""
    for child in module.children():
        if isinstance(child, (RecordsAttention, nn.Linear)):
            continue  # attention layers (identity init) and the heads' fc (their own init)
        if isinstance(child, nn.Conv3d):
            nn.init.kaiming_normal_(child.weight, mode="fan_out", nonlinearity="relu")
            if child.bias is not None:
                nn.init.zeros_(child.bias)
        elif isinstance(child, nn.BatchNorm3d):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
        _init_backbone(child)


# --- builders ------------------------------------------------------------------------------

_TINY_WIDTHS = (16, 24, 48, 96)
_TINY_STRIDES = ((1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 2, 2))


def _video_resnet(name: str, *, pretrained: bool | str | None = None, **kwargs: Any) -> VideoResNet:
    from ._pretrained import load_pretrained

    num_classes = kwargs.get("num_classes", 400)
    model = VideoResNet(**kwargs)
    model.model_name = name
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "false"):
        pretrained = None  # a config's way of saying "no weights"
    if pretrained:
        load_pretrained(model, name, "torchvision" if pretrained is True else pretrained, num_classes=num_classes)
    return model


def _register(fn: Callable[..., VideoResNet]) -> Callable[..., VideoResNet]:
    # What a builder's **kwargs may hold: VideoResNet's arguments, less the ones each builder fixes.
    fn.accepted_kwargs = keyword_names(  # type: ignore[attr-defined]
        VideoResNet, _video_resnet, exclude=("name", "conv_makers", "layers", "stem")
    )
    return register_model(fn)


@_register
def r3d_18(**kwargs: Any) -> VideoResNet:
    """R3D-18: 3x3x3 convs everywhere. torchvision Kinetics-400 weights: ``pretrained=True``."""
    return _video_resnet("r3d_18", conv_makers=[Conv3DSimple] * 4, layers=(2, 2, 2, 2), stem=BasicStem, **kwargs)


@_register
def mc3_18(**kwargs: Any) -> VideoResNet:
    """MC3-18: 3-D convs in stage 1, per-frame 2-D convs after. torchvision weights available."""
    makers = [Conv3DSimple] + [Conv3DNoTemporal] * 3
    return _video_resnet("mc3_18", conv_makers=makers, layers=(2, 2, 2, 2), stem=BasicStem, **kwargs)


@_register
def r2plus1d_18(**kwargs: Any) -> VideoResNet:
    """R(2+1)D-18: factorised (2+1)D convs. torchvision weights available."""
    return _video_resnet("r2plus1d_18", conv_makers=[Conv2Plus1D] * 4, layers=(2, 2, 2, 2), stem=R2Plus1dStem, **kwargs)


@_register
def r3d_34(**kwargs: Any) -> VideoResNet:
    """R3D-34 (no torchvision weights)."""
    return _video_resnet("r3d_34", conv_makers=[Conv3DSimple] * 4, layers=(3, 4, 6, 3), stem=BasicStem, **kwargs)


@_register
def mc3_34(**kwargs: Any) -> VideoResNet:
    """MC3-34 (no torchvision weights)."""
    makers = [Conv3DSimple] + [Conv3DNoTemporal] * 3
    return _video_resnet("mc3_34", conv_makers=makers, layers=(3, 4, 6, 3), stem=BasicStem, **kwargs)


@_register
def r2plus1d_34(**kwargs: Any) -> VideoResNet:
    """R(2+1)D-34 (no torchvision weights)."""
    return _video_resnet("r2plus1d_34", conv_makers=[Conv2Plus1D] * 4, layers=(3, 4, 6, 3), stem=R2Plus1dStem, **kwargs)


def _tiny(kwargs: dict[str, Any]) -> dict[str, Any]:
    # Tiny CPU variants: one block per stage, narrow, spatial stride 32, no temporal stride
    # (T' = T, so the attention head gives one weight per input frame), attention-pooling head.
    # Replicate temporal padding: their attention head gives key-frame scores, which zero padding skews
    # towards the first and last frames.
    return {"widths": _TINY_WIDTHS, "strides": _TINY_STRIDES, "head": "attn", "temporal_padding": "replicate", **kwargs}


@_register
def r2plus1d_tiny(**kwargs: Any) -> VideoResNet:
    """Tiny R(2+1)D for CPU (tests, the default demo): widths 16-96, no temporal stride, ``head="attn"``."""
    makers = [Conv2Plus1D] * 4
    return _video_resnet("r2plus1d_tiny", conv_makers=makers, layers=(1, 1, 1, 1), stem=R2Plus1dStem, **_tiny(kwargs))


@_register
def r3d_tiny(**kwargs: Any) -> VideoResNet:
    """Tiny R3D for CPU: widths 16-96, no temporal stride, ``head="attn"``."""
    makers = [Conv3DSimple] * 4
    return _video_resnet("r3d_tiny", conv_makers=makers, layers=(1, 1, 1, 1), stem=BasicStem, **_tiny(kwargs))


@_register
def mc3_tiny(**kwargs: Any) -> VideoResNet:
    """Tiny MC3 for CPU: widths 16-96, no temporal stride, ``head="attn"``."""
    makers = [Conv3DSimple] + [Conv3DNoTemporal] * 3
    return _video_resnet("mc3_tiny", conv_makers=makers, layers=(1, 1, 1, 1), stem=BasicStem, **_tiny(kwargs))
