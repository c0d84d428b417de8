"""Classification metrics from accumulated video-level scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["ClassificationMeter"]


class ClassificationMeter:
    """Accumulates per-video class probabilities and labels; reports top-1/top-5, per-class accuracy
    and the confusion matrix. Accuracies are fractions in [0, 1]."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.probs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.paths: list[str] = []

    def update(self, probs: torch.Tensor, labels: torch.Tensor, paths: Sequence[str] = ()) -> None:
        self.probs.append(probs.detach().float().cpu())
        self.labels.append(labels.detach().cpu())
        self.paths.extend(paths)

    def merge(self, other: ClassificationMeter) -> None:
        self.probs += other.probs
        self.labels += other.labels
        self.paths += other.paths

    @property
    def num_videos(self) -> int:
        return sum(len(lab) for lab in self.labels)

    def confusion(self) -> torch.Tensor:
        """``(K, K)`` counts, rows = true class, columns = predicted class."""
        k = len(self.classes)
        cm = torch.zeros(k, k, dtype=torch.long)
        if self.num_videos:
            pred = torch.cat(self.probs).argmax(1)
            true = torch.cat(self.labels)
            cm.index_put_((true, pred), torch.ones_like(true), accumulate=True)
        return cm

    def compute(self) -> dict[str, Any]:
        n = self.num_videos
        if n == 0:
            return {"top1": 0.0, "top5": 0.0, "num_videos": 0, "per_class": {c: 0.0 for c in self.classes}}
        probs, labels = torch.cat(self.probs), torch.cat(self.labels)
        k = min(5, probs.shape[1])
        topk = probs.topk(k, dim=1).indices
        top1 = (topk[:, 0] == labels).float().mean().item()
        top5 = (topk == labels[:, None]).any(1).float().mean().item()
        cm = self.confusion()
        per_class = {}
        for i, name in enumerate(self.classes):
            total = int(cm[i].sum())
            per_class[name] = float(cm[i, i]) / total if total else None
        return {"top1": top1, "top5": top5, "num_videos": n, "per_class": per_class}
