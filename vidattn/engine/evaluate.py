"""Video-level evaluation with multi-view testing, and the `vidattn eval` job."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vidattn._io import atomic_write_text, ensure_output_dir, writing_to
from vidattn.config import DataConfig
from vidattn.data import (
    ClipSampler,
    ErrorsManifest,
    VideoDataset,
    VideoTransform,
    build_loader,
    flip_mirror,
    load_annotations,
    sampler_for,
)
from vidattn.engine.metrics import ClassificationMeter
from vidattn.engine.modeling import amp_mode, view_probs
from vidattn.errors import ConfigError, VidattnError

__all__ = ["clip_sampler", "eval_dataset", "evaluate", "run_eval"]


def clip_sampler(data: DataConfig, *, train: bool, views: int | None = None) -> ClipSampler:
    """The clip sampler ``data.sampler`` names, for training (random clips) or testing (`views` views, by default
    ``data.test_clips``; 1 while that is unset).

    The one place training, validation and `vidattn eval` get their samplers from (`sampler_for` maps the
    names: auto = whole-video coverage, segment = TSN, random = one dense clip / uniform test clips).
    """
    try:
        return sampler_for(
            data.sampler,
            clip_len=data.clip_len,
            stride=data.stride,
            train=train,
            num_clips=views or data.test_clips or 1,
            snippet=data.snippet,
            short=data.short,
        )
    except VidattnError as exc:
        raise ConfigError(str(exc)) from None


def eval_dataset(
    data: DataConfig, root: str, classes: list[str], split: str = "val", seed: int = 0, views: int | None = None
) -> VideoDataset:
    """The evaluation dataset: `views` (default ``data.test_clips``) temporal x `test_crops` spatial views per video."""
    ann = data.val_ann if split != "train" else data.train_ann
    records, _ = load_annotations(root, split, fmt=data.format, ann_file=ann, split_id=data.split_id, classes=classes)
    crop = "three" if data.test_crops == 3 else "center"
    return VideoDataset(
        records,
        classes,
        clip_sampler(data, train=False, views=views),
        size=data.size,
        crop=crop,
        seed=seed,
        backend=data.backend,
        cache_mb=data.cache_mb,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    transform: VideoTransform,
    device: torch.device,
    classes: list[str],
    *,
    amp: str = "off",
    manifest: ErrorsManifest | None = None,
    progress: bool = False,
    mirror: Sequence[int] | None = None,
    **context: Any,
) -> tuple[dict[str, Any], ClassificationMeter]:
    """Average softmax scores over each video's views (and with `mirror` their mirror images, `view_probs`);
    returns the metrics and the meter."""
    model.eval()
    meter = ClassificationMeter(classes)
    errors: list[dict] = []
    iterator = loader
    if progress:
        from tqdm import tqdm

        iterator = tqdm(loader, desc="eval", leave=False, dynamic_ncols=True)
    for batch in iterator:
        errors += batch["errors"]
        if not len(batch["label"]):
            continue
        video = batch["video"].to(device, non_blocking=True)  # (B, V, T, S, S, C) uint8
        x = transform(video).flatten(0, 1)  # (B*V, C, T, S, S)
        probs = view_probs(model, x, video.shape[1], amp, mirror)
        meter.update(probs, batch["label"], batch["path"])
    if manifest is not None:
        manifest.record(errors, stage="eval", **context)
    metrics = meter.compute()
    metrics["errors"] = len({e["path"] for e in errors})
    return metrics, meter


def run_eval(
    checkpoint: str | os.PathLike,
    *,
    data_root: str | None = None,
    split: str = "val",
    device: str = "auto",
    out_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """`vidattn eval`: rebuild the model, evaluate a split, write metrics, confusion PNG and errors.

    Outputs go to `out_dir` (default: ``<run dir>/eval-<split>/``, next to ``checkpoints/``).
    """
    from vidattn.engine.checkpoint import load_model
    from vidattn.engine.distributed import resolve_device

    dev = resolve_device(device)
    model, classes, cfg = load_model(checkpoint, dev)
    ckpt_path = Path(checkpoint).resolve()
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    out = ensure_output_dir(out_dir if out_dir is not None else run_dir / f"eval-{split}")
    root = data_root or cfg.data.root or _default_data_root(run_dir)
    if root is None:
        raise ConfigError("no data root: pass --data-root (the checkpoint's config has none)")
    ds = eval_dataset(cfg.data, root, classes, split, seed=cfg.train.seed)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    loader = build_loader(ds, batch_size or cfg.train.eval_batch_size, num_workers=workers, persistent_workers=False)
    manifest = ErrorsManifest(out / "errors.jsonl")
    transform = VideoTransform(cfg.data.crop_size, train=False).to(dev)
    amp = amp_mode(cfg.train.amp, dev)  # as in training, so the validation accuracy is reproduced
    mirror, _ = flip_mirror(cfg.data.test_flip, classes)
    metrics, meter = evaluate(
        model, loader, transform, dev, classes, amp=amp, manifest=manifest, progress=progress, mirror=mirror
    )
    with writing_to(out):
        metrics["checkpoint"] = str(ckpt_path)
        metrics["split"] = split
        metrics["amp"] = amp
        metrics["views"] = {"clips": cfg.data.test_clips or 1, "crops": cfg.data.test_crops, "flip": mirror is not None}
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        from vidattn.viz import plot_confusion

        plot_confusion(meter.confusion(), classes, out / "confusion.png")
    metrics["out_dir"] = str(out)
    return metrics


def _default_data_root(run_dir: Path) -> str | None:
    data = run_dir / "data"
    return str(data) if data.is_dir() else None
