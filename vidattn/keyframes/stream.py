"""Options of `vidattn keyframes` and the frame stream it scores; imports neither torch nor the scorers.

`vidattn keyframes` starts decoding its first video from here (`open_frames`, in a child process)
before it imports the app, so start-up and scoring overlap with decoding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vidattn.data.decode import DEFAULT_TIMEOUT_S
from vidattn.data.prefetch import PrefetchedFrames
from vidattn.keyframes.probe import FrameProbe

__all__ = ["KeyframeOptions", "DEFAULT_SAMPLE_FPS", "decoder_backend", "open_frames"]


@dataclass
class KeyframeOptions:
    """Settings of one `vidattn keyframes` run (defaults are the CLI's)."""

    k: int | None = 8  # most key frames; None = no limit (with threshold)
    threshold: float | None = None  # smallest normalised score of a key frame
    sample_fps: float | None = None  # frames per second scored; None = 4 (training-free) or the model's stride
    min_gap_s: float = 1.0  # minimum time between two key frames
    min_shot_s: float = 0.25  # minimum time between two cuts (PySceneDetect's min_scene_len)
    dup_similarity: float = 0.97  # descriptor cosine similarity that makes two frames duplicates
    decode_size: int = 160  # short side at decode time for descriptors (training-free)
    window_s: float = 8.0  # self-attention neighbourhood half-width in seconds
    image_size: int | None = None  # short side of the key-frame JPEGs; None = native
    batch_size: int = 32  # frames per descriptor batch / windows per model batch
    backend: str = "auto"  # decoder: auto (= pyav here, see decoder_backend) | pyav | decord
    decoders: int = 2  # training-free sampled pass: 1, or 2 = a long file is read as two halves at once (same result)
    device: str = "auto"  # where a model runs: auto | cpu | cuda (the training-free scorer is numpy, on the CPU)
    timeout_s: float | None = DEFAULT_TIMEOUT_S


DEFAULT_SAMPLE_FPS = 4.0


def decoder_backend(name: str) -> str:
    """The decoder for key frames: "auto" means PyAV.

    Key frames read each file once, in order, and touch only a few frames at random afterwards, which
    is PyAV's strength; decord's advantage is random access. Importing decord2 also costs about
    450 MB of resident memory (measured), which alone would break the 1 GiB budget of a long video.
    """
    return "pyav" if name == "auto" else name


def open_frames(
    path: str | os.PathLike,
    options: KeyframeOptions,
    *,
    size: int | None = None,
    step: int | None = None,
    process: bool = False,
) -> PrefetchedFrames:
    """Start decoding the frames `score_video` scores, in a background thread.

    Without ``step`` (the training-free scorer): samples at ``sample_fps`` (default 4) at
    ``decode_size``, letting the decoder skip non-reference frames (each sample is then the nearest
    frame that decodes, with its true index); a `FrameProbe` looks at every frame the decoder decodes
    on the way (``probe_result`` of the stream, for frame-exact cuts); with ``decoders=2`` a long file is
    read by two decoders at once, one per half (`vidattn.data.halves`: the same frames and probe as one
    decoder; read the stream with ``parts()``). With ``step`` and ``size`` (a
    model): exact frames every ``step`` frames (or at ``sample_fps``) at the model's size, sampled like
    its training clips.
    ``process`` decodes in a child process (`PrefetchedFrames`).
    """
    backend = decoder_backend(options.backend)
    if step is None:
        fps = options.sample_fps or DEFAULT_SAMPLE_FPS
        return PrefetchedFrames(
            path,
            backend=backend,
            size=options.decode_size,
            timeout_s=options.timeout_s,
            process=process,
            fps=fps,
            nearest=True,
            on_decoded=FrameProbe(),
            split=options.decoders > 1,
        )
    return PrefetchedFrames(
        path,
        backend=backend,
        size=size,
        timeout_s=options.timeout_s,
        process=process,
        step=step,
        fps=options.sample_fps,
    )
