"""Video transforms. Spatial view selection runs per sample on the CPU (it is only slicing);
everything else runs batched on the target device, on uint8 input, converting to float after
the host->device copy so the copy moves 4x fewer bytes.

Layouts: a loader batch is uint8 ``(B, T, H, W, C)`` (or ``(B, V, T, H, W, C)`` with views); a
model input is float ``(B, C, T, H, W)``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "spatial_views",
    "center_crop",
    "three_crop",
    "mirror_classes",
    "flip_mirror",
    "VideoTransform",
]

# torchvision's Kinetics-400 video models were trained with these statistics.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


#: Words that a left/right mirror image turns into another word (a class "move_left" mirrors to "move_right").
_MIRROR_WORDS = {
    "left": ("right",),
    "right": ("left",),
    "clockwise": ("counterclockwise", "anticlockwise"),
    "counterclockwise": ("clockwise",),
    "anticlockwise": ("clockwise",),
}


def mirror_classes(classes: Sequence[str]) -> tuple[list[int], list[str]]:
    """What a horizontally flipped clip of each class is, read from the class names.

    A name with a side word (left/right, clockwise/counterclockwise) mirrors to the class whose name has the
    words swapped ("Pushing something from left to right" <-> "... from right to left"); any other class is
    its own mirror. Returns the mirror index of every class and the names that say a side but whose mirror
    is not a class (a flip would give such a clip a label that does not exist).
    """
    index = {name.lower(): i for i, name in enumerate(classes)}
    mirror, unmatched = list(range(len(classes))), []
    for i, name in enumerate(classes):
        parts = re.split(r"([^A-Za-z]+)", name.lower())
        if not any(part in _MIRROR_WORDS for part in parts):
            continue
        options = [_MIRROR_WORDS.get(part, (part,)) for part in parts]
        candidates = ["".join(choice) for choice in itertools.product(*options)]
        found = [index[c] for c in candidates if c in index]
        if found:
            mirror[i] = found[0]
        else:
            unmatched.append(name)
    return mirror, unmatched


def flip_mirror(setting: bool | str, classes: Sequence[str]) -> tuple[list[int] | None, str | None]:
    """What horizontal flips do under `setting` (``data.flip`` in training, ``data.test_flip`` at test).

    Returns the class each class's flipped clip belongs to (`mirror_classes`), or None when `setting` turns
    flips off: false, or auto while a class names a side and has no mirror class. The second value is that
    class (auto: why flips are off; true: it keeps its label).
    """
    if setting is False:
        return None, None
    mirror, unmatched = mirror_classes(classes)
    first = unmatched[0] if unmatched else None
    return (None if first is not None and setting == "auto" else mirror), first


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Centre ``size x size`` crop of ``(..., H, W, C)`` frames (a view, no copy)."""
    h, w = frames.shape[-3:-1]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return frames[..., top : top + size, left : left + size, :]


