"""User-facing jobs: probe, key frames, tracking and archive scoring. The CLI calls these."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from vidattn.errors import VidattnError, VideoDecodeError

__all__ = ["prepare_out_dir", "report_failure"]


def prepare_out_dir(out_dir: str | os.PathLike) -> None:
    """Create `out_dir` and check it can be written, before any video is decoded (one line if it cannot)."""
    from vidattn._io import ensure_output_dir

    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise VidattnError(f"--out {out_dir} exists and is not a directory")
    ensure_output_dir(out_dir)


def report_failure(
    path: str, exc: VidattnError, *, as_json: bool, out: Callable[[str], None], err: Callable[[str], None]
) -> None:
    """One error line for a video that failed (and its JSON error record with ``--json``); the job goes on."""
    if as_json:
        out(json.dumps({"video": str(path), "error": str(getattr(exc, "reason", exc))}, ensure_ascii=False))
    err(f"Error: {exc}" if isinstance(exc, VideoDecodeError) else f"Error: {path}: {exc}")
