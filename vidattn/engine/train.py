"""The training loop behind `vidattn train`.

One function, `train(cfg, run_dir)`, runs single-process or under torchrun (DDP; nccl on GPUs,
gloo on CPU; only rank 0 writes). It reads in one pass: prepare the run (`_prepare_run`), build the
datasets (`_build_data`) and the model with its optimiser (`_build_trainer`), then loop over the
epochs: train, validate, save and log. Per epoch it logs one JSON line to ``metrics.jsonl`` and to
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
    VideoDataset,
    VideoTransform,
    build_loader,
    flip_mirror,
    load_annotations,
    make_rng,
    save_classes,
)
from vidattn.engine.checkpoint import FORMAT, atomic_save, checkpoint_config, load_checkpoint
from vidattn.engine.distributed import DistInfo, all_gather_objects, barrier, cleanup, init_distributed
from vidattn.engine.evaluate import clip_sampler, eval_dataset, evaluate, run_eval
from vidattn.engine.modeling import amp_mode, autocast_for, build_model
from vidattn.engine.optim import (
    LR_SCRATCH,
    ModelEma,
    build_optimizer,
    cosine_schedule,
    default_lr,
    mix_batch,
    scaled_lr,
)
from vidattn.errors import ConfigError, VidattnError

__all__ = ["TrainingDiverged", "default_run_dir", "saved_config", "train"]

#: Last key of the `make_rng` stream of the on-device augmentation (crops, flips, mixup), so that it is
#: independent of the datasets' clip sampling, which draws from ``make_rng(seed, epoch, index)``.
_AUGMENT_STREAM = 1


class TrainingDiverged(VidattnError):
    """The loss became NaN or infinite."""


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train (and validate) as configured; returns the last epoch's metrics (plus ``test_top1`` and ``test_clips``
    when best.pt was then evaluated on more views than validation reads, see `_test_best`).

    Args:
        cfg: the resolved config. On resume it may differ from the run's own only in
            `vidattn.config.RESUME_SAFE_KEYS` (see `saved_config`).
        run_dir: the run directory; it must not hold a run unless `resume`.
        resume: continue the run from ``run_dir/checkpoints/last.pt``.

    Raises:
        ConfigError: a value out of range, a missing data root, or a resume that would change the run.
        OutputError: the run directory cannot be written.
        TrainingDiverged: the loss became NaN or infinite (the last good checkpoint is kept).
    """
    cfg.validate()
    info = init_distributed(cfg.train.device)
    try:
        _configure_process(cfg, info)
        run_dir = Path(run_dir).resolve()
        cfg, ckpt = _prepare_run(cfg, run_dir, info, resume)
        data = _build_data(cfg, run_dir, info)
        trainer = _build_trainer(cfg, run_dir, info, data, ckpt)
        del ckpt
        _log(info, f"run directory: {run_dir}")
        _log(
            info,
            f"{data.num_train} training videos, {len(data.classes)} classes, model {cfg.model.name} "
            f"(attn={cfg.model.attn}), device {info.device}, amp {trainer.amp}, world size {info.world_size}",
        )
        metrics: dict[str, Any] = {}
        for epoch in range(trainer.start_epoch, cfg.train.epochs):
            metrics = trainer.train_epoch(epoch)
            if trainer.validates_after(epoch):
                metrics.update(trainer.validate(epoch))
            trainer.save_and_log(epoch, metrics)
        trainer.close()
        if info.is_main:
            metrics.update(_test_best(cfg, run_dir, info, data))
        _log(info, f"done: run directory {run_dir}")
        return metrics
    finally:
        cleanup()


