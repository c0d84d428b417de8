"""Experiment configuration: dataclasses in code, YAML files in `configs/`, `-o key=value` last.

Resolution order: dataclass defaults (or a run's saved config, on resume) -> YAML file (``-c``) ->
command-line flags -> ``-o`` overrides. Unknown keys are errors that name the close matches; each
section's `_rules` say which values are in range, and `load_config` checks them once the config is
resolved. The resolved config is saved with each run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

import yaml

from vidattn.errors import ConfigError

__all__ = [
    "RESUME_SAFE_KEYS",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "config_diff",
    "dump_config",
    "load_config",
    "resume_changes",
]


@dataclass(frozen=True)
class _Rule:
    """What a field's value must satisfy, and how the error says it."""

    test: Callable[[Any], bool]
    text: str


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _at_least(low: float) -> _Rule:
    return _Rule(lambda v: _finite(v) and v >= low, f">= {low}")


def _above(low: float) -> _Rule:
    return _Rule(lambda v: _finite(v) and v > low, f"> {low}")


def _fraction(*, below_one: bool = False) -> _Rule:
    """In [0, 1], or [0, 1) with `below_one`."""
    if below_one:
        return _Rule(lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)")
    return _Rule(lambda v: _finite(v) and 0 <= v <= 1, "in [0, 1]")


def _one_of(*choices: Any) -> _Rule:
    return _Rule(lambda v: v in choices, "one of " + ", ".join(map(str, choices)))


#: A switch that may also be left to the data (``auto``).
_SWITCH = _Rule(lambda v: v is True or v is False or v == "auto", "true, false or auto")


@dataclass
class DataConfig:
    root: str | None = None  # dataset root; None = generate the synthetic default into the run directory
    format: str = "auto"  # auto | folder | list | csv | ucf101 | hmdb51
    train_ann: str | None = None  # list/CSV file for the training split (list and csv formats)
    val_ann: str | None = None  # list/CSV file for the validation split
    split_id: int = 1  # official split (1-3) for ucf101 / hmdb51
    # Temporal coverage: auto = every clip spans the whole video (evenly spread frames when the video fits a
    # clip, TSN segments when it is longer; random per segment in training, centred test views);
    # segment = TSN, one frame per segment; random = one dense clip at a random start (uniform clips at test).
    sampler: str = "auto"
    snippet: int = 1  # auto, videos longer than a clip: consecutive frames per segment (divides clip_len)
    # None = derived at start from a sample of the training videos (vidattn/data/profile.py), and printed.
    clip_len: int | None = None  # frames per clip (auto: spread over the whole video)
    stride: int | None = None  # frames between sampled frames of a dense clip (auto: the widest spacing of one clip)
    short: str = "loop"  # videos shorter than a clip: loop | pad | skip
    size: int | None = None  # decode with the short side at this size (then a square crop); None = derived
    crop_size: int | None = None  # model input side after the device transform; None = derived (= size)
    scale: tuple[float, float] = (0.8, 1.0)  # random-resized-crop area range (train)
    # Horizontal flip in training. A flipped clip of a class whose name says a side (left/right, clockwise/
    # counterclockwise) is trained as its mirror class (move_left <-> move_right, found by the names). auto: on
    # unless a class says a side and its mirror is not a class (then a flip has no right label); true: on (such
    # a class keeps its label); false: off (the default: on the long synthetic set flips did not help, README).
    flip: bool | str = False
    # Contrast jitter in training: each clip's channels scaled about the clip's mean by a factor in [1 - j, 1 + j]
    # (one per clip, times one per channel in [1 - j/2, 1 + j/2]), the same in every frame. What moves then
    # moves with every strength, so a faint target is not a case the model has hardly seen. 0 = off.
    jitter: float = 0.0
    # Hue jitter in training: each clip's colours turned about the grey axis by up to +-hue x 180 degrees and its
    # saturation scaled by a factor in [1 - hue/2, 1 + hue/2] (brightness kept), the same in every frame. A model
    # trained from scratch on a few videos per class otherwise learns each video by the colours of what moves in
    # it. None = derived: 1 when the model sees frame differences (model.input=diff), else 0. 0 = off.
    hue: float | None = None
    # Temporal views per video at evaluation (`vidattn eval`, and the run's last step on best.pt); with whole-video
    # coverage view k shifts every pick by k / views of the spacing. None = derived: every frame when the spacing
    # (data.stride) is at most 4, else 4 evenly shifted views; 1 for the other samplers.
    test_clips: int | None = None
    test_crops: int = 1  # spatial views at evaluation: 1 (centre) or 3 (three-crop)
    # Each view also read as its mirror image at evaluation (`vidattn eval`, `vidattn score`, the run's last step on
    # best.pt; not the per-epoch validation), its probabilities read through the mirror classes as data.flip says
    # (move_left <-> move_right). auto: on unless a class names a side and its mirror is not a class; true: on;
    # false: off. Twice the model's work per video; on the long synthetic sets +1.7 points on average (README).
    test_flip: bool | str = "auto"
    backend: str = "auto"  # decoder: auto | decord | pyav
    num_workers: int = 0  # DataLoader worker processes (0 = decode in the training process)
    cache_mb: float = 512.0  # decoded videos kept in memory per process (small datasets decode once); 0 = off
    synth_per_class: int = 80  # synthetic default: training videos per class
    synth_val_per_class: int = 20  # synthetic default: validation videos per class

    _rules: ClassVar[dict[str, _Rule]] = {
        "split_id": _at_least(1),
        "clip_len": _at_least(1),
        "stride": _at_least(1),
        "sampler": _one_of("auto", "segment", "random"),
        "snippet": _at_least(1),
        "short": _one_of("loop", "pad", "skip"),
        "size": _at_least(1),
        "crop_size": _at_least(1),
        "jitter": _fraction(below_one=True),
        "hue": _fraction(),
        "flip": _SWITCH,
        "scale": _Rule(lambda v: all(map(_finite, v)) and 0 < v[0] <= v[1] <= 1, "a range 0 < min <= max <= 1"),
        "test_clips": _at_least(1),
        "test_crops": _one_of(1, 3),
        "test_flip": _SWITCH,
        "backend": _one_of("auto", "decord", "pyav"),
        "num_workers": _at_least(0),
        "cache_mb": _at_least(0),
        "synth_per_class": _at_least(1),
        "synth_val_per_class": _at_least(0),
    }


