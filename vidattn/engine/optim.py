"""Optimiser, learning-rate schedule, weight EMA and mixup/cutmix for video batches."""

from __future__ import annotations

import math

import torch
from torch import nn

from vidattn.config import OptimConfig
from vidattn.errors import ConfigError

__all__ = [
    "REFERENCE_BATCH_SIZE",
    "param_groups",
    "build_optimizer",
    "scaled_lr",
    "default_lr",
    "cosine_schedule",
    "ModelEma",
    "mix_batch",
]

#: The global batch (clips per optimiser step, over all processes) that ``optim.lr`` is tuned for; other
#: batches scale the learning rate linearly (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
REFERENCE_BATCH_SIZE = 16

#: Peak learning rates (global batch 16) when ``optim.lr`` is unset: from scratch, and fine-tuning pretrained weights.
LR_SCRATCH, LR_PRETRAINED = 6e-3, 6e-4


def default_lr(pretrained: str | None) -> float:
    """The peak learning rate for a model trained from scratch or from `pretrained` weights (a config value)."""
    none = pretrained is None or str(pretrained).strip().lower() in ("", "none", "null", "false")
    return LR_SCRATCH if none else LR_PRETRAINED


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; norms, biases and other 1-D parameters without."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r}; choose adamw or sgd")


def scaled_lr(lr: float, global_batch: int) -> float:
    """``optim.lr`` scaled linearly from `REFERENCE_BATCH_SIZE` to `global_batch` clips per optimiser step."""
    return lr * global_batch / REFERENCE_BATCH_SIZE


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the peak, then cosine decay to ``min_ratio`` of it, stepped per optimiser step."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ModelEma:
    """Exponential moving average of a model's floating-point state (buffers copied as they are)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.state[k].copy_(v)


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup: float, cutmix: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or cutmix (chosen at random when both are on) on ``(B, C, T, H, W)``; returns soft targets.

    Cutmix pastes the same box in every frame, so the pasted clip keeps its motion.
    """
    target = torch.nn.functional.one_hot(y, num_classes).float()
    if (mixup <= 0 and cutmix <= 0) or x.shape[0] < 2:
        return x, target
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(1, generator=generator).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = _beta(alpha, generator)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy = int(torch.randint(0, h, (1,), generator=generator))
        cx = int(torch.randint(0, w, (1,), generator=generator))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * target + (1 - lam) * target[perm]


def _beta(alpha: float, generator: torch.Generator) -> float:
    # Beta(a, a) from two Gammas, drawn with our generator so the run stays reproducible.
    g1 = _gamma(alpha, generator)
    g2 = _gamma(alpha, generator)
    return g1 / (g1 + g2)


def _gamma(alpha: float, generator: torch.Generator) -> float:
    """Marsaglia-Tsang gamma sampler on a torch generator."""
    boost = 1.0
    if alpha < 1:
        boost = torch.rand(1, generator=generator).item() ** (1 / alpha)
        alpha += 1
    d = alpha - 1 / 3
    c = 1 / math.sqrt(9 * d)
    while True:
        z = torch.randn(1, generator=generator).item()
        v = (1 + c * z) ** 3
        if v <= 0:
            continue
        u = torch.rand(1, generator=generator).item()
        if math.log(max(u, 1e-300)) < 0.5 * z * z + d - d * v + d * math.log(v):
            return d * v * boost
