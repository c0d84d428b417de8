"""``create_attn(name, channels, **kw)``: one factory for every attention layer (timm style)."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from vidattn.errors import VidattnError

from .cbam import CBAM
from .eca import EfficientChannelAttention
from .hard import HardTemporalAttention
from .local import LocalAttention
from .non_local import NonLocalBlock
from .spatial import SpatialAttention
from .squeeze_excite import SqueezeExcite
from .stc import STCAttention
from .stn import SpatialTransformer
from .temporal import TemporalAttention
from .temporal_self_attn import TemporalSelfAttention

__all__ = ["ATTN_LAYERS", "create_attn", "get_attn", "list_attn"]

#: Attention names accepted by :func:`create_attn`, and the class each one builds.
ATTN_LAYERS: dict[str, type[nn.Module]] = {
    "se": SqueezeExcite,
    "eca": EfficientChannelAttention,
    "cbam": CBAM,
    "spatial": SpatialAttention,
    "local": LocalAttention,
    "temporal": TemporalAttention,
    "tsa": TemporalSelfAttention,
    "nonlocal": NonLocalBlock,
    "stc": STCAttention,
    "hard": HardTemporalAttention,
    "stn": SpatialTransformer,
}

# Extra spellings people use; they map to a canonical name above.
_ALIASES = {
    "non_local": "nonlocal",
    "non-local": "nonlocal",
    "squeeze_excite": "se",
    "temporal_self_attn": "tsa",
    "spatial3d": "spatial",
}
_PRESETS: dict[str, dict[str, Any]] = {"spatial3d": {"kernel_size": (3, 7, 7)}}


def list_attn() -> list[str]:
    """The canonical attention names, sorted."""
    return sorted(ATTN_LAYERS)


def _is_none(name: object) -> bool:
    return name is None or name is False or (isinstance(name, str) and name.strip().lower() in ("", "none"))


def get_attn(name: str | type[nn.Module] | None) -> tuple[type[nn.Module] | None, dict[str, Any]]:
    """Resolve an attention name (or class) to its class and preset kwargs.

    Raises:
        VidattnError: an unknown name; the message lists close matches.
    """
    if _is_none(name):
        return None, {}
    if isinstance(name, type):
        return name, {}
    if not isinstance(name, str):
        raise VidattnError(f"attention must be a name, a class or None, got {type(name).__name__}")
    key = name.strip().lower()
    preset = dict(_PRESETS.get(key, {}))
    key = _ALIASES.get(key, key)
    if key not in ATTN_LAYERS:
        known = sorted([*ATTN_LAYERS, *_ALIASES])
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise VidattnError(f"unknown attention {name!r}{hint} (known: {', '.join(list_attn())}, or 'none')")
    return ATTN_LAYERS[key], preset


def create_attn(name: str | type[nn.Module] | None, channels: int, **kwargs: Any) -> nn.Module | None:
    """Build the attention layer ``name`` for ``channels`` input channels.

    Args:
        name: one of :data:`ATTN_LAYERS` (``"se"``, ``"eca"``, ``"cbam"``, ``"spatial"``,
            ``"spatial3d"``, ``"local"``, ``"temporal"``, ``"tsa"``, ``"nonlocal"``,
            ``"stc"``, ``"hard"``, ``"stn"``), a layer class, or None / ``"none"`` / ``""``.
        channels: input channels ``C`` of the ``(B, C, T, H, W)`` features.
        **kwargs: keyword arguments of the layer (``None`` values are dropped so a config
            can leave them unset).

    Returns:
        The module, or None when ``name`` means "no attention".

    Raises:
        VidattnError: unknown name or a keyword the layer does not take.
    """
    cls, preset = get_attn(name)
    if cls is None:
        return None
    kw = {**preset, **{k: v for k, v in kwargs.items() if v is not None}}
    try:
        return cls(channels, **kw)
    except TypeError as e:
        raise VidattnError(f"attention {name!r}: {e}") from e
