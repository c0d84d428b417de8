"""Pictures of a `VideoExplanation`: the overlay video's frames, the contact sheet and the attention plot.

Each layer's map is shown as a heat map blended on the frame: the map is scaled to [0, 1] per frame (its own
minimum to its maximum, over at least a tenth of its maximum, so a flat gate stays flat instead of showing
noise), coloured with matplotlib's ``turbo``, and blended with an opacity that grows with the value, so the
cold parts of the frame stay readable. A frame between two samples shows its nearest sample's map.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from vidattn.explainer.video import seen_box

if TYPE_CHECKING:
    from vidattn.explainer.video import VideoExplanation

__all__ = ["MAX_PANELS", "blend_heat", "composite", "overlay_frames", "panel_size", "plot_attention", "sheet"]

#: Layers shown side by side in the overlay video and on the contact sheet (the first ones chosen).
MAX_PANELS = 4
_BAR = (255, 159, 28)
_PICK = (44, 200, 90)


@lru_cache(maxsize=1)
def _lut() -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["turbo"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def _unit(values: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] per frame (see the module docstring)."""
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    span = max(hi - lo, 0.1 * abs(hi), 1e-12)
    return np.clip((values - lo) / span, 0, 1)


def blend_heat(frame: np.ndarray, values: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    """`frame` ``(H, W, 3)`` uint8 with the map `values` (any size; NaN = no map: the frame unchanged) on top."""
    from PIL import Image

    if np.isnan(values).all():
        return frame.copy()
    h, w = frame.shape[:2]
    unit = Image.fromarray(_unit(np.nan_to_num(values, nan=float(np.nanmin(values)))).astype(np.float32), mode="F")
    v = np.asarray(unit.resize((w, h), Image.BILINEAR), dtype=np.float32).clip(0, 1)
    colour = _lut()[(v * 255).astype(np.uint8)].astype(np.float32)
    a = (alpha * np.sqrt(v))[..., None]
    return (frame.astype(np.float32) * (1 - a) + colour * a).astype(np.uint8)


def panel_size(width: int, height: int, min_side: int = 256, max_side: int = 480) -> tuple[int, int]:
    """``(w, h)`` of one panel: the frame scaled so its short side is at least `min_side` and its long side at
    most `max_side` (the latter wins), both even (H.264 in yuv420p needs even sizes)."""
    scale = max(min_side / max(1, min(width, height)), 1.0)
    scale = min(scale, max_side / max(1, max(width, height)))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _caption(img, text: str, xy: tuple[int, int], fill=(255, 255, 255)) -> None:
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = xy
    draw.rectangle([x, y, x + right - left + 4, y + bottom - top + 4], fill=(0, 0, 0))
    draw.text((x + 2 - left, y + 2 - top), text, fill=fill, font=font)


def composite(frame: np.ndarray, ex: VideoExplanation, sample: int, size: tuple[int, int]) -> np.ndarray:
    """The frame and, for each shown layer, the frame with that layer's map at `sample`, side by side."""
    from PIL import Image

    w, h = size
    base = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))
    x0, y0, side = seen_box(w, h)  # the maps cover the centre square the model sees; the rest is dimmed
    outside = (base * 0.45).astype(np.uint8)
    names = list(ex.maps)[:MAX_PANELS]
    panels = [Image.fromarray(base.copy())]
    _caption(panels[0], "frame", (2, 2))
    for name in names:
        panel = outside.copy()
        region = np.s_[y0 : y0 + side, x0 : x0 + side]
        panel[region] = blend_heat(base[region], ex.maps[name][sample])
        panel = Image.fromarray(panel)
        _caption(panel, name, (2, 2))
        panels.append(panel)
    out = Image.new("RGB", (w * len(panels), h))
    for i, panel in enumerate(panels):
        out.paste(panel, (i * w, 0))
    return np.asarray(out)


