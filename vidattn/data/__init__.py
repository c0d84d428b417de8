"""Decode -> sample -> batch: the data pipeline shared by training, key frames, tracking and scoring.

Names load on first use (PEP 562), so ``from vidattn.data import open_video`` does not import torch
until frames become tensors: a command that only decodes to numpy (training-free key frames) never
imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

from vidattn.errors import VideoDecodeError  # noqa: F401 (re-exported)

# name -> submodule of vidattn.data that defines it
_EXPORTS = {
    "VIDEO_EXTENSIONS": "datasets",
    "ReaderCache": "datasets",
    "VideoDataset": "datasets",
    "VideoRecord": "datasets",
    "load_annotations": "datasets",
    "load_classes": "datasets",
    "save_classes": "datasets",
    "scan_videos": "datasets",
    "VideoInfo": "decode",
    "VideoReader": "decode",
    "available_backends": "decode",
    "open_video": "decode",
    "probe": "decode",
    "EpochSampler": "loader",
    "ErrorsManifest": "loader",
    "build_loader": "loader",
    "collate_videos": "loader",
    "PrefetchedFrames": "prefetch",
    "ClipInfo": "sampling",
    "ClipSampler": "sampling",
    "ClipTooShortError": "sampling",
    "CoverageSampler": "sampling",
    "RandomClipSampler": "sampling",
    "SegmentSampler": "sampling",
    "UniformClipSampler": "sampling",
    "create_sampler": "sampling",
    "sampler_for": "sampling",
    "make_rng": "sampling",
    "VideoTransform": "transforms",
    "center_crop": "transforms",
    "mirror_classes": "transforms",
    "flip_mirror": "transforms",
    "spatial_views": "transforms",
    "three_crop": "transforms",
}

__all__ = sorted([*_EXPORTS, "VideoDecodeError"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vidattn.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vidattn.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
