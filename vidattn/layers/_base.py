"""Shared contract of the vidattn attention layers.

Every layer maps a video feature map ``(B, C, T, H, W)`` to a tensor of the same shape
(hard attention in ``output="gather"`` mode is the one exception: it keeps ``k`` frames),
takes ``channels`` as its first argument, checks its input, and records the weights it
computes (see :mod:`vidattn.layers._capture`).

Gates and identity at initialisation: a gating layer computes logits ``z`` and weights
``w = sigmoid(z)`` in [0, 1]. With ``identity_init=True`` (the default) the last
layer producing ``z`` is zero-initialised and the output is ``x * 2 * w``, so at step 0
``w = 0.5`` and the layer is exactly the identity: pretrained weights keep their
behaviour. The recorded weights are always ``w`` in [0, 1]; the factor 2 lets a gate
amplify as well as suppress. With ``identity_init=False`` the layer is the classic
``x * w`` with default initialisation.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from vidattn.errors import VidattnError

from ._capture import RecordsAttention

__all__ = ["AttentionLayer", "GatingAttention", "ShapeError", "check_video", "make_divisible_hidden"]


class ShapeError(VidattnError, ValueError):
    """An input tensor has the wrong rank or channel count for a layer or model."""


def check_video(x: Tensor, channels: int | None, where: str) -> None:
    """Raise :class:`ShapeError` unless ``x`` is ``(B, C, T, H, W)`` with ``C == channels``.

    Args:
        x: the tensor to check.
        channels: the expected channel count, or None to skip that check.
        where: the layer or model name for the message.
    """
    if x.ndim != 5:
        raise ShapeError(f"{where}: expected a video tensor (B, C, T, H, W), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ShapeError(f"{where}: expected {channels} channels, got {x.shape[1]} (input shape {tuple(x.shape)})")


def make_divisible_hidden(channels: int, reduction: int, min_hidden: int = 4) -> int:
    """Bottleneck width ``channels / reduction``, at least ``min_hidden`` (tiny models need a floor)."""
    return max(min_hidden, int(round(channels / reduction)))


class AttentionLayer(RecordsAttention, nn.Module):
    """Base class: stores ``channels``, checks inputs, applies sigmoid gates.

    Args:
        channels: number of input channels ``C``.
        identity_init: start as the exact identity (see the module docstring).
    """

    def __init__(self, channels: int, *, identity_init: bool = True) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"{type(self).__name__}: channels must be >= 1, got {channels}")
        self.channels = channels
        self.identity_init = identity_init
        # x * 2 * sigmoid(0) == x exactly; see the module docstring.
        self.gate_scale = 2.0 if identity_init else 1.0

    def _check(self, x: Tensor) -> None:
        check_video(x, self.channels, type(self).__name__)

    def gate_from_logits(self, logits: Tensor, record_pattern: str | None = None) -> Tensor:
        """Turn logits into the multiplier ``gate_scale * sigmoid(logits)``.

        Args:
            logits: gate logits, broadcastable to the input.
            record_pattern: einops pattern that turns the broadcast-shaped weights into
                the documented recorded shape (e.g. ``"b c 1 1 1 -> b c"``).
        """
        w = logits.sigmoid()
        if self.is_recording:
            self._record(rearrange(w, record_pattern) if record_pattern else w)
        return w * self.gate_scale if self.gate_scale != 1.0 else w

    def extra_repr(self) -> str:
        return f"channels={self.channels}, identity_init={self.identity_init}"


class GatingAttention(AttentionLayer):
    """A layer that re-weights its input by a multiplier: ``x * gate(x)`` (timm's SE / CBAM shape).

    Subclasses implement only `gate`; keeping the multiplier separate from `forward` lets a
    composite (STC) combine the gates of several layers in one product.
    """

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return x * self.gate(x)

    def gate(self, x: Tensor) -> Tensor:
        """The multiplier for ``x`` (broadcastable to it); records the weights."""
        raise NotImplementedError(f"{type(self).__name__} must implement gate()")


def build_frame_scorer(
    layer: nn.Module, channels: int, reduction: int, min_hidden: int, kernel_size: int, identity_init: bool
) -> None:
    """Give `layer` the 1-D per-frame scorer ``conv2(relu(conv1(mean_hw(x))))`` over T (see `frame_scores`).

    The modules are set as ``layer.conv1``, ``layer.act`` and ``layer.conv2`` (the state-dict keys of the
    temporal gate and of hard temporal attention); with `identity_init` the scores start at zero.
    """
    hidden = make_divisible_hidden(channels, reduction, min_hidden)
    layer.conv1 = nn.Conv1d(channels, hidden, kernel_size, padding=kernel_size // 2)
    layer.act = nn.ReLU(inplace=True)
    layer.conv2 = nn.Conv1d(hidden, 1, kernel_size, padding=kernel_size // 2)
    if identity_init:
        nn.init.zeros_(layer.conv2.weight)
        nn.init.zeros_(layer.conv2.bias)


def frame_scores(layer: nn.Module, x: Tensor) -> Tensor:
    """Per-frame logits ``(B, T)`` of a video ``(B, C, T, H, W)`` from `build_frame_scorer`'s modules."""
    return layer.conv2(layer.act(layer.conv1(x.mean((3, 4))))).squeeze(1)