def _test_best(cfg: Config, run_dir: Path, info: DistInfo, data: _Data) -> dict[str, Any]:
    """After the last epoch: best.pt on the validation videos with ``data.test_clips`` views (and their mirror
    images, ``data.test_flip``), as `vidattn eval` writes it (``RUN/eval-val``). Nothing when there is no
    validation set or the views are those of validation."""
    best = run_dir / "checkpoints" / "best.pt"
    flips = flip_mirror(cfg.data.test_flip, data.classes)[0] is not None
    if data.val_loader is None or not best.is_file() or (cfg.data.test_clips == cfg.train.val_clips and not flips):
        return {}
    result = run_eval(best, data_root=cfg.data.root, device=info.device.type, progress=False)
    views = f"{cfg.data.test_clips} views each (data.test_clips)" + (" and their mirror images" if flips else "")
    _log(
        info,
        f"best.pt on {result['num_videos']} validation videos, {views}: top-1 {result['top1']:.3f} "
        f"-> {result['out_dir']}",
    )
    return {"test_top1": result["top1"], "test_clips": cfg.data.test_clips}


# --- preparing the run -----------------------------------------------------------------------------
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
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and run_id:
        return Path("runs") / f"train-{run_id}"
    return Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")


def _configure_process(cfg: Config, info: DistInfo) -> None:
    """CPU threads, deterministic kernels and the global seeds (model initialisation) of this process."""
    threads = cfg.train.threads
    if threads is None and info.device.type == "cpu":
        # Leave a core per decoding worker: oversubscribed OpenMP threads slow CPU training several-fold.
        threads = max(1, (os.cpu_count() or 1) // info.world_size - cfg.data.num_workers)
    if threads:
        torch.set_num_threads(threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    _seed_all(cfg.train.seed + info.rank)


#: A derived batch size: the largest in this range that still gives an epoch `MIN_STEPS_PER_EPOCH` steps.
BATCH_SIZE_RANGE = (4, 16)
MIN_STEPS_PER_EPOCH = 20


def derive_batch_size(num_videos: int) -> int:
    """Clips per step for `num_videos` training videos (per process): 16, or fewer so an epoch has 20 steps.

    A small set in batches of 16 trains for few steps an epoch; on 160 videos (10 steps) two of three seeds
    learnt each video by its distractors and stayed at chance; with batches of 8 (20 steps, the learning
    rate scaled with the batch) and hue jitter 4 of 6 runs learnt the event (README, "Long videos").
    """
    low, high = BATCH_SIZE_RANGE
    return max(low, min(high, num_videos // MIN_STEPS_PER_EPOCH))


#: A derived epoch count: `DEFAULT_EPOCHS`, or more so that the run makes at least `MIN_STEPS` optimiser steps.
DEFAULT_EPOCHS = 30
MIN_STEPS = 1000


def derive_epochs(steps_per_epoch: int) -> int:
    """Epochs for `steps_per_epoch` optimiser steps an epoch: 30, or more so that the run makes 1000 steps.

    The embedded default (560 videos in batches of 16: 35 steps an epoch) keeps 30. On issue 15's shape (160
    videos in batches of 8: 20 steps, 600 in 30 epochs) the validation accuracy was still rising at the end on a
    third set of videos (best.pt 0.917 / 0.938 / 0.958 for seeds 0-2; 50 epochs: 0.958 / 1.000 / 0.917). Over nine
    runs on three sets 50 epochs averaged 0.954 against 0.947: a gain within the seeds' noise (README, "Targets").
    """
    return max(DEFAULT_EPOCHS, -(-MIN_STEPS // max(1, steps_per_epoch)))


def fill_unset_settings(cfg: Config, info: DistInfo) -> None:
    """Derive the settings the config left unset (None) from the data and the model, and say what was derived.

    Data settings come from a probed sample of the training videos (`vidattn.data.profile`); the batch size
    from how many training videos each process has; the learning rate, the input, the head and the hue jitter
    from whether the weights are pretrained. Every rank probes the same sample, so all agree.
    """
    from vidattn.data.profile import derive_data_settings, derive_test_clips, profile_videos

    d = cfg.data
    said = []
    records = None
    if None in (d.clip_len, d.stride, d.size, d.crop_size, cfg.train.batch_size, cfg.train.epochs):
        records, _ = load_annotations(d.root, "train", fmt=d.format, ann_file=d.train_ann, split_id=d.split_id)
    if None in (d.clip_len, d.stride, d.size, d.crop_size):
        profile = profile_videos([r.path for r in records], backend=d.backend)
        derived = derive_data_settings(d, profile)
        for key, value in derived.items():
            setattr(d, key, value)
        source = profile.describe() if profile is not None else "no training video could be probed"
        said.append(f"{source} -> " + ", ".join(f"data.{k}={v}" for k, v in derived.items()))
    if d.test_clips is None:
        d.test_clips = derive_test_clips(d.sampler, d.stride)
        if d.sampler != "auto":
            why = f"data.sampler={d.sampler}"
        elif d.test_clips == d.stride:
            why = "shifted a frame apart, they see every frame"
        else:
            why = f"evenly shifted within the {d.stride}-frame spacing"
        said.append(f"data.test_clips={d.test_clips} ({why}; best.pt is evaluated on them after the last epoch)")
    per_process = -(-len(records) // info.world_size) if records is not None else 0
    if cfg.train.batch_size is None:
        cfg.train.batch_size = derive_batch_size(per_process)
        said.append(f"train.batch_size={cfg.train.batch_size} ({per_process} training videos per process)")
    if cfg.train.epochs is None:
        steps = max(1, -(-per_process // cfg.train.batch_size) // cfg.optim.accum_steps)
        cfg.train.epochs = derive_epochs(steps)
        said.append(f"train.epochs={cfg.train.epochs} ({steps} optimiser steps an epoch; at least {MIN_STEPS} in all)")
    scratch = default_lr(cfg.model.pretrained) == LR_SCRATCH
    kind = "training from scratch" if scratch else "pretrained weights"
    if cfg.optim.lr is None:
        cfg.optim.lr = default_lr(cfg.model.pretrained)
        said.append(f"optim.lr={cfg.optim.lr:g} ({kind})")
    if cfg.model.input is None:
        cfg.model.input = "diff" if scratch else "rgb"
        said.append(f"model.input={cfg.model.input} ({kind})")
    if cfg.model.head is None:
        cfg.model.head = "peak" if scratch else "attn"
        said.append(f"model.head={cfg.model.head} ({kind})")
    if d.hue is None:
        d.hue = 1.0 if cfg.model.input == "diff" else 0.0
        why = "what moves is the class, not its colour" if d.hue else "the frames' colours can be the class"
        said.append(f"data.hue={d.hue:g} (model.input={cfg.model.input}: {why})")
    if said:
        _log(info, "derived (set them with -o to override): " + "; ".join(said))


def _prepare_run(cfg: Config, run_dir: Path, info: DistInfo, resume: bool) -> tuple[Config, dict[str, Any] | None]:
    """Check the run directory, resolve ``data.root`` into the config, write ``config.yaml`` (rank 0).

    With no data root the synthetic default is generated into ``RUN/data`` (rank 0). On resume the
    checkpoint is loaded and the config checked against the one it was trained with: the run continues
    only on the same data and model, and the allowed differences are printed.

    Returns:
        The resolved config and, on resume, the checkpoint to continue from.
    """
    last_path = run_dir / "checkpoints" / "last.pt"
    if last_path.exists() and not resume:
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not last_path.exists():
        raise ConfigError(f"--resume: no checkpoint at {last_path}")
    if info.is_main:
        ensure_output_dir(run_dir)  # a read-only or unwritable --out fails now, not at the first save
    cfg = cfg.copy()
    synthetic = not cfg.data.root
    if synthetic:
        cfg.data.root = str(run_dir / "data")
    elif not Path(cfg.data.root).exists():
        raise ConfigError(f"data root {cfg.data.root} does not exist")
    cfg.data.root = str(Path(cfg.data.root).resolve())
    if info.is_main and synthetic:
        from vidattn.data.synthetic import generate_dataset

        _log(info, f"generating synthetic default data into {cfg.data.root}")
        d = cfg.data
        generate_dataset(d.root, per_class=d.synth_per_class, val_per_class=d.synth_val_per_class, seed=cfg.train.seed)
    barrier()
    # Before the resume check and config.yaml: the run is defined by the derived values, not by "unset".
    fill_unset_settings(cfg, info)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(last_path, map_location=info.device)
        saved = checkpoint_config(ckpt, last_path)
        if saved.data.hue is None:  # a run from before hue jitter existed trained without it, and goes on so
            saved.data.hue = cfg.data.hue = 0.0
        for key, old, new in resume_changes(saved, cfg, run=str(run_dir)):
            _log(info, f"resume: {key} {old!r} -> {new!r}")
    if info.is_main:
        with writing_to(run_dir):
            atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    barrier()
    return cfg, ckpt


@dataclass
class _Data:
    """The loaders of one run."""

    classes: list[str]
    num_train: int
    train_loader: Any
    epoch_sampler: EpochSampler  # reshuffles (and shards, under DDP) the training set per epoch
    val_loader: Any | None  # rank 0 only; None without validation videos


def _build_data(cfg: Config, run_dir: Path, info: DistInfo) -> _Data:
    """Training and validation datasets, both sampled through `clip_sampler`; rank 0 writes ``classes.json``."""
    d, t = cfg.data, cfg.train
    records, classes = load_annotations(d.root, "train", fmt=d.format, ann_file=d.train_ann, split_id=d.split_id)
    if not records:
        raise ConfigError(f"{d.root}: no training videos found")
    train_ds = VideoDataset(
        records,
        classes,
        clip_sampler(d, train=True),
        size=d.size,
        crop="random",
        seed=t.seed,
        backend=d.backend,
        cache_mb=d.cache_mb,
    )
    epoch_sampler = EpochSampler(len(train_ds), shuffle=True, seed=t.seed, rank=info.rank, world_size=info.world_size)
    train_loader = build_loader(
        train_ds,
        t.batch_size,
        sampler=epoch_sampler,
        num_workers=d.num_workers,
        # Only a last batch of one clip is dropped (its BatchNorm statistics are noise); any other partial
        # batch trains, so a small dataset does not lose part of every epoch.
        drop_last=-(-len(train_ds) // info.world_size) % t.batch_size == 1,
    )
    val_loader = None
    if info.is_main:
        val_ds = eval_dataset(d, d.root, classes, "val", seed=t.seed, views=t.val_clips)
        val_loader = build_loader(val_ds, t.eval_batch_size, num_workers=d.num_workers) if len(val_ds) else None
        with writing_to(run_dir):
            save_classes(classes, run_dir / "classes.json")
    return _Data(classes, len(records), train_loader, epoch_sampler, val_loader)


def _build_trainer(cfg: Config, run_dir: Path, info: DistInfo, data: _Data, ckpt: dict[str, Any] | None) -> _Trainer:
    """The model, optimiser, schedule, scaler and EMA; restored from `ckpt` when resuming."""
    device, d = info.device, cfg.data
    model = build_model(cfg, len(data.classes))
    if cfg.train.sync_bn and info.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    steps = len(data.train_loader)
    if cfg.train.max_steps_per_epoch is not None:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    opt_steps_per_epoch = max(1, steps // cfg.optim.accum_steps)
    global_batch = cfg.train.batch_size * info.world_size * cfg.optim.accum_steps
    optimizer = build_optimizer(model, cfg.optim, scaled_lr(cfg.optim.lr, global_batch))
    scheduler = cosine_schedule(
        optimizer,
        opt_steps_per_epoch * cfg.train.epochs,
        int(cfg.optim.warmup_epochs * opt_steps_per_epoch),
        cfg.optim.min_lr_ratio,
    )
    amp = amp_mode(cfg.train.amp, device)
    _say_flips(cfg, data.classes, info)
    trainer = _Trainer(
        cfg=cfg,
        info=info,
        run_dir=run_dir,
        data=data,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=(amp == "fp16")),
        ema=ModelEma(model, cfg.optim.ema) if cfg.optim.ema else None,
        amp=amp,
        steps_per_epoch=steps,
        transform_train=_train_transform(cfg, data.classes).to(device),
        transform_eval=VideoTransform(d.crop_size, train=False).to(device),
        manifest=ErrorsManifest(run_dir / "errors.jsonl" if info.is_main else None),
        writer=_tensorboard(run_dir) if info.is_main else None,
        train_model=model,
    )
    if ckpt is not None:
        trainer.restore(ckpt)
    if cfg.train.compile:
        trainer.train_model = torch.compile(trainer.train_model)
    if info.distributed:
        ids = [device.index] if device.type == "cuda" else None
        trainer.train_model = nn.parallel.DistributedDataParallel(trainer.train_model, device_ids=ids)
    return trainer


# --- the epoch loop --------------------------------------------------------------------------------
@dataclass
class _Trainer:
    """What the epoch loop needs, fixed for the whole run (built by `_build_trainer`)."""

    cfg: Config
    info: DistInfo
    run_dir: Path
    data: _Data
    model: nn.Module  # the bare model (EMA, gradient clipping, checkpoints)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    ema: ModelEma | None
    amp: str  # "off" | "bf16" | "fp16" (engine.modeling.amp_mode)
    steps_per_epoch: int
    transform_train: nn.Module
    transform_eval: nn.Module
    manifest: ErrorsManifest
    writer: Any  # TensorBoard SummaryWriter (rank 0) or None
    train_model: nn.Module  # what a step calls: the model, compiled and/or wrapped in DDP
    start_epoch: int = 0
    best_top1: float = -1.0
    new_errors: int = 0  # entries the last epoch added to the errors manifest (for the summary)

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint: weights, optimiser, schedule, scaler, EMA, RNG, the metrics lines."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.state = ckpt["ema"]
        self.start_epoch, self.best_top1 = ckpt["epoch"] + 1, ckpt.get("best_top1", -1.0)
        rng = ckpt["rng"]
        _set_rng_state(rng[self.info.rank] if isinstance(rng, list) else rng)
        if self.info.is_main:
            with writing_to(self.run_dir):
                _reconcile_metrics(self.run_dir / "metrics.jsonl", ckpt.get("metrics") or {}, self.start_epoch)
        _log(self.info, f"resumed from {self.last_path} at epoch {self.start_epoch}")

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training set; unreadable videos go to the errors manifest."""
        self.data.epoch_sampler.set_epoch(epoch)
        stats = _train_epoch(self, epoch)
        errors = [e for part in all_gather_objects(stats.pop("errors")) for e in part]
        with writing_to(self.run_dir):
            self.new_errors = self.manifest.record(errors, epoch=epoch, stage="train")
        return {"epoch": epoch + 1, **stats, "lr": self.scheduler.get_last_lr()[0], "train_errors": len(errors)}

    def validates_after(self, epoch: int) -> bool:
        """Rank 0 validates every ``eval_every`` epochs and after the last one."""
        every, last = self.cfg.train.eval_every, self.cfg.train.epochs
        return (
            self.info.is_main and self.data.val_loader is not None and ((epoch + 1) % every == 0 or epoch + 1 == last)
        )

    def validate(self, epoch: int) -> dict[str, Any]:
        """Video-level accuracy on the validation set (of the EMA weights when there are any)."""
        eval_model = self.model
        if self.ema is not None:
            eval_model = build_model(self.cfg, len(self.data.classes), pretrained=False).to(self.info.device)
            eval_model.load_state_dict(self.ema.state)
        val, _ = evaluate(
            eval_model,
            self.data.val_loader,
            self.transform_eval,
            self.info.device,
            self.data.classes,
            amp=self.amp,
            manifest=self.manifest,
            epoch=epoch,
        )
        return {
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "val_videos": val["num_videos"],
            "val_errors": val["errors"],
        }

    def save_and_log(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Rank 0: checkpoints (best.pt when val top-1 improved), the metrics line, TensorBoard, the summary."""
        rng = all_gather_objects(_rng_state())  # every rank's RNG, so each resumes its own stream
        if self.info.is_main:
            improved = metrics.get("val_top1", -1.0) > self.best_top1
            self.best_top1 = max(self.best_top1, metrics.get("val_top1", -1.0))
            metrics["best_val_top1"] = self.best_top1
            state = self.checkpoint_state(epoch, metrics, rng)
            # best.pt before last.pt: a run killed in between redoes this epoch (deterministically) on resume.
            # metrics.jsonl after both; `_reconcile_metrics` restores a line lost to a kill in between.
            with writing_to(self.run_dir):  # a full disk: one line, and the last good checkpoint is kept
                if improved:
                    atomic_save(state, self.last_path.with_name("best.pt"))
                atomic_save(state, self.last_path)
                with (self.run_dir / "metrics.jsonl").open("a") as f:
                    f.write(json.dumps(metrics) + "\n")
            if self.writer is not None:
                for key, value in metrics.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        self.writer.add_scalar(key, value, epoch + 1)
                self.writer.flush()
            _log(self.info, self.summary(epoch, metrics))
        barrier()

    def summary(self, epoch: int, metrics: dict[str, Any]) -> str:
        """The one-line epoch summary."""
        line = (
            f"epoch {epoch + 1}/{self.cfg.train.epochs}: loss {metrics['loss']:.4f}, "
            f"train top1 {metrics['train_top1']:.3f}"
        )
        if "val_top1" in metrics:
            line += f", val top1 {metrics['val_top1']:.3f} (best {self.best_top1:.3f})"
        line += (
            f", {metrics['clips_per_s']:.1f} clips/s, data wait {metrics['data_s']:.1f}s / compute "
            f"{metrics['compute_s']:.1f}s"
        )
        if self.new_errors or metrics.get("val_errors"):
            line += f", skipped {metrics['train_errors']} unreadable training video(s) (see {self.manifest.path})"
        return line

    def checkpoint_state(self, epoch: int, metrics: dict[str, Any], rng: list[Any]) -> dict[str, Any]:
        """Everything `restore` needs, plus the config and classes that `checkpoint.load_model` rebuilds from."""
        return {
            "format": FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "ema": {k: v.cpu() for k, v in self.ema.state.items()} if self.ema is not None else None,
            "epoch": epoch,
            "best_top1": self.best_top1,
            "classes": list(self.data.classes),
            "config": self.cfg.to_dict(),
            "metrics": metrics,
            "rng": rng,
        }

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _train_epoch(t: _Trainer, epoch: int) -> dict[str, Any]:
    """Optimise over one epoch (at most ``steps_per_epoch`` batches); returns the epoch's statistics."""
    cfg, info, steps = t.cfg, t.info, t.steps_per_epoch
    t.train_model.train()
    seed = int(make_rng(cfg.train.seed, epoch, info.rank, _AUGMENT_STREAM).integers(2**63))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    loss_sum, correct, seen, data_s, compute_s = 0.0, 0, 0, 0.0, 0.0
    errors: list[dict] = []
    bar = _progress_bar(t, epoch)
    t.optimizer.zero_grad(set_to_none=True)
    tick = start = time.perf_counter()
    for step, batch in enumerate(t.data.train_loader):
        if step >= steps:
            break
        t_data = time.perf_counter()
        data_s += t_data - tick
        errors += batch["errors"]
        if len(batch["label"]):
            batch_loss, batch_correct = _forward_backward(t, batch, gen, epoch, step)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(batch["label"])
        if (step + 1) % cfg.optim.accum_steps == 0 or step + 1 == steps:
            _optimizer_step(t)
        tick = time.perf_counter()
        compute_s += tick - t_data
        if bar is not None:
            bar.update(1)
            clips_s = seen * info.world_size / max(tick - start, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", clips_s=f"{clips_s:.1f}")
    if bar is not None:
        bar.close()
    totals = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
    if info.distributed:
        import torch.distributed as dist

        totals = totals.to(info.device)  # NCCL (the GPU backend) reduces GPU tensors only
        dist.all_reduce(totals)
        totals = totals.cpu()
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


def _forward_backward(
    t: _Trainer, batch: dict[str, Any], gen: torch.Generator, epoch: int, step: int
) -> tuple[float, int]:
    """Loss and gradients of one batch (scaled for accumulation); returns the summed loss and the correct count."""
    cfg, device = t.cfg, t.info.device
    video = batch["video"][:, 0].to(device, non_blocking=True)  # (B, T, S, S, C): one view in training
    y = batch["label"].to(device, non_blocking=True)
    x, y = t.transform_train.augment(video, y, generator=gen)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x, target = mix_batch(x, y, len(t.data.classes), cfg.optim.mixup, cfg.optim.cutmix, gen)
    with autocast_for(device, t.amp):
        logits = t.train_model(x)
    loss = F.cross_entropy(logits.float(), target, label_smoothing=cfg.optim.label_smoothing)
    if not torch.isfinite(loss):
        kept = f"; the last good checkpoint is kept at {t.last_path}" if t.last_path.exists() else ""
        raise TrainingDiverged(
            f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}"
            f" (try a lower optim.lr or train.amp=off){kept}"
        )
    t.scaler.scale(loss / cfg.optim.accum_steps).backward()
    return loss.item() * len(y), int((logits.argmax(1) == y).sum())


def _optimizer_step(t: _Trainer) -> None:
    """Clip, step (through the fp16 scaler), advance the schedule and the EMA."""
    if t.cfg.optim.clip_grad:
        t.scaler.unscale_(t.optimizer)
        nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.optim.clip_grad)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.optimizer.zero_grad(set_to_none=True)
    t.scheduler.step()
    if t.ema is not None:
        t.ema.update(t.model)


def _progress_bar(t: _Trainer, epoch: int) -> Any:
    """A tqdm bar on an interactive stderr (rank 0, ``train.progress``), else None."""
    if not (t.info.is_main and t.cfg.train.progress and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    desc = f"epoch {epoch + 1}/{t.cfg.train.epochs}"
    return tqdm(total=t.steps_per_epoch, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


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


# --- small helpers ---------------------------------------------------------------------------------
def _say_flips(cfg: Config, classes: list[str], info: DistInfo) -> None:
    """Say whether training flips clips (``data.flip``), whether best.pt is also evaluated on the mirror image of
    each view (``data.test_flip``), and which classes a flip changes."""
    d = cfg.data
    for key, setting, what in (
        ("flip", d.flip, "horizontal flips in training"),
        ("test_flip", d.test_flip, "best.pt is also evaluated on each view's mirror image"),
    ):
        mirror, unmatched = flip_mirror(setting, classes)
        if mirror is None and unmatched is not None:
            _log(info, f"data.{key}=auto -> off: class {unmatched!r} names a side and has no mirror class")
        elif mirror is not None:
            pairs = sorted({tuple(sorted((classes[i], classes[m]))) for i, m in enumerate(mirror) if m != i})
            swaps = "; a flipped clip changes class: " + ", ".join(f"{a} <-> {b}" for a, b in pairs) if pairs else ""
            _log(info, f"data.{key}={setting} -> {what}{swaps}")


def _train_transform(cfg: Config, classes: list[str]) -> VideoTransform:
    """The training transform: crop, scale, colour jitter and (``data.flip``) flips through the mirror classes."""
    d = cfg.data
    mirror, _ = flip_mirror(d.flip, classes)
    return VideoTransform(
        d.crop_size,
        train=True,
        scale=d.scale,
        flip=mirror is not None,
        mirror=mirror,
        jitter=d.jitter,
        hue=d.hue or 0.0,
    )


def _log(info: DistInfo, msg: str) -> None:
    if info.is_main:
        print(msg, file=sys.stderr, flush=True)


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