@dataclass
class ModelConfig:
    name: str = "r2plus1d_tiny"  # registered model name (vidattn.models.list_models())
    attn: Any = "stc"  # attention in the residual blocks: a name, a per-stage list, or none
    # Classification head: attn (attention pooling over time) | avg (average pooling) | peak (each channel's largest
    # rise above its temporal mean: what happens at one moment, not what is there all along). None = derived: peak
    # when training from scratch (attn memorised small sets by their clutter), attn with pretrained weights (it
    # starts as the average pooling their classifier was trained with).
    head: str | None = None
    pretrained: str | None = None  # torchvision | path to weights | None
    dropout: float = 0.0  # dropout before the classifier
    # What the network sees: rgb (the frames) | diff (differences of consecutive sampled frames: what moved).
    # None = derived: diff when training from scratch (the frames would let it memorise each video's
    # background), rgb with pretrained weights (they were trained on frames).
    input: str | None = None
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the model builder

    _rules: ClassVar[dict[str, _Rule]] = {"dropout": _fraction(below_one=True), "input": _one_of("rgb", "diff")}


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    # Peak learning rate for a global batch of REFERENCE_BATCH_SIZE (engine/optim.py), scaled linearly. None = 6e-3
    # when the model trains from scratch, 6e-4 with pretrained weights (the scratch rate destroys them).
    lr: float | None = None
    weight_decay: float = 0.05  # decoupled weight decay; norms and biases are exempt
    momentum: float = 0.9  # SGD momentum
    warmup_epochs: float = 1.0  # linear warmup before the cosine decay
    min_lr_ratio: float = 0.01  # final lr as a fraction of the peak
    clip_grad: float | None = 5.0  # max gradient norm; None disables clipping
    accum_steps: int = 1  # gradient accumulation steps
    label_smoothing: float = 0.0
    mixup: float = 0.0  # mixup alpha (0 = off)
    cutmix: float = 0.0  # cutmix alpha (0 = off)
    ema: float | None = None  # EMA decay of the weights, e.g. 0.999; None disables

    _rules: ClassVar[dict[str, _Rule]] = {
        "name": _one_of("adamw", "sgd"),
        "lr": _above(0),
        "weight_decay": _at_least(0),
        "momentum": _fraction(),
        "warmup_epochs": _at_least(0),
        "min_lr_ratio": _fraction(),
        "clip_grad": _above(0),
        "accum_steps": _at_least(1),
        "label_smoothing": _fraction(below_one=True),
        "mixup": _at_least(0),
        "cutmix": _at_least(0),
        "ema": _Rule(lambda v: _finite(v) and 0 < v < 1, "in (0, 1)"),
    }


