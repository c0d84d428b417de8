"""Where a model looks: its attention layers' weights turned into one map per input frame.

Every vidattn attention layer records its weights inside `vidattn.layers.collect_attention`; this
module turns the recorded tensors of the layers that look *where* into maps over the input frames:

- ``spatial``: `SpatialAttention` and `LocalAttention` (also inside CBAM and STC, as ``<name>.spatial``)
  record a sigmoid gate ``(B, T', H', W')`` in [0, 1]: that is the map.
- ``stn``: `SpatialTransformer` records affine matrices ``(B, T', 2, 3)``; its map is the region of the
  input the warp samples (1 inside the warped square, 0 outside), drawn on a ``STN_GRID`` square grid.
- ``nonlocal``: `NonLocalBlock` records ``(B, N, M)`` softmax rows; its map is the attention each key
  position receives, averaged over all queries (rows), on the key grid (after the block's subsampling).

Feature time steps ``T'`` map to input frames as the heads do (`vidattn.models.heads.expand_time_weights`):
frame ``i`` takes step ``floor(i * T' / T)``. `explain` is the notebook entry point: a model and a clip in,
numpy arrays out (`vidattn.explain`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidattn.errors import VidattnError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "STN_GRID",
    "Explanation",
    "MapLayer",
    "batch_maps",
    "batch_picks",
    "explain",
    "glimpse_frames",
    "map_layers",
    "select_layers",
]

#: Side of the grid an STN's warped region is drawn on.
STN_GRID = 32


@dataclass(frozen=True)
class MapLayer:
    """An attention layer with a spatial map: its module name (the `collect_attention` key) and kind."""

    name: str
    kind: str  # spatial | stn | nonlocal
    subsample: tuple[int, int, int] = (1, 1, 1)  # nonlocal: the key grid's pooling


def map_layers(model: nn.Module) -> list[MapLayer]:
    """Every layer of `model` that gives a spatial map, in module order (see the module docstring)."""
    from vidattn.layers import LocalAttention, NonLocalBlock, SpatialAttention, SpatialTransformer

    found = []
    for name, module in model.named_modules():
        if isinstance(module, (SpatialAttention, LocalAttention)):
            found.append(MapLayer(name, "spatial"))
        elif isinstance(module, SpatialTransformer):
            found.append(MapLayer(name, "stn"))
        elif isinstance(module, NonLocalBlock):
            found.append(MapLayer(name, "nonlocal", tuple(module.subsample)))
    return found


def select_layers(model: nn.Module, names: Sequence[str] | None, *, where: str = "model") -> list[MapLayer]:
    """The map layers `names` asks for: exact module names, or a prefix such as ``layer2`` (all below it).

    Args:
        model: the model.
        names: the requested names; None or empty means every map layer (possibly none).
        where: how to name the model in errors (the checkpoint path).

    Raises:
        VidattnError: a name matches no map layer, or names were given and the model has no spatial attention.
    """
    available = map_layers(model)
    if not names:
        return available
    if not available:
        kinds = "spatial, local, cbam, stc, stn or nonlocal"
        raise VidattnError(f"{where}: the model has no spatial attention (layers with maps: {kinds}); drop --layers")
    chosen: list[MapLayer] = []
    for name in names:
        hits = [m for m in available if m.name == name or m.name.startswith(name.rstrip(".") + ".")]
        if not hits:
            listed = ", ".join(m.name for m in available)
            raise VidattnError(f"unknown layer {name!r}; layers with spatial maps: {listed}")
        chosen.extend(m for m in hits if m not in chosen)
    return chosen


def _to_frames(maps: Tensor, t: int) -> Tensor:
    """``(B, T', ...)`` per feature step -> ``(B, t, ...)`` per input frame (frame i takes step i*T'//t)."""
    steps = maps.shape[1]
    if steps == t:
        return maps
    return maps[:, torch.arange(t, device=maps.device) * steps // t]


def _stn_region(theta: Tensor, side: int = STN_GRID) -> Tensor:
    """``(..., 2, 3)`` affine matrices -> ``(..., side, side)`` masks of the input region each one samples."""
    lead = theta.shape[:-2]
    a = theta[..., :2].reshape(-1, 2, 2).double()
    shift = theta[..., 2].reshape(-1, 2, 1).double()
    coords = (torch.arange(side, dtype=torch.float64, device=theta.device) + 0.5) / side * 2 - 1  # pixel centres
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()])  # (2, side*side), normalised x, y
    # A point p is sampled iff A^-1 (p - shift) lies in the output square [-1, 1]^2.
    det = torch.linalg.det(a)
    ok = det.abs() > 1e-9
    inv = torch.linalg.inv(torch.where(ok[:, None, None], a, torch.eye(2, dtype=a.dtype, device=a.device)))
    src = inv @ (points[None] - shift)  # (n, 2, side*side)
    inside = (src.abs() <= 1).all(1) & ok[:, None]
    return inside.float().reshape(*lead, side, side)


