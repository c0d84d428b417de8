"""What a config says about the network: its construction and the precision it runs in.

One `build_model` and one `amp_mode` serve training, `vidattn eval`, key frames and archive scoring,
so a checkpoint is rebuilt and run exactly as it was trained (`checkpoint.load_model` uses both).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from vidattn.config import Config

__all__ = ["amp_mode", "autocast_for", "build_model", "view_probs"]


def build_model(cfg: Config, num_classes: int, *, pretrained: bool = True) -> nn.Module:
    """The network ``cfg.model`` describes, with `num_classes` outputs.

    Args:
        cfg: the config (only its ``model`` section is read).
        num_classes: classifier outputs.
        pretrained: load ``model.pretrained`` weights; off when a checkpoint's weights replace them anyway.
    """
    from vidattn.models import create_model

    m = cfg.model
    return create_model(
        m.name,
        num_classes=num_classes,
        attn=None if m.attn in (None, "none", "") else m.attn,
        head=m.head,
        drop_rate=m.dropout,
        pretrained=m.pretrained if pretrained else None,
        input_mode=m.input,
        **(m.kwargs or {}),
    )


def amp_mode(amp: str, device: torch.device) -> str:
    """The mixed precision ``train.amp`` means on `device`: "off", "bf16" or "fp16".

    ``auto`` is bf16 on GPUs that support it, fp16 on older ones and off on the CPU.
    """
    if amp != "auto":
        return amp
    if device.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast_for(device: torch.device, amp: str) -> AbstractContextManager:
    """An autocast context for `amp` ("off", "bf16", "fp16") on `device`."""
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def view_probs(
    model: nn.Module, x: torch.Tensor, views: int, amp: str = "off", mirror: Sequence[int] | None = None
) -> torch.Tensor:
    """Each video's class probabilities: the softmax of its views' logits, averaged over the views.

    Args:
        model: the network, in eval mode.
        x: ``(B * views, C, T, H, W)`` model input, the views of a video next to each other.
        views: views per video.
        amp: the precision to run in (`amp_mode`).
        mirror: also read every view as its mirror image (flipped left to right) and average those too, a
            flipped view's probability of class ``mirror[k]`` counting for class ``k`` (`data.flip_mirror`).

    Returns:
        ``(B, num_classes)`` float probabilities.
    """
    with autocast_for(x.device, amp):
        logits = model(x)
    probs = logits.float().softmax(-1).view(-1, views, logits.shape[-1])
    if mirror is not None:
        with autocast_for(x.device, amp):
            flipped = model(x.flip(-1))
        mirrored = flipped.float().softmax(-1).view_as(probs)[..., list(mirror)]
        probs = torch.cat([probs, mirrored], 1)
    return probs.mean(1)
