"""Checkpoints: atomic writes, safe loads, and rebuilding a model from one.

A checkpoint is a dict saved with `torch.save`:

    {"format": "vidattn-checkpoint/1", "model": state_dict, "classes": [names],
     "config": resolved config dict (Config.to_dict()), "epoch": int, "metrics": {...},
     "optimizer", "scheduler", "scaler", "ema", "rng": ... (training state, optional)}

Loading uses ``weights_only=True``: a checkpoint can hold tensors, numbers, strings, lists and
dicts, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vidattn._io import atomic_open
from vidattn.config import Config
from vidattn.errors import ConfigError, VidattnError

__all__ = ["FORMAT", "PREDATED_DATA", "atomic_save", "checkpoint_config", "load_checkpoint", "load_model"]

FORMAT = "vidattn-checkpoint/1"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save with `torch.save` through `vidattn._io.atomic_open`.

    A reader (or a killed run) sees either the old file or the new one, never a partial one.
    """
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", *, mmap: bool = False
) -> dict[str, Any]:
    """Load a vidattn checkpoint safely (``weights_only=True``); errors name the file.

    With `mmap` the tensors are mapped, not read: cheap when only the config or the classes are needed.
    """
    path = Path(path)
    if not path.is_file():
        raise VidattnError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated file, not a torch file, unsafe pickle
        raise VidattnError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {str(exc)[:160]})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise VidattnError(f"{path}: not a vidattn checkpoint (no 'model' entry)")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any], source: str | os.PathLike) -> Config:
    """The validated `Config` a checkpoint was trained with (defaults for keys it predates).

    Raises:
        ConfigError: the checkpoint names no model, or a key or value this version does not accept.
    """
    config = ckpt.get("config")
    if not isinstance(config, dict) or not (config.get("model") or {}).get("name"):
        raise ConfigError(f"{source}: checkpoint lacks the model config")
    cfg = Config.from_dict(config, source=str(source))
    # A key the checkpoint predates, or left unset (a run always saves the derived values), takes the value
    # that was in effect before it could be derived: the model was trained with that.
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    if "sampler" not in data:
        cfg.data.sampler = "random"
    for key, value in PREDATED_DATA.items():
        if getattr(cfg.data, key) is None:
            setattr(cfg.data, key, value)
    if cfg.optim.lr is None:
        cfg.optim.lr = 6e-3
    if cfg.model.input is None:
        cfg.model.input = "rgb"
    return cfg.validate(str(source))


#: ``data`` values of checkpoints written before they were derived from the videos (issue 15).
PREDATED_DATA = {"clip_len": 16, "stride": 1, "size": 32, "crop_size": 32}


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, use_ema: bool = True
) -> tuple[torch.nn.Module, list[str], Config]:
    """Rebuild the model saved in a `vidattn train` checkpoint, in eval mode on `device`.

    Returns:
        ``(model, classes, config)``: `config` is the `Config` it was trained with (its ``data`` section
        gives the clip_len, stride, size and crop_size of training; ``train.amp`` through
        `modeling.amp_mode` the precision to run it in).
    """
    from vidattn.engine.modeling import build_model

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    classes = list(ckpt.get("classes") or [])
    if not classes:
        raise VidattnError(f"{path}: checkpoint lacks the class list")
    model = build_model(cfg, len(classes), pretrained=False)
    state = ckpt["ema"] if use_ema and isinstance(ckpt.get("ema"), dict) else ckpt["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VidattnError(f"{path}: weights do not match model {cfg.model.name!r}: {str(exc)[:200]}") from None
    return model.to(device).eval(), classes, cfg
