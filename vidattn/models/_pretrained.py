"""Load torchvision's Kinetics-400 video weights (or any state dict) into a vidattn model.

Sources, tried in this order for ``pretrained="torchvision"``:
1. the torch hub cache, ``torch.hub.get_dir()/checkpoints/<torchvision file name>``;
2. a download from torchvision's URL (only when the machine is online).
``pretrained=<path>`` loads that file (a bare state dict, or a checkpoint dict with a
``"state_dict"`` / ``"model"`` entry).

Keys map one-to-one (torchvision's ``fc.*`` becomes ``head.fc.*``). The check is
explicit, not ``strict=False``: every model key must be loaded except the parameters of
attention layers (and of the attention-pooling head), every checkpoint key must be
used, and shapes must match. The classifier is left freshly initialised when
``num_classes`` differs from the checkpoint's. Files are read with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from vidattn.errors import VidattnError
from vidattn.layers import RecordsAttention

__all__ = ["TORCHVISION_WEIGHTS", "attention_param_names", "load_pretrained", "torchvision_checkpoint_path"]

#: vidattn model name -> torchvision weights enum name (in ``torchvision.models.video``).
TORCHVISION_WEIGHTS = {"r3d_18": "R3D_18_Weights", "mc3_18": "MC3_18_Weights", "r2plus1d_18": "R2Plus1D_18_Weights"}


def _torchvision_url(name: str) -> str:
    if name not in TORCHVISION_WEIGHTS:
        raise VidattnError(
            f"no torchvision weights for {name!r} (available for {', '.join(sorted(TORCHVISION_WEIGHTS))}); "
            "pass pretrained=<path to a state dict> instead"
        )
    import torchvision.models.video as tvv

    return getattr(tvv, TORCHVISION_WEIGHTS[name]).KINETICS400_V1.url


def torchvision_checkpoint_path(name: str) -> Path:
    """Where torch hub caches torchvision's weights for model ``name``."""
    url = _torchvision_url(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated download, a pickle with code, not a torch file...
        raise VidattnError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise VidattnError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _fetch_torchvision(name: str) -> dict[str, Tensor]:
    path = torchvision_checkpoint_path(name)
    if path.is_file():
        return _read_state_dict(path)
    url = _torchvision_url(name)
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=False)
    except Exception as e:
        raise VidattnError(
            f"torchvision weights for {name!r} are not cached at {path} and the download from {url} failed "
            f"({type(e).__name__}: {e}); copy the file there or pass pretrained=<path>"
        ) from e


def attention_param_names(model: nn.Module) -> set[str]:
    """State-dict keys that belong to attention layers or the attention-pooling head."""
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        if isinstance(module, RecordsAttention):
            prefix = f"{mod_name}." if mod_name else ""
            sub = module.state_dict()
            if hasattr(module, "fc"):  # the attention head's classifier is not an attention parameter
                sub = {k: v for k, v in sub.items() if not k.startswith("fc.")}
            names.update(prefix + k for k in sub)
    return names


def _map_torchvision_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {("head." + k if k.startswith("fc.") else k): v for k, v in state.items()}


def load_pretrained(model: nn.Module, name: str, source: str | os.PathLike, *, num_classes: int | None = None) -> None:
    """Load weights into ``model`` in place, checking every key.

    Args:
        model: a vidattn VideoResNet.
        name: the registered model name (selects torchvision's file for ``"torchvision"``).
        source: ``"torchvision"`` or a path to a state dict / checkpoint.
        num_classes: the model's classes; when the checkpoint's classifier differs it is
            not loaded (the model keeps its fresh classifier).

    Raises:
        VidattnError: missing file, no network, unreadable file, or keys / shapes that do
            not match (the message lists them).
    """
    if str(source) == "torchvision":
        state = _fetch_torchvision(name)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise VidattnError(f"pretrained weights not found: {path}")
        state = _read_state_dict(path)
    state = _map_torchvision_keys(state)
    own = model.state_dict()
    fc_keys = [k for k in state if k.startswith("head.fc.")]
    if any(k in own and own[k].shape != state[k].shape for k in fc_keys):
        for k in fc_keys:  # different num_classes: keep the model's new classifier
            state.pop(k)
        fc_skipped = {k for k in own if k.startswith("head.fc.")}
    else:
        fc_skipped = set()
    allowed_missing = attention_param_names(model) | fc_skipped
    missing = sorted(k for k in own if k not in state and k not in allowed_missing)
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise VidattnError(f"weights from {source} do not fit {name!r}: " + "; ".join(parts))
    # Every non-attention key is present and shaped right, so a non-strict load now only
    # leaves the attention parameters at their (identity) initialisation.
    model.load_state_dict(state, strict=False)
