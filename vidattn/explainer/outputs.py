"""The files of `vidattn explain --out DIR`, per video in ``DIR/<video stem>/``, each written atomically:

- ``explain.json``: the prediction, every sample's true frame index, presentation time, temporal weight,
  hard-attention pick and per-layer map peak, the most attended frames, the views (`document`);
- ``overlay.mp4``: every frame of the video, the frame and each layer's heat map side by side, above a strip
  with the weight curve over the whole video, a cursor, and this frame's weight as a bar;
- ``contact_sheet.png``: the most attended frames, best first, with their maps;
- ``attention.png``: the temporal weight against time with the predicted class's probability per view;
- ``maps.npz``: the arrays (frame_index, time_s, weight, picked, and ``map:<layer>`` at the map's resolution).

Nothing is written outside ``DIR`` (the folder name is `vidattn.keyframes.outputs.safe_stem` of the file).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vidattn._io import atomic_path, atomic_write_bytes, atomic_write_text, writing_to
from vidattn.explainer.render import MAX_PANELS, overlay_frames, panel_size, plot_attention, sheet
from vidattn.explainer.video import ExplainOptions, VideoExplanation

__all__ = ["FILES", "document", "write_outputs"]

FILES = {
    "json": "explain.json",
    "overlay": "overlay.mp4",
    "contact_sheet": "contact_sheet.png",
    "plot": "attention.png",
    "maps": "maps.npz",
}


def _peak(values: np.ndarray, box: tuple[int, int, int]) -> list[float] | None:
    """``[x, y]`` in frame pixels of the centre of a map's highest cell (None where there is no map).

    The map covers the centre square `box` ``(x, y, side)`` of the frame, the part the model sees.
    """
    if np.isnan(values).all():
        return None
    row, col = np.unravel_index(int(np.nanargmax(values)), values.shape)
    h, w = values.shape
    x0, y0, side = box
    return [round(x0 + (col + 0.5) * side / w, 2), round(y0 + (row + 0.5) * side / h, 2)]


def document(ex: VideoExplanation, options: ExplainOptions | None = None) -> dict[str, Any]:
    """The ``explain.json`` document of one video (also what ``--json`` prints)."""
    opts = options or ExplainOptions()
    info = ex.info
    width, height = int(info.width), int(info.height)
    ranked = ex.top_samples(opts.top_frames)
    frames = []
    for pos, (index, t, w) in enumerate(zip(ex.indices.tolist(), ex.times.tolist(), ex.weights.tolist(), strict=True)):
        entry: dict[str, Any] = {"frame_index": index, "time_s": round(t, 6), "weight": round(float(w), 6)}
        if ex.picked is not None:
            entry["picked"] = bool(ex.picked[pos])
        if ex.maps:
            entry["peaks"] = {name: _peak(maps[pos], ex.seen_box) for name, maps in ex.maps.items()}
        frames.append(entry)
    return {
        "video": ex.video,
        "num_frames": int(info.num_frames),
        "fps": round(ex.fps, 6),
        "duration_s": round(info.num_frames / ex.fps, 6),
        "width": width,
        "height": height,
        "model_view": dict(zip(("x", "y", "side"), ex.seen_box, strict=True)),
        "checkpoint": ex.checkpoint,
        "model": ex.model_name,
        "clip_len": ex.clip_len,
        "stride": ex.stride,
        "prediction": [{"label": label, "prob": prob} for label, prob in ex.topk],
        "layers": [
            {"name": layer.name, "kind": layer.kind, "map_size": list(ex.maps[layer.name].shape[1:])}
            for layer in ex.layers
            if layer.name in ex.maps
        ],
        "overlay_layers": list(ex.maps)[:MAX_PANELS],
        "frames": frames,
        "top_frames": [
            {
                "rank": rank,
                "frame_index": int(ex.indices[pos]),
                "time_s": round(float(ex.times[pos]), 6),
                "weight": round(float(ex.weights[pos]), 6),
            }
            for rank, pos in enumerate(ranked, start=1)
        ],
        "views": [
            {
                "start_frame": int(ex.indices[a]),
                "end_frame": int(ex.indices[b]),
                "start_s": round(float(ex.times[a]), 6),
                "end_s": round(float(ex.times[b]), 6),
                "label": ex.classes[c] if c < len(ex.classes) else str(c),
                "prob": round(p, 6),
            }
            for a, b, c, p in ex.windows
        ],
    }


def _npz(ex: VideoExplanation) -> bytes:
    arrays = {"frame_index": ex.indices, "time_s": ex.times, "weight": ex.weights}
    if ex.picked is not None:
        arrays["picked"] = ex.picked
    arrays.update({f"map:{name}": maps for name, maps in ex.maps.items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def write_outputs(
    ex: VideoExplanation, doc: dict[str, Any], out_dir: str | os.PathLike, options: ExplainOptions | None = None,
    used: set[str] | None = None,
) -> Path:  # fmt: skip
    """Write the files of one video into ``out_dir/<stem>/`` (see the module docstring); returns that folder.

    ``doc["files"]`` is set to the names written (relative to the folder).

    Raises:
        OutputError: a file cannot be written (read-only folder, full disk).
        VideoDecodeError: the video cannot be decoded again for the overlay.
    """
    from vidattn.data.decode import open_video
    from vidattn.data.encode import write_video
    from vidattn.keyframes.outputs import safe_stem, video_dir

    opts = options or ExplainOptions()
    root = Path(out_dir)
    with writing_to(root):
        folder = video_dir(root, safe_stem(ex.video), used if used is not None else set())
    size = panel_size(int(ex.info.width), int(ex.info.height), opts.min_side, opts.max_side)
    ranked = ex.top_samples(opts.top_frames)
    doc["files"] = dict(FILES)
    with writing_to(folder):
        with open_video(ex.video, backend=opts.backend, timeout_s=opts.timeout_s) as reader:
            wanted = sorted({int(ex.indices[p]) for p in ranked})
            stills = dict(zip(wanted, reader.get_frames(wanted, numpy=True), strict=True))
            # The overlay streams: one decoded frame at a time in, one encoded frame out.
            with atomic_path(folder / FILES["overlay"], suffix=".tmp.mp4") as tmp:
                frames = overlay_frames(ex, reader.iter_frames(numpy=True), size)
                doc["overlay_frames"] = write_video(tmp, frames, fps=ex.fps, crf=23)
        atomic_write_bytes(folder / FILES["contact_sheet"], _png(sheet(ex, stills, ranked, size)))
        atomic_write_bytes(folder / FILES["plot"], plot_attention(ex, ranked))
        atomic_write_bytes(folder / FILES["maps"], _npz(ex))
        atomic_write_text(folder / FILES["json"], json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=1))
    return folder


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