def three_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Three ``size x size`` crops along the long side (start, centre, end): ``(3, ..., S, S, C)``."""
    h, w = frames.shape[-3:-1]
    if w >= h:
        offsets = [(max(0, (h - size) // 2), x) for x in (0, max(0, (w - size) // 2), max(0, w - size))]
    else:
        offsets = [(y, max(0, (w - size) // 2)) for y in (0, max(0, (h - size) // 2), max(0, h - size))]
    return torch.stack([frames[..., y : y + size, x : x + size, :] for y, x in offsets])


def spatial_views(
    frames: torch.Tensor, size: int, mode: str, rng: np.random.Generator, *, copy: bool = True
) -> torch.Tensor:
    """Square views of ``(V, T, H, W, C)`` clips: ``(V * n, T, S, S, C)`` with n = 3 for "three", else 1.

    With ``copy=False``, "center" and "random" return views of `frames`: `VideoDataset` uses that,
    since `collate_videos` stacks the views into the batch, the one copy they need (an extra copy here
    cost ~7% of the loader's throughput on 720p clips).

    "random" takes a random square (same for every frame of a clip); the scale/aspect jitter
    happens later on the device. Frames smaller than `size` are padded by edge replication.
    """
    h, w = frames.shape[-3:-1]
    if h < size or w < size:
        pad_h, pad_w = max(0, size - h), max(0, size - w)
        v = frames.shape[0]
        x = rearrange(frames, "v t h w c -> (v t) c h w").float()
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate").to(torch.uint8)
        frames = rearrange(x, "(v t) c h w -> v t h w c", v=v)
        h, w = frames.shape[-3:-1]
    if mode == "three":
        return rearrange(three_crop(frames, size), "n v t h w c -> (v n) t h w c").contiguous()
    if mode == "center":
        view = center_crop(frames, size)
    else:
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(0, w - size + 1))
        view = frames[..., top : top + size, left : left + size, :]
    return view.contiguous() if copy else view


class VideoTransform(torch.nn.Module):
    """Batched device transform: uint8 ``(B, T, H, W, C)`` -> normalised float ``(B, C, T, S, S)``.

    Training applies a random resized crop (scale and aspect jitter, the same box for every
    frame of a clip) and an optional horizontal flip with one `grid_sample` call for the whole
    batch; evaluation only resizes. Where left/right carries the class, give `mirror` and train through
    `augment`, which relabels a flipped clip as its mirror class.

    Args:
        size: output side S.
        train: apply random crop/flip.
        scale: area fraction range of the random crop.
        ratio: aspect ratio range of the random crop.
        flip: allow horizontal flips (train only).
        mirror: the class a flipped clip of each class becomes (`mirror_classes`); None = every class its own.
        jitter: contrast jitter (train only): each clip's channels scaled about the clip's per-channel mean by
            one factor in [1 - jitter, 1 + jitter] times one per channel in [1 - jitter/2, 1 + jitter/2].
        hue: hue jitter (train only): each clip's colours turned about the grey axis by an angle in
            [-hue, hue] x 180 degrees and its saturation scaled by a factor in [1 - hue/2, 1 + hue/2]; the
            brightness (the mean of the channels) is kept.
        mean, std: per-channel normalisation in [0, 1] units.
    """

    def __init__(
        self,
        size: int = 112,
        *,
        train: bool = False,
        scale: tuple[float, float] = (0.4, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        mirror: Sequence[int] | None = None,
        jitter: float = 0.0,
        hue: float = 0.0,
        mean: tuple[float, float, float] = KINETICS_MEAN,
        std: tuple[float, float, float] = KINETICS_STD,
    ) -> None:
        super().__init__()
        self.size, self.train, self.scale, self.ratio, self.flip, self.jitter = size, train, scale, ratio, flip, jitter
        self.hue = hue
        self.mirror = None if mirror is None or list(mirror) == list(range(len(mirror))) else list(mirror)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.train and self.flip and self.mirror is not None:
            raise ValueError("flips change some classes (mirror): train through augment(video, labels)")
        return self._transform(video, generator)[0]

    def augment(
        self, video: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training transform of a ``(B, T, H, W, C)`` batch and its labels, a flipped clip relabelled as its mirror."""
        x, flipped = self._transform(video, generator)
        if self.mirror is not None and flipped is not None:
            mirrored = torch.tensor(self.mirror, device=labels.device)[labels]
            labels = torch.where(flipped.to(labels.device), mirrored, labels)
        return x, labels

    def _transform(
        self, video: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The transformed batch and, in training, which of its clips were flipped."""
        if video.dim() == 6:  # (B, V, T, H, W, C): fold views into the batch
            b = video.shape[0]
            out, _ = self._transform(rearrange(video, "b v t h w c -> (b v) t h w c"), generator)
            return rearrange(out, "(b v) c t h w -> b v c t h w", b=b), None
        if video.dim() != 5 or video.shape[-1] != 3:
            raise ValueError(f"expected uint8 video (B, T, H, W, 3), got {tuple(video.shape)}")
        b, t, h, w, _ = video.shape
        x = rearrange(video, "b t h w c -> b (t c) h w").float().div_(255)
        flipped = None
        if self.train:
            theta = self._random_affine(b, h, w, x.device, generator)
            flipped = theta[:, 0, 0] < 0
            grid = F.affine_grid(theta, [b, 1, self.size, self.size], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        elif (h, w) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        x = rearrange(x, "b (t c) h w -> b c t h w", c=3)
        if self.train and self.hue > 0:
            x = self._jitter_hue(x, generator)
        if self.train and self.jitter > 0:
            x = self._jitter_contrast(x, generator)
        return (x - self.mean) / self.std, flipped

    def _jitter_contrast(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Scale each clip's channels about their mean (over the clip) by a random gain; clamped to [0, 1]."""
        b = x.shape[0]
        gen_device = generator.device if generator is not None else x.device
        rand = torch.rand(b, 4, generator=generator, device=gen_device).to(x.device)
        gain = (1 + self.jitter * (2 * rand[:, :1] - 1)) * (1 + self.jitter / 2 * (2 * rand[:, 1:] - 1))  # (B, 3)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        return ((x - mean) * gain.view(b, 3, 1, 1, 1) + mean).clamp_(0, 1)

    def _jitter_hue(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Turn each clip's colours about the grey axis and scale their saturation; clamped to [0, 1]."""
        b = x.shape[0]
        gen_device = generator.device if generator is not None else x.device
        rand = torch.rand(b, 2, generator=generator, device=gen_device).to(x.device)
        angle = (2 * rand[:, 0] - 1) * self.hue * math.pi
        saturation = 1 + self.hue / 2 * (2 * rand[:, 1] - 1)
        grey = torch.full((3, 1), 3**-0.5, device=x.device)
        along = grey @ grey.T  # projection onto the grey axis (brightness), kept
        across = torch.eye(3, device=x.device) - along  # the colour plane: turned and scaled
        turn = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=x.device) * 3**-0.5
        c, s = (torch.cos(angle) * saturation).view(b, 1, 1), (torch.sin(angle) * saturation).view(b, 1, 1)
        m = along + c * across + s * turn  # (B, 3, 3): Rodrigues' rotation about the grey axis, saturation scaled
        return torch.einsum("bij,bjthw->bithw", m, x).clamp_(0, 1)

    def _random_affine(
        self, b: int, h: int, w: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Per-sample affine maps (in grid_sample's [-1, 1] space) for a random resized crop + flip."""
        gen_device = generator.device if generator is not None else device

        def rand(n: int) -> torch.Tensor:
            return torch.rand(n, generator=generator, device=gen_device).to(device)

        area = self.scale[0] + (self.scale[1] - self.scale[0]) * rand(b)
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * rand(b)
        aspect = torch.exp(log_r)
        # Crop width/height as fractions of the frame, kept inside it.
        cw = torch.sqrt(area * aspect * h / w).clamp(max=1.0)
        ch = torch.sqrt(area / aspect * w / h).clamp(max=1.0)
        cx = (rand(b) * 2 - 1) * (1 - cw)
        cy = (rand(b) * 2 - 1) * (1 - ch)
        sign = torch.ones(b, device=device)
        if self.flip:
            sign = torch.where(rand(b) < 0.5, -sign, sign)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = cw * sign
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = ch
        theta[:, 1, 2] = cy
        return theta