def _bar(width: int, height: int, ex: VideoExplanation, frame_index: int, weight: float, picked: bool) -> np.ndarray:
    """The strip under an overlay frame: the weight curve over the whole video, a cursor, and this frame's bar."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (20, 20, 20))
    draw = ImageDraw.Draw(img)
    top = max(1.0, float(ex.weights.max()))
    curve_h = height // 2
    n = max(1, int(ex.info.num_frames) - 1)
    xs = (ex.indices / n * (width - 1)).tolist()
    ys = (curve_h - 2 - ex.weights / top * (curve_h - 4)).tolist()
    draw.line(list(zip(xs, ys, strict=True)), fill=(120, 170, 255), width=2)
    cursor = frame_index / n * (width - 1)
    draw.line([(cursor, 0), (cursor, curve_h)], fill=(255, 255, 255), width=1)
    bar_top = curve_h + 2
    draw.rectangle([0, bar_top, (width - 1) * min(weight / top, 1.0), height - 2], fill=_PICK if picked else _BAR)
    when = frame_index / ex.fps
    text = f"frame {frame_index}  {when:.2f} s  weight {weight:.2f}" + ("  picked" if picked else "")
    _caption(img, text, (width // 2, bar_top))
    return np.asarray(img)


def overlay_frames(
    ex: VideoExplanation, frames: Iterator[tuple[int, np.ndarray]], size: tuple[int, int]
) -> Iterator[np.ndarray]:
    """Overlay video frames, one per decoded frame: panels (`composite`) above the weight strip (`_bar`)."""
    strip_h = max(40, size[1] // 5 // 2 * 2)  # even: H.264 in yuv420p needs an even frame height
    for index, frame in frames:
        sample = int(ex.sample_of(np.asarray([index]))[0])
        weight = float(np.interp(index, ex.indices, ex.weights))
        picked = bool(ex.picked[sample]) if ex.picked is not None else False
        panels = composite(frame, ex, sample, size)
        yield np.concatenate([panels, _bar(panels.shape[1], strip_h, ex, index, weight, picked)], axis=0)


def sheet(ex: VideoExplanation, frames: dict[int, np.ndarray], ranked: list[int], size: tuple[int, int]) -> np.ndarray:
    """The contact sheet: one row per most attended sample (best first): the frame and its maps, captioned."""
    from vidattn.viz import contact_sheet

    images, labels = [], []
    for rank, pos in enumerate(ranked, start=1):
        index = int(ex.indices[pos])
        images.append(composite(frames[index], ex, pos, size))
        picked = "  picked" if ex.picked is not None and ex.picked[pos] else ""
        labels.append(f"#{rank}  frame {index}  {ex.times[pos]:.2f} s  weight {ex.weights[pos]:.2f}{picked}")
    width = images[0].shape[1] if images else size[0]
    return contact_sheet(images, labels, thumb_width=width, columns=1)


def plot_attention(ex: VideoExplanation, ranked: list[int]) -> bytes:
    """PNG: the temporal weight against time, the most attended frames numbered, hard-attention picks, and on a
    second axis each view's probability of the predicted class over the span it covers."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ex.times, ex.weights, color="#1f77b4", linewidth=1.2, label="temporal weight (uniform = 1)")
    ax.axhline(1.0, color="#9e9e9e", linestyle=":", linewidth=0.8)
    if ex.picked is not None and ex.picked.any():
        ax.scatter(ex.times[ex.picked], ex.weights[ex.picked], marker="v", color="#2ca02c", zorder=3, s=28)
        ax.scatter([], [], marker="v", color="#2ca02c", label="glimpse picked")
    if ranked:
        ax.scatter(ex.times[ranked], ex.weights[ranked], color="#d62728", zorder=4, s=22, label="most attended")
        for rank, pos in enumerate(ranked, start=1):
            xy = (ex.times[pos], ex.weights[pos])
            ax.annotate(str(rank), xy, textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("temporal weight")
    ax.set_ylim(0, max(1.2, float(ex.weights.max()) * 1.15))
    top_label, top_prob = ex.topk[0]
    prob_ax = ax.twinx()
    if len(ex.window_probs) and top_label in ex.classes:
        k = ex.classes.index(top_label)
        for i, (a, b, _, _) in enumerate(ex.windows):
            t0, t1 = ex.times[a], max(ex.times[b], ex.times[a] + 1e-3)
            prob_ax.plot([t0, t1], [ex.window_probs[i, k]] * 2, color="#ff7f0e", linewidth=2, alpha=0.6)
        prob_ax.plot([], [], color="#ff7f0e", linewidth=2, label=f"P({top_label}) per view")
    prob_ax.set_ylim(0, 1.05)
    prob_ax.set_ylabel("class probability")
    if len(ex.times):
        ax.set_xlim(float(ex.times[0]), max(float(ex.times[-1]), float(ex.times[0]) + 1e-3))
    name = ex.video.rsplit("/", 1)[-1]
    ax.set_title(f"{name}: {top_label} ({top_prob:.2f})", fontsize=9)
    handles = ax.get_legend_handles_labels()
    more = prob_ax.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="lower right", fontsize=7, ncols=4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