@dataclass
class TrainConfig:
    # Passes over the training set. None = derived: 30, or more so that the run makes at least 1000 optimiser steps
    # (`vidattn.engine.train.derive_epochs`; 160 videos in batches of 8 make 20 steps an epoch: 50 epochs).
    epochs: int | None = None
    # Clips per process. None = derived: 16, or fewer (down to 4) so that an epoch has at least 20 steps: on a
    # small set (160 videos) batches of 16 gave 10 steps an epoch and two of three seeds memorised the videos
    # (batches of 8 with hue jitter: two of six; README, "Long videos").
    batch_size: int | None = None
    eval_batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off on CPU) | off | bf16 | fp16
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # channels_last_3d memory format
    sync_bn: bool = False  # SyncBatchNorm under DDP
    seed: int = 0
    deterministic: bool = False  # deterministic kernels (for exact resume tests)
    eval_every: int = 1  # validate every N epochs
    # Temporal views per video in the validation after each epoch (best.pt is chosen on it); after the last
    # epoch best.pt is evaluated on data.test_clips views, as `vidattn eval` does.
    val_clips: int = 1
    threads: int | None = None  # torch CPU threads; None = CPU cores per process minus data workers
    max_steps_per_epoch: int | None = None  # cap an epoch (smoke tests, benchmarks)
    progress: bool = True  # progress bar on stderr

    _rules: ClassVar[dict[str, _Rule]] = {
        "epochs": _at_least(1),
        "batch_size": _at_least(1),
        "eval_batch_size": _at_least(1),
        "device": _Rule(
            lambda v: v in ("auto", "cpu", "cuda") or bool(re.fullmatch(r"cuda:\d+", v)), "auto, cpu, cuda or cuda:N"
        ),
        "amp": _one_of("auto", "off", "bf16", "fp16"),
        "eval_every": _at_least(1),
        "val_clips": _at_least(1),
        "threads": _at_least(1),
        "max_steps_per_epoch": _at_least(1),
    }


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> Config:
        cfg = cls()
        _merge(cfg, data, source)
        return cfg

    def copy(self) -> Config:
        """An independent deep copy."""
        return Config.from_dict(self.to_dict())

    def validate(self, source: str = "config") -> Config:
        """Check every value against its section's `_rules`; returns self.

        Raises:
            ConfigError: one line naming the first key out of range (and `source` when it is not the CLI).
        """
        for section in dataclasses.fields(self):
            part = getattr(self, section.name)
            hints = get_type_hints(type(part))
            where = "" if source == "config" else f"{source}: "
            for f in dataclasses.fields(part):
                key, value = f"{section.name}.{f.name}", getattr(part, f.name)
                if value is None:
                    if type(None) not in get_args(hints[f.name]) and hints[f.name] is not Any:
                        raise ConfigError(f"{where}{key} needs a value, got null")
                    continue
                rule = part._rules.get(f.name)
                if rule is not None and not rule.test(value):
                    raise ConfigError(f"{where}{key} must be {rule.text}, got {value!r}")
        return self


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _close(name: str, options: list[str]) -> str:
    near = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(near)}?" if near else f"; valid keys: {', '.join(options)}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the field's type, or fail naming the key."""
    if hint is Any or value is None:
        return value
    origin, args = get_origin(hint), get_args(hint)
    if origin is not None and type(None) in args:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null", "~", ""):
            return None
        return _coerce(value, inner[0] if len(inner) == 1 else Any, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint in (int, float):
        try:
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}") from None
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on (no/yes) as a boolean: `amp: off`
            return "on" if value else "off"
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    return value


