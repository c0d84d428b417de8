"""Drawing helpers: box overlays, a push-style video writer (PyAV) and plots.

Everything takes and returns ``(H, W, 3)`` uint8 RGB numpy arrays, so it works for frames coming
from any decoder. For writing a whole iterable of frames at once, see
:func:`vidattn.data.encode.write_video`; :class:`VideoWriter` is for frames produced one by one
inside a processing loop (tracking overlays), without keeping them in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "PALETTE",
    "preload",
    "VideoWriter",
    "color_for",
    "contact_sheet",
    "thumbnail",
    "draw_boxes",
    "plot_confusion",
    "plot_keyframe_scores",
]

# Ten well-separated colours (Tableau 10) so neighbouring ids stay distinguishable.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


def color_for(index: int) -> tuple[int, int, int]:
    """A stable colour for an id."""
    return PALETTE[index % len(PALETTE)]


def draw_boxes(
    frame: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    labels: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    width: int = 2,
) -> np.ndarray:
    """Draw ``x, y, w, h`` boxes (pixels, top-left origin) with optional text labels.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB image; not modified.
        boxes: ``(N, 4)`` boxes. Boxes partly outside the frame are clipped by the drawing.
        labels: One string per box, drawn on a filled tag above the box (inside when no room).
        colors: One RGB colour per box; defaults to :data:`PALETTE` by index.
        width: Line width in pixels.

    Returns:
        A new ``(H, W, 3)`` uint8 array with the overlay.
    """
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, box in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        if not np.all(np.isfinite(box)):
            continue
        x, y, w, h = box
        color = tuple(colors[i]) if colors is not None else color_for(i)
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=color, width=width)
        if labels is not None and i < len(labels) and labels[i]:
            left, top, right, bottom = draw.textbbox((0, 0), labels[i], font=font)
            tw, th = right - left + 4, bottom - top + 4
            ty = y - th if y - th >= 0 else y  # above the box, or inside it at the top edge
            draw.rectangle([x, ty, x + tw, ty + th], fill=color)
            draw.text((x + 2 - left, ty + 2 - top), labels[i], fill=(255, 255, 255), font=font)
    return np.asarray(img)


class VideoWriter:
    """Write RGB frames one at a time to a video file with PyAV.

    The frame size is taken from the first frame. H.264 with yuv420p needs even sizes, so an odd
    width or height is padded by one replicated pixel row/column (the player shows the original
    content; the overlay stays aligned).

    Example:
        >>> with VideoWriter("overlay.mp4", fps=25) as out:
        ...     for frame in frames:
        ...         out.write(frame)
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, codec: str = "libx264", crf: int = 20) -> None:
        import av

        self.path = os.fspath(path)
        self.count = 0
        self._container = av.open(self.path, mode="w")
        options = {"crf": str(crf)} if codec in ("libx264", "libx265") else {}
        rate = Fraction(fps if fps and fps > 0 else 25.0).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate, options=options)
        self._stream.pix_fmt = "yuv420p"
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame."""
        import av

        array = np.asarray(frame, dtype=np.uint8)
        h, w = array.shape[:2]
        if self._size is None:
            self._size = (h + h % 2, w + w % 2)
            self._stream.height, self._stream.width = self._size
        if (h, w) != self._size:
            array = np.pad(array, ((0, self._size[0] - h), (0, self._size[1] - w), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        """Flush the encoder and close the file; safe to call twice."""
        if self._container is None:
            return
        if self.count:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plot_confusion(confusion, classes: Sequence[str], path: str | os.PathLike, normalize: bool = True) -> None:
    """Save a confusion-matrix heat map (rows = true class, columns = predicted) as an image.

    Args:
        confusion: ``(K, K)`` counts (tensor or array).
        classes: The ``K`` class names.
        path: Output image (PNG).
        normalize: Colour by row-normalised rate (each true class sums to 1); counts are printed
            in the cells when ``K`` is small enough to read them.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion.cpu() if hasattr(confusion, "cpu") else confusion, dtype=np.float64)
    k = cm.shape[0]
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    side = min(4 + 0.35 * k, 30)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ticks = np.arange(k)
    fs = max(4, 10 - k // 10)
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=90, fontsize=fs)
    ax.set_yticks(ticks, [str(c) for c in classes], fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    color = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=fs, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)


