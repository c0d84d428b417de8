"""`vidattn probe`: container, codec, size, frames, fps, duration and backend of each file."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from vidattn.data.decode import probe
from vidattn.errors import VideoDecodeError

__all__ = ["run_probe"]

_COLUMNS = ("container", "codec", "width", "height", "num_frames", "fps", "duration_s", "rotation", "backend")


def run_probe(
    paths: Sequence[str],
    *,
    as_json: bool = False,
    backend: str = "auto",
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = print,
) -> int:
    """Probe each path; one line (or JSON object) per good file, one error line per bad one.

    Returns:
        The number of files that failed (the CLI exits non-zero when it is positive).
    """
    failures = 0
    if not as_json:
        out("\t".join(("path", *_COLUMNS)))
    for path in paths:
        try:
            info = probe(path, backend=backend)
        except VideoDecodeError as exc:
            failures += 1
            if as_json:
                out(json.dumps({"path": str(path), "error": exc.reason}, ensure_ascii=False))
            err(f"Error: {exc}")
            continue
        if as_json:
            out(json.dumps(info.to_dict(), ensure_ascii=False))
        else:
            row = info.to_dict()
            out("\t".join([str(path)] + [str(row[c]) for c in _COLUMNS]))
    return failures
