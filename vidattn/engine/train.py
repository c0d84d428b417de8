"""The training loop behind `vidattn train`.

One function, `train(cfg, run_dir)`, runs single-process or under torchrun (DDP; nccl on GPUs,
gloo on CPU; only rank 0 writes). Per epoch it logs one JSON line to ``metrics.jsonl`` and to
TensorBoard, splitting step time into data wait and compute, and saves ``checkpoints/last.pt``
(and ``best.pt`` by validation top-1) atomically. A checkpoint holds everything `--resume`
needs to continue exactly: model, optimiser, schedule, scaler, EMA, epoch, RNG states, config.
Every random choice depends on (seed, epoch, step), so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidattn._io import atomic_write_text, ensure_output_dir, writing_to
from vidattn.config import Config, dump_config, resume_changes
from vidattn.data import (
    EpochSampler,
    ErrorsManifest,
    RandomClipSampler,
    SegmentSampler,
    VideoDataset,
    VideoTransform,
    build_loader,
    load_annotations,
    save_classes,
)
from vidattn.engine.checkpoint import FORMAT, atomic_save, checkpoint_config, load_checkpoint
from vidattn.engine.distributed import DistInfo, all_gather_objects, barrier, init_distributed
from vidattn.engine.evaluate import autocast_for, eval_dataset, evaluate
from vidattn.engine.optim import ModelEma, build_optimizer, cosine_schedule, mix_batch
from vidattn.errors import ConfigError, VidattnError

__all__ = ["TrainingDiverged", "build_model", "default_run_dir", "prepare_data_root", "saved_config", "train"]


class TrainingDiverged(VidattnError):
    """The loss became NaN or infinite."""


def prepare_data_root(cfg: Config, run_dir: Path, info: DistInfo) -> str:
    """The dataset root; with no root configured, generate the synthetic default into the run dir."""
    if cfg.data.root:
        if not Path(cfg.data.root).exists():
            raise ConfigError(f"data root {cfg.data.root} does not exist")
        return str(Path(cfg.data.root).resolve())
    from vidattn.data.synthetic import generate_dataset

    root = run_dir / "data"
    if info.is_main:
        _log(info, f"generating synthetic default data into {root}")
        generate_dataset(
            root, per_class=cfg.data.synth_per_class, val_per_class=cfg.data.synth_val_per_class, seed=cfg.train.seed
        )
    barrier()
    return str(root)


def _log(info: DistInfo, msg: str) -> None:
    if info.is_main:
        print(msg, file=sys.stderr, flush=True)


def _amp_mode(cfg: Config, device: torch.device) -> str:
    mode = cfg.train.amp
    if mode == "auto":
        if device.type != "cuda":
            return "off"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode not in ("off", "bf16", "fp16"):
        raise ConfigError(f"train.amp must be auto, off, bf16 or fp16, got {mode!r}")
    return mode


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": json.dumps(_np_state()), "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _np_state() -> list:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = json.loads(state["numpy"])
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def saved_config(run_dir: str | Path) -> Config:
    """The config the run in `run_dir` was trained with (from ``checkpoints/last.pt``): what `--resume` continues.

    Raises:
        ConfigError: there is no checkpoint to resume from.
    """
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if not last.is_file():
        raise ConfigError(f"--resume: no checkpoint at {last}")
    return checkpoint_config(load_checkpoint(last, mmap=True), last)


def default_run_dir() -> Path:
    """``runs/train-<timestamp>``; under torchrun every rank derives the same name from the run id."""
    import os

    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and run_id:
        return Path("runs") / f"train-{run_id}"
    return Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    from vidattn.models import create_model

    m = cfg.model
    attn = None if m.attn in (None, "none", "") else m.attn
    return create_model(
        m.name,
        num_classes=num_classes,
        attn=attn,
        head=m.head,
        drop_rate=m.dropout,
        pretrained=m.pretrained,
        **(m.kwargs or {}),
    )


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train (and validate) as configured; returns the last epoch's metrics."""
    run_dir = Path(run_dir).resolve()
    info = init_distributed(cfg.train.device)
    threads = cfg.train.threads
    if threads is None and info.device.type == "cpu":
        # Leave a core per decoding worker: oversubscribed OpenMP threads slow CPU training several-fold.
        threads = max(1, (os.cpu_count() or 1) // info.world_size - cfg.data.num_workers)
    if threads:
        torch.set_num_threads(threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    _seed_all(cfg.train.seed + info.rank)
    device = info.device
    amp = _amp_mode(cfg, device)
    ckpt_dir = run_dir / "checkpoints"
    last_path = ckpt_dir / "last.pt"
    if last_path.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not last_path.exists():
        raise ConfigError(f"--resume: no checkpoint at {last_path}")
    if info.is_main:
        ensure_output_dir(run_dir)  # a read-only or unwritable --out fails now, not at the first save
    ckpt = None
    if resume:
        # The run continues only on the data and the model it was trained with; what may change is printed.
        ckpt = load_checkpoint(last_path, map_location=device)
        requested = cfg.copy()
        requested.data.root = requested.data.root or str(run_dir / "data")
        for key, old, new in resume_changes(checkpoint_config(ckpt, last_path), requested, run=str(run_dir)):
            _log(info, f"resume: {key} {old!r} -> {new!r}")
    barrier()

    # -- data ------------------------------------------------------------------------------------
    root = prepare_data_root(cfg, run_dir, info)
    d = cfg.data
    train_records, classes = load_annotations(root, "train", fmt=d.format, ann_file=d.train_ann, split_id=d.split_id)
    if not train_records:
        raise ConfigError(f"{root}: no training videos found")
    if d.sampler == "segment":
        sampler = SegmentSampler(d.clip_len, random=True, short=d.short)
    elif d.sampler == "random":
        sampler = RandomClipSampler(d.clip_len, d.stride, short=d.short)
    else:
        raise ConfigError(f"data.sampler must be random or segment, got {d.sampler!r}")
    train_ds = VideoDataset(
        train_records,
        classes,
        sampler,
        size=d.size,
        crop="random",
        seed=cfg.train.seed,
        backend=d.backend,
        cache_mb=d.cache_mb,
    )
    epoch_sampler = EpochSampler(
        len(train_ds), shuffle=True, seed=cfg.train.seed, rank=info.rank, world_size=info.world_size
    )
    train_loader = build_loader(
        train_ds,
        cfg.train.batch_size,
        sampler=epoch_sampler,
        num_workers=d.num_workers,
        drop_last=len(train_ds) >= 2 * cfg.train.batch_size * info.world_size,
    )
    val_loader = None
    if info.is_main:
        val_ds = eval_dataset(d, root, classes, "val", seed=cfg.train.seed)
        val_loader = build_loader(val_ds, cfg.train.eval_batch_size, num_workers=d.num_workers) if len(val_ds) else None
        resolved = cfg.to_dict()
        resolved["data"]["root"] = root
        with writing_to(run_dir):
            save_classes(classes, run_dir / "classes.json")
            atomic_write_text(run_dir / "config.yaml", dump_config(Config.from_dict(resolved)))

    # -- model, optimiser ------------------------------------------------------------------------
    model = build_model(cfg, len(classes))
    if cfg.train.sync_bn and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    steps_per_epoch = (
        len(train_loader)
        if cfg.train.max_steps_per_epoch is None
        else min(len(train_loader), cfg.train.max_steps_per_epoch)
    )
    opt_steps_per_epoch = max(1, steps_per_epoch // cfg.optim.accum_steps)
    total_steps = opt_steps_per_epoch * cfg.train.epochs
    lr = cfg.optim.lr * cfg.train.batch_size * info.world_size * cfg.optim.accum_steps / 16  # linear scaling rule
    optimizer = build_optimizer(model, cfg.optim, lr)
    scheduler = cosine_schedule(
        optimizer, total_steps, int(cfg.optim.warmup_epochs * opt_steps_per_epoch), cfg.optim.min_lr_ratio
    )
    scaler = torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))
    ema = ModelEma(model, cfg.optim.ema) if cfg.optim.ema else None
    start_epoch, best_top1 = 0, -1.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.state = ckpt["ema"]
        start_epoch, best_top1 = ckpt["epoch"] + 1, ckpt.get("best_top1", -1.0)
        _set_rng_state(ckpt["rng"][info.rank] if isinstance(ckpt["rng"], list) else ckpt["rng"])
        if info.is_main:
            with writing_to(run_dir):
                _reconcile_metrics(run_dir / "metrics.jsonl", ckpt.get("metrics") or {}, start_epoch)
        _log(info, f"resumed from {last_path} at epoch {start_epoch}")
    train_model: nn.Module = model
    if cfg.train.compile:
        train_model = torch.compile(model)
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    transform_train = VideoTransform(d.crop_size, train=True, scale=d.scale, flip=d.flip).to(device)
    step_state = _StepState(
        cfg=cfg,
        info=info,
        model=model,
        train_model=train_model,
        transform=transform_train,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        ema=ema,
        amp=amp,
        num_classes=len(classes),
        last_path=last_path,
    )
    transform_eval = VideoTransform(d.crop_size, train=False).to(device)
    manifest = ErrorsManifest(run_dir / "errors.jsonl" if info.is_main else None)
    writer = _tensorboard(run_dir) if info.is_main else None
    metrics: dict[str, Any] = {}
    _log(info, f"run directory: {run_dir}")
    _log(
        info,
        f"{len(train_records)} training videos, {len(classes)} classes, model {cfg.model.name} "
        f"(attn={cfg.model.attn}), device {device}, amp {amp}, world size {info.world_size}",
    )

    for epoch in range(start_epoch, cfg.train.epochs):
        epoch_sampler.set_epoch(epoch)
        stats = _train_epoch(step_state, train_loader, epoch, steps_per_epoch)
        errors = [e for part in all_gather_objects(stats.pop("errors")) for e in part]
        with writing_to(run_dir):
            new_errors = manifest.record(errors, epoch=epoch, stage="train")
        metrics = {"epoch": epoch + 1, **stats, "lr": scheduler.get_last_lr()[0], "train_errors": len(errors)}
        if (
            info.is_main
            and val_loader is not None
            and ((epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs)
        ):
            eval_model = model
            if ema is not None:
                eval_model = build_model(cfg, len(classes)).to(device)
                eval_model.load_state_dict(ema.state)
            val, _ = evaluate(
                eval_model, val_loader, transform_eval, device, classes, amp=amp, manifest=manifest, epoch=epoch
            )
            metrics.update(
                {
                    "val_top1": val["top1"],
                    "val_top5": val["top5"],
                    "val_videos": val["num_videos"],
                    "val_errors": val["errors"],
                }
            )
        if info.is_main:
            improved = metrics.get("val_top1", -1.0) > best_top1
            best_top1 = max(best_top1, metrics.get("val_top1", -1.0))
            metrics["best_val_top1"] = best_top1
            rng = all_gather_objects(_rng_state())
            state = _checkpoint_state(
                cfg, model, optimizer, scheduler, scaler, ema, epoch, best_top1, classes, metrics, rng, root
            )
            # best.pt before last.pt: a run killed in between redoes this epoch (deterministically) on resume.
            # metrics.jsonl after both; `_reconcile_metrics` restores a line lost to a kill in between.
            with writing_to(run_dir):  # a full disk: one line, and the last good checkpoint is kept
                if improved:
                    atomic_save(state, ckpt_dir / "best.pt")
                atomic_save(state, last_path)
                with (run_dir / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(metrics) + "\n")
            if writer is not None:
                for key, value in metrics.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        writer.add_scalar(key, value, epoch + 1)
                writer.flush()
            summary = (
                f"epoch {epoch + 1}/{cfg.train.epochs}: loss {metrics['loss']:.4f}, "
                f"train top1 {metrics['train_top1']:.3f}"
            )
            if "val_top1" in metrics:
                summary += f", val top1 {metrics['val_top1']:.3f} (best {best_top1:.3f})"
            summary += (
                f", {metrics['clips_per_s']:.1f} clips/s, data wait {metrics['data_s']:.1f}s / compute "
                f"{metrics['compute_s']:.1f}s"
            )
            if new_errors or metrics.get("val_errors"):
                summary += f", skipped {len(errors)} unreadable training video(s) (see {manifest.path})"
            _log(info, summary)
        else:
            all_gather_objects(_rng_state())
        barrier()
    if writer is not None:
        writer.close()
    _log(info, f"done: run directory {run_dir}")
    return metrics


def _checkpoint_state(cfg, model, optimizer, scheduler, scaler, ema, epoch, best_top1, classes, metrics, rng, root):
    config = cfg.to_dict()
    config["data"]["root"] = root
    return {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "ema": {k: v.cpu() for k, v in ema.state.items()} if ema is not None else None,
        "epoch": epoch,
        "best_top1": best_top1,
        "classes": list(classes),
        "config": config,
        "metrics": metrics,
        "rng": rng,
    }


def _reconcile_metrics(path: Path, last: dict[str, Any], epochs_done: int) -> None:
    """Make ``metrics.jsonl`` hold exactly one line per finished epoch (1..epochs_done) before resuming.

    A kill can land after the checkpoint of an epoch is saved and before its metrics line is written
    (the line is then restored from the checkpoint), and a torn last line is dropped. Rewritten
    atomically.
    """
    rows: dict[int, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if isinstance(row, dict) and isinstance(row.get("epoch"), int) and 1 <= row["epoch"] <= epochs_done:
                rows[row["epoch"]] = line
    if last.get("epoch") == epochs_done and epochs_done not in rows:
        rows[epochs_done] = json.dumps(last)
    atomic_write_text(path, "".join(rows[e] + "\n" for e in sorted(rows)))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: metrics.jsonl still has everything
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


@dataclass
class _StepState:
    """What one optimisation step needs, fixed for the whole run."""

    cfg: Config
    info: DistInfo
    model: nn.Module  # the bare model (EMA, gradient clipping)
    train_model: nn.Module  # what the step calls: the model, compiled and/or wrapped in DDP
    transform: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    amp: str
    num_classes: int
    last_path: Path  # named in the error when the loss diverges


def _train_epoch(state: _StepState, loader: Any, epoch: int, steps: int) -> dict[str, Any]:
    cfg, info, model, train_model, transform = state.cfg, state.info, state.model, state.train_model, state.transform
    optimizer, scheduler, scaler, ema, amp = state.optimizer, state.scheduler, state.scaler, state.ema, state.amp
    num_classes, last_path = state.num_classes, state.last_path
    train_model.train()
    device = info.device
    gen = torch.Generator(device="cpu").manual_seed(cfg.train.seed * 1_000_003 + epoch * 7919 + info.rank)
    accum = cfg.optim.accum_steps
    loss_sum, correct, seen, data_s, compute_s = 0.0, 0, 0, 0.0, 0.0
    errors: list[dict] = []
    bar = None
    if info.is_main and cfg.train.progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(
            total=steps, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True, file=sys.stderr
        )
    optimizer.zero_grad(set_to_none=True)
    tick = time.perf_counter()
    start = tick
    for step, batch in enumerate(loader):
        if step >= steps:
            break
        t_data = time.perf_counter()
        data_s += t_data - tick
        errors += batch["errors"]
        if len(batch["label"]):
            video = batch["video"][:, 0].to(device, non_blocking=True)  # (B, T, S, S, C): one view in training
            y = batch["label"].to(device, non_blocking=True)
            x = transform(video, generator=gen)
            if cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            x, target = mix_batch(x, y, num_classes, cfg.optim.mixup, cfg.optim.cutmix, gen)
            with autocast_for(device, amp):
                logits = train_model(x)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.optim.label_smoothing)
            if not torch.isfinite(loss):
                kept = f"; the last good checkpoint is kept at {last_path}" if last_path.exists() else ""
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}"
                    f" (try a lower optim.lr or train.amp=off){kept}"
                )
            scaler.scale(loss / accum).backward()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        if (step + 1) % accum == 0 or step + 1 == steps:
            if cfg.optim.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update(model)
        tick = time.perf_counter()
        compute_s += tick - t_data
        if bar is not None:
            bar.update(1)
            elapsed = tick - start
            bar.set_postfix(
                loss=f"{loss_sum / max(seen, 1):.3f}", clips_s=f"{seen * info.world_size / max(elapsed, 1e-9):.1f}"
            )
    if bar is not None:
        bar.close()
    totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
    if info.distributed:
        import torch.distributed as dist

        dist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    elapsed = time.perf_counter() - start
    return {
        "loss": loss_sum / max(seen, 1),
        "train_top1": correct / max(seen, 1),
        "clips": int(seen),
        "clips_per_s": seen / max(elapsed, 1e-9),
        "data_s": data_s,
        "compute_s": compute_s,
        "epoch_s": elapsed,
        "errors": errors,
    }