def _key_grid(n: int, m: int, t: int, aspect: float, subsample: tuple[int, int, int]) -> tuple[int, int, int]:
    """The key grid ``(t, h, w)`` of a non-local block from its query count `n`, key count `m` and frame shape."""
    best = None
    for tq in range(1, n + 1):
        if n % tq:
            continue
        hw = n // tq
        for h in range(1, hw + 1):
            if hw % h:
                continue
            w = hw // h
            grid = tuple(math.ceil(s / k) for s, k in zip((tq, h, w), subsample, strict=True))
            if math.prod(grid) != m:
                continue
            score = (abs(math.log(h / w) - math.log(aspect)), tq > t)  # the frame's aspect; no more steps than frames
            if best is None or score < best[0]:
                best = (score, grid)
    if best is None:
        raise VidattnError(f"non-local weights of {n} queries and {m} keys fit no (t, h, w) grid")
    return best[1]


def glimpse_frames(model: nn.Module, recorded: dict[str, Tensor], t: int) -> Tensor | None:
    """``(B, k, L)``: the input frames of each glimpse a glimpse model cut out in this pass, or None for others."""
    from vidattn.models.glimpse import GlimpseNet

    mask = recorded.get(":mask")
    if not isinstance(model, GlimpseNet) or mask is None:
        return None
    k, length = model.glimpse_plan(t)
    centres = mask.nonzero()[:, 1].reshape(mask.shape[0], -1)[:, :k]  # sorted: the glimpses' temporal order
    starts = (centres - length // 2).clamp(0, t - length)
    return starts[..., None] + torch.arange(length, device=mask.device)


def batch_maps(
    recorded: dict[str, Tensor],
    layers: Sequence[MapLayer],
    t: int,
    aspect: float = 1.0,
    glimpses: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per chosen layer, its map over each input frame of the batch ``(B, t, h, w)`` (float32, map resolution).

    Args:
        recorded: what `collect_attention` gathered during one forward pass of a batch of clips.
        layers: the layers to extract (`select_layers`).
        t: frames per input clip.
        aspect: the input frames' height / width (to lay out a non-local block's positions).
        glimpses: a glimpse model's `glimpse_frames`: its backbone's layers saw only these frames, so their
            maps cover only them; every other frame's map is NaN.

    Raises:
        VidattnError: a chosen layer recorded nothing (it did not run in this pass).
    """
    out: dict[str, Tensor] = {}
    for layer in layers:
        weights = recorded.get(layer.name)
        if weights is None:
            raise VidattnError(f"layer {layer.name!r} recorded no attention in this forward pass")
        weights = weights.float()
        in_glimpses = glimpses is not None and layer.name.startswith("backbone.")
        frames = glimpses.shape[-1] if in_glimpses else t
        if layer.kind == "spatial":  # (B, T', H', W')
            maps = weights
        elif layer.kind == "stn":  # (B, T', 2, 3)
            maps = _stn_region(weights)
        else:  # nonlocal (B, N, M): attention received per key position
            b, n, m = weights.shape
            gt, gh, gw = _key_grid(n, m, frames, aspect, layer.subsample)
            maps = weights.mean(1).reshape(b, gt, gh, gw)
        maps = _to_frames(maps, frames)
        if in_glimpses:  # (B*k, L, h, w) over the glimpses -> (B, t, h, w), NaN where no glimpse looked
            b, k, length = glimpses.shape
            full = maps.new_full((b, t, *maps.shape[-2:]), float("nan"))
            full[torch.arange(b, device=maps.device)[:, None], glimpses.reshape(b, k * length)] = maps.reshape(
                b, k * length, *maps.shape[-2:]
            )
            maps = full
        out[layer.name] = maps
    return out


def batch_picks(recorded: dict[str, Tensor], t: int) -> Tensor | None:
    """``(B, t)`` bool: the frames a hard attention chose (glimpse centres, hard temporal picks), or None."""
    masks = [_to_frames(w, t) > 0.5 for key, w in recorded.items() if key.endswith(":mask")]
    if not masks:
        return None
    picked = masks[0]
    for mask in masks[1:]:
        picked = picked | mask
    return picked


@dataclass
class Explanation:
    """What `explain` returns (numpy arrays; ``B`` clips of ``T`` frames, ``H x W`` pixels, ``K`` classes).

    Attributes:
        probs: ``(B, K)`` class probabilities.
        temporal: ``(B, T)`` the model's weight of each frame (``frame_weights``; sums to 1 per clip).
        spatial: per map layer, ``(B, T, H, W)``: its map upsampled (bilinear) to the frame. Values are the
            layer's own: a gate in [0, 1] (spatial), 0/1 (stn), attention received (nonlocal); NaN on the
            frames a glimpse model's backbone did not look at.
        picked: ``(B, T)`` bool, the frames a hard attention chose (glimpse models), or None.
        layers: the `MapLayer` of each entry of `spatial`.
    """

    probs: np.ndarray
    temporal: np.ndarray
    spatial: dict[str, np.ndarray] = field(default_factory=dict)
    picked: np.ndarray | None = None
    layers: list[MapLayer] = field(default_factory=list)


@torch.no_grad()
def explain(model: nn.Module, clip: Tensor | np.ndarray, layers: Sequence[str] | None = None) -> Explanation:
    """Where and when `model` looks in `clip`: temporal weights, spatial maps per layer, hard-attention picks.

    Example:
        >>> from vidattn.engine.checkpoint import load_model
        >>> model, classes, cfg = load_model("runs/x/checkpoints/best.pt")
        >>> ex = vidattn.explain(model, clip)  # clip: (C, T, H, W) normalised as the model was trained
        >>> ex.temporal.shape, ex.spatial["layer1.0.attn.spatial"].shape  # (1, T), (1, T, H, W)

    Args:
        model: a vidattn model (it needs ``frame_weights``, as every registered model has).
        clip: the model's input, ``(C, T, H, W)`` or ``(B, C, T, H, W)`` float (the device transform's output;
            `vidattn.data.transforms.VideoTransform` makes it from uint8 frames).
        layers: map layers to return (module names or prefixes, as `select_layers`); None: all of them.

    Returns:
        An `Explanation` of numpy arrays.
    """
    from vidattn.layers import collect_attention

    x = torch.as_tensor(clip)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise VidattnError(f"explain: expected a clip (C, T, H, W) or (B, C, T, H, W), got shape {tuple(x.shape)}")
    if not hasattr(model, "frame_weights"):
        raise VidattnError(f"explain: {type(model).__name__} has no frame_weights()")
    param = next(model.parameters(), None)
    x = x.to(param.device if param is not None else "cpu", torch.float32)
    chosen = select_layers(model, layers)
    was_training = model.training
    model.eval()
    try:
        with collect_attention(model) as recorded:
            logits, weights = model.frame_weights(x, return_logits=True)
    finally:
        model.train(was_training)
    b, _, t, h, w = x.shape
    glimpses = glimpse_frames(model, recorded, t)
    spatial = {
        name: F.interpolate(maps.flatten(0, 1)[:, None], size=(h, w), mode="bilinear", align_corners=False)
        .reshape(b, t, h, w)
        .cpu()
        .numpy()
        for name, maps in batch_maps(recorded, chosen, t, h / w, glimpses).items()
    }
    picks = batch_picks(recorded, t)
    return Explanation(
        probs=logits.float().softmax(-1).cpu().numpy(),
        temporal=weights.float().cpu().numpy(),
        spatial=spatial,
        picked=None if picks is None else picks.cpu().numpy(),
        layers=chosen,
    )