def _merge(obj: Any, data: dict[str, Any], source: str, prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix or 'top level'} must be a mapping, got {data!r}")
    hints = get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key {full!r}{_close(str(key), [prefix + n for n in names])}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, source, prefix=f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        keys.extend(_all_keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [prefix + f.name])
    return keys


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key.sub=value`` strings (values parsed as YAML scalars/lists)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.split(".")
        target: Any = cfg
        for depth, part in enumerate(parts[:-1]):
            if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
                raise ConfigError(f"-o: unknown key {key!r}{_close(key, _all_keys(cfg))}")
            target = getattr(target, part)
            if depth == len(parts) - 2 and not dataclasses.is_dataclass(target):
                raise ConfigError(f"-o: unknown key {key!r}{_close(key, _all_keys(cfg))}")
        leaf = parts[-1]
        if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
            raise ConfigError(f"-o: unknown key {key!r}{_close(key, _all_keys(cfg))}")
        if dataclasses.is_dataclass(getattr(target, leaf)):
            first = dataclasses.fields(getattr(target, leaf))[0].name
            raise ConfigError(f"-o: {key!r} is a section; set one of its keys, e.g. {key}.{first}=...")
        setattr(target, leaf, _coerce(value, get_type_hints(type(target))[leaf], key))
    return cfg


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, *, base: Config | None = None
) -> Config:
    """Defaults (or a copy of `base`), then the YAML file at `path` (if any), then `overrides`; validated.

    With `base` (a run's saved config, on resume) only the keys the file and the overrides name change.

    Raises:
        ConfigError: a missing or invalid file, an unknown key, or a value out of range.
    """
    cfg = base.copy() if base is not None else Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a YAML text file (not UTF-8)") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML: {' '.join(str(exc).split())}") from None
        _merge(cfg, data, str(p))
    return apply_overrides(cfg, overrides or []).validate()


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        is_section = isinstance(value, dict) and key != "kwargs"  # model.kwargs is one value
        out.update(_flat(value, f"{prefix}{key}.") if is_section else {prefix + key: value})
    return out


def config_diff(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every key whose value differs, in field order."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    return [(key, a[key], b[key]) for key in a if a[key] != b[key]]


#: What a resumed run may change: how long, where and how fast it runs; never the data, the model or the
#: optimisation the checkpoint continues (those would silently make it a different run).
RESUME_SAFE_KEYS = (
    "train.epochs",
    "train.device",
    "train.eval_every",
    "train.val_clips",
    "train.eval_batch_size",
    "train.threads",
    "train.progress",
    "data.num_workers",
    "data.cache_mb",
    "data.test_clips",
    "data.test_flip",
)


def resume_changes(saved: Config, requested: Config, *, run: str) -> list[tuple[str, Any, Any]]:
    """The differences between a run's saved config and the one a resume asks for, if all are safe.

    ``data.root`` compares as an absolute path, so ``--data-root`` given again relative to the current
    folder is the same root.

    Raises:
        ConfigError: one line naming the first change outside `RESUME_SAFE_KEYS`.
    """
    changes = []
    for key, old, new in config_diff(saved, requested):
        if key == "data.root" and old and new and os.path.abspath(old) == os.path.abspath(new):
            continue
        if key not in RESUME_SAFE_KEYS:
            raise ConfigError(
                f"cannot resume {run} with {key}={new!r}: it was trained with {old!r} (a resume may change only "
                f"{', '.join(RESUME_SAFE_KEYS)}; start a new run with another --out)"
            )
        changes.append((key, old, new))
    return changes
