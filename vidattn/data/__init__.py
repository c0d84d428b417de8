"""Decode -> sample -> batch: the data pipeline shared by training, key frames, tracking and scoring."""

from vidattn.data.datasets import (
    VIDEO_EXTENSIONS,
    ReaderCache,
    VideoDataset,
    VideoRecord,
    load_annotations,
    load_classes,
    save_classes,
    scan_videos,
)
from vidattn.data.decode import VideoInfo, VideoReader, available_backends, open_video, probe
from vidattn.data.loader import EpochSampler, ErrorsManifest, build_loader, collate_videos
from vidattn.data.sampling import (
    ClipInfo,
    ClipSampler,
    ClipTooShortError,
    RandomClipSampler,
    SegmentSampler,
    SlidingWindowSampler,
    UniformClipSampler,
    create_sampler,
    make_rng,
)
from vidattn.data.transforms import VideoTransform, center_crop, spatial_views, three_crop
from vidattn.errors import VideoDecodeError

__all__ = [
    "VIDEO_EXTENSIONS",
    "ClipInfo",
    "ClipSampler",
    "ClipTooShortError",
    "EpochSampler",
    "ErrorsManifest",
    "RandomClipSampler",
    "ReaderCache",
    "SegmentSampler",
    "SlidingWindowSampler",
    "UniformClipSampler",
    "VideoDataset",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "VideoRecord",
    "VideoTransform",
    "available_backends",
    "build_loader",
    "center_crop",
    "collate_videos",
    "create_sampler",
    "load_annotations",
    "load_classes",
    "make_rng",
    "open_video",
    "probe",
    "save_classes",
    "scan_videos",
    "spatial_views",
    "three_crop",
]
