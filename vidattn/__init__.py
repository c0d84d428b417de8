"""vidattn: video understanding with attention."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `vidattn.explain(model, clip)` without importing torch for every `import vidattn` (the CLI's start-up).
    if name == "explain":
        from vidattn.explainer.maps import explain

        return explain
    raise AttributeError(f"module 'vidattn' has no attribute {name!r}")