# --- key frames (vidattn keyframes) -------------------------------------------------------------
def thumbnail(frame: np.ndarray, width: int) -> np.ndarray:
    """``frame`` (uint8 ``(H, W, 3)``) resized to ``width``, aspect ratio kept; as it is when already that wide.

    Bilinear after a box reduction by an integer factor (Pillow's ``reducing_gap``): a 1080p frame to
    320 px takes less than half the time of a plain bilinear resize (2.3 against 5.4 ms, measured), within
    a grey level of it on average. Pillow releases the GIL while it resizes, so thumbnails can be made in threads.
    """
    from PIL import Image

    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.shape[1] == width:
        return frame
    im = Image.fromarray(frame)
    height = max(1, round(im.height * width / im.width))
    return np.asarray(im.resize((width, height), Image.BILINEAR, reducing_gap=2.0))


def contact_sheet(
    images: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    *,
    thumb_width: int = 320,
    columns: int | None = None,
    pad: int = 6,
    background: tuple[int, int, int] = (24, 24, 24),
) -> np.ndarray:
    """A grid of thumbnails with a caption under each, as one ``(H, W, 3)`` uint8 image.

    Args:
        images: ``(H, W, 3)`` uint8 RGB frames, in reading order; sizes may differ.
        labels: one caption per image.
        thumb_width: width of every thumbnail (heights keep each image's aspect ratio).
        columns: images per row; default about square (at most 4).
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    if not images:
        img = Image.new("RGB", (thumb_width, 40), background)
        ImageDraw.Draw(img).text((pad, pad), "no key frames", fill=(220, 220, 220), font=font)
        return np.asarray(img)
    cols = columns or min(4, max(1, int(np.ceil(np.sqrt(len(images))))))
    thumbs = [Image.fromarray(thumbnail(frame, thumb_width)) for frame in images]
    caption_h = 16 if labels is not None else 0
    cell_h = max(t.height for t in thumbs) + caption_h
    rows = (len(thumbs) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (thumb_width + pad) + pad, rows * (cell_h + pad) + pad), background)
    draw = ImageDraw.Draw(sheet)
    for i, thumb in enumerate(thumbs):
        x = pad + (i % cols) * (thumb_width + pad)
        y = pad + (i // cols) * (cell_h + pad)
        sheet.paste(thumb, (x, y))
        if labels is not None and i < len(labels):
            draw.text((x + 2, y + thumb.height + 2), labels[i], fill=(235, 235, 235), font=font)
    return np.asarray(sheet)


def preload() -> None:
    """Import matplotlib (Agg) and Pillow now: about half a second a command can overlap with its decoding,
    by calling this in a background thread before it needs the plots.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends import backend_agg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401
    from PIL import Image  # noqa: F401


def plot_keyframe_scores(
    times_s: Sequence[float],
    scores: Sequence[float],
    *,
    keyframes: Sequence[tuple[float, float, int]] = (),
    cuts: Sequence[float] = (),
    title: str = "",
    threshold: float | None = None,
) -> bytes:
    """Score-over-time plot as PNG bytes: the curve, chosen frames (numbered), detected cuts.

    Args:
        times_s, scores: the per-frame score curve.
        keyframes: ``(time_s, score, rank)`` of each chosen frame.
        cuts: times of the detected cuts (dashed vertical lines).
        threshold: drawn as a horizontal line when given.
    """
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, safe in threads

    fig = Figure(figsize=(10, 3.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(times_s, scores, color="#1f77b4", linewidth=1.0, label="score")
    for k, t in enumerate(cuts):
        ax.axvline(t, color="#7f7f7f", linestyle="--", linewidth=0.8, label="cut" if k == 0 else None)
    if keyframes:
        kt, ks, _ = zip(*keyframes, strict=True)
        ax.scatter(kt, ks, color="#d62728", zorder=3, s=24, label="key frame")
        for t, s, r in keyframes:
            ax.annotate(str(r), (t, s), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
    if threshold is not None:
        ax.axhline(threshold, color="#2ca02c", linestyle=":", linewidth=0.8, label="threshold")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.12)
    if len(times_s):
        ax.set_xlim(min(times_s), max(max(times_s), min(times_s) + 1e-3))
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, ncols=4)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
