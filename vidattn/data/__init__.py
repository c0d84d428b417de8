"""Decode -> sample -> batch: the data pipeline shared by training, key frames, tracking and scoring."""

from vidattn.data.decode import VideoInfo, VideoReader, available_backends, open_video, probe
from vidattn.errors import VideoDecodeError

__all__ = ["VideoDecodeError", "VideoInfo", "VideoReader", "available_backends", "open_video", "probe"]
