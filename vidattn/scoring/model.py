"""The classifier `vidattn score` runs: a checkpoint's model, batched over uniform views of each video.

Workers decode each video into ``V`` uniform views at the model's clip length, stride and size
(the ``data`` section of the checkpoint's training `Config`); the main process stacks a batch of
them, runs the model on the device, in the precision it was trained in, and averages the class
probabilities over the views and, as ``data.test_flip`` says, their mirror images (as `vidattn eval` does).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vidattn.engine.modeling import view_probs

if TYPE_CHECKING:
    from vidattn.config import Config, DataConfig

__all__ = ["Classifier", "load_classifier", "checkpoint_tag"]


def checkpoint_tag(path: str | os.PathLike, model_name: str) -> str:
    """``"<model name>@<file name>:<sha256 prefix>"``: which weights scored a row (also the resume key)."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{model_name}@{path.name}:{digest.hexdigest()[:12]}"


class Classifier:
    """A model and its class names, batched: uint8 views in, the top-k averaged class probabilities out.

    Args:
        net: the model, in eval mode on `device`.
        classes: class names in output order.
        data: the training data config: clip_len, stride, size and crop_size of the clips it expects.
        tag: `checkpoint_tag` of its weights.
        device: where the model runs.
        topk: labels returned per video (at most the number of classes).
        amp: precision, as `vidattn.engine.modeling.amp_mode` gives it ("off", "bf16", "fp16").
        mirror: also read each view as its mirror image (`vidattn.engine.modeling.view_probs`); None = not.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        classes: list[str],
        data: DataConfig,
        tag: str,
        device: torch.device,
        topk: int = 5,
        amp: str = "off",
        mirror: list[int] | None = None,
    ) -> None:
        from vidattn.data.transforms import VideoTransform

        self.net, self.classes, self.data, self.tag, self.device, self.amp = net, classes, data, tag, device, amp
        self.topk, self.mirror = max(1, min(topk, len(classes))), mirror
        self.transform = VideoTransform(data.crop_size, train=False).to(device)

    @classmethod
    def from_loaded(
        cls,
        net: torch.nn.Module,
        classes: list[str],
        cfg: Config,
        checkpoint: str | os.PathLike,
        device: torch.device,
        topk: int = 5,
    ) -> Classifier:
        """The classifier of a checkpoint `load_model` rebuilt (the one place that reads its config): in the
        precision it was trained in, with the mirror views ``data.test_flip`` asks for."""
        from vidattn.data.transforms import flip_mirror
        from vidattn.engine.modeling import amp_mode

        mirror, _ = flip_mirror(cfg.data.test_flip, classes)
        tag = checkpoint_tag(checkpoint, cfg.model.name)
        return cls(net, classes, cfg.data, tag, device, topk, amp=amp_mode(cfg.train.amp, device), mirror=mirror)

    @torch.inference_mode()
    def __call__(self, videos: list[torch.Tensor]) -> list[list[tuple[str, float]]]:
        batch = torch.stack(videos).to(self.device, non_blocking=True)  # (B, V, T, S, S, C) uint8
        v = batch.shape[1]
        x = self.transform(batch).flatten(0, 1)  # (B*V, C, T, S, S)
        probs = view_probs(self.net, x, v, self.amp, self.mirror)  # views averaged
        top = probs.topk(self.topk, dim=-1)
        return [
            [(self.classes[int(i)], round(float(p), 6)) for p, i in zip(ps, idx, strict=True)]
            for ps, idx in zip(top.values.cpu(), top.indices.cpu(), strict=True)
        ]


def load_classifier(checkpoint: str | os.PathLike, device: torch.device, topk: int = 5) -> Classifier:
    """Rebuild a `vidattn train` checkpoint's classifier on `device`."""
    from vidattn.engine.checkpoint import load_model

    net, classes, cfg = load_model(checkpoint, device)
    return Classifier.from_loaded(net, classes, cfg, checkpoint, device, topk)
