"""`vidattn explain`: wiring from the command line to `vidattn.explainer` (load, explain, write, print).

The work lives in the domain package: `vidattn.explainer.video.explain_video` runs a checkpoint over one
video, `vidattn.explainer.outputs` writes its files. This module loads the model once, runs both per video,
and prints one summary (or one JSON document) per video and one error line per bad file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vidattn.apps import prepare_out_dir, report_failure
from vidattn.errors import VidattnError

if TYPE_CHECKING:
    from vidattn.explainer.video import ExplainOptions

__all__ = ["run_explain"]


def run_explain(
    inputs: Sequence[str],
    *,
    checkpoint: str,
    out_dir: str | None = None,
    options: ExplainOptions | None = None,
    as_json: bool = False,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = print,
) -> int:
    """Explain every input; one error line per bad file, the others go on.

    Returns:
        The number of inputs that failed (the CLI exits non-zero when it is positive).

    Raises:
        VidattnError: the checkpoint, the layers or the output folder are unusable (nothing can be explained).
    """
    from vidattn.explainer.outputs import document, write_outputs
    from vidattn.explainer.video import ExplainModel, ExplainOptions, explain_video  # noqa: F811
    from vidattn.keyframes.pipeline import expand_globs

    opts = options or ExplainOptions()
    model = ExplainModel.load(checkpoint, opts)  # a bad checkpoint or layer name: one line, nothing written
    if out_dir is not None:
        prepare_out_dir(out_dir)
    if not model.layers:
        err("note: the model has no spatial attention layer; explaining when it looks (temporal weights) only")
    failures = 0
    used: set[str] = set()
    for path in expand_globs(inputs):
        try:
            ex = explain_video(path, model, opts)
            doc = document(ex, opts)
            folder = write_outputs(ex, doc, out_dir, opts, used) if out_dir is not None else None
        except VidattnError as exc:
            failures += 1
            report_failure(path, exc, as_json=as_json, out=out, err=err)
            continue
        if as_json:
            out(json.dumps(doc, ensure_ascii=False, allow_nan=False))
            continue
        label, prob = ex.topk[0]
        where = f" -> {folder}" if folder is not None else ""
        out(f"{path}: {label} ({prob:.3f}), {len(ex.indices)} frames weighed, {len(ex.maps)} map layer(s){where}")
        for top in doc["top_frames"][:3]:
            rank, index, when = top["rank"], top["frame_index"], top["time_s"]
            out(f"  #{rank:<2d} frame {index:>7d}  {when:>9.2f} s  weight {top['weight']:.2f}")
    return failures
