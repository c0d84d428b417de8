"""A one-dimensional scale correlation filter, batched over targets.

DSST (Danelljan et al., "Accurate Scale Estimation for Robust Visual Tracking", BMVC 2014) and
its fast variant fDSST (TPAMI 2017) learn a separate correlation filter over *scale*: the target
box is cropped at ``S`` geometric scale factors, each crop is resized to one small model size,
featurised and flattened into a vector, and a 1-D filter over the scale axis locates the scale
whose appearance best matches the model. This is cheaper and finer than running the translation
filter on a scale pyramid, because the crops cover only the target (not the padded window) and
are tiny. CSR-DCF uses the same scale search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vidattn.tracking.features import Image, hog_features, sample_windows


@dataclass
class ScaleConfig:
    """Hyper-parameters of :class:`ScaleFilter`."""

    num_scales: int = 13  # scale samples per frame (odd)
    step: float = 1.03  # ratio between neighbouring scale samples
    sigma_factor: float = 0.25  # label width, in units of sqrt(num_scales)
    model_area: int = 32 * 16  # pixel area of one resized scale sample (fDSST)
    cell: int = 4
    lam: float = 0.01
    lr: float = 0.025  # learning rate of the running numerator / denominator (per update)


class ScaleFilter:
    """DSST-style scale estimation for ``B`` targets at once."""

    def __init__(self, config: ScaleConfig | None = None, device: str | torch.device = "cpu") -> None:
        self.cfg = config or ScaleConfig()
        if self.cfg.num_scales % 2 != 1:
            raise ValueError("num_scales must be odd")
        self.device = torch.device(device)
        s = self.cfg.num_scales
        self.exponents = torch.arange(s, device=self.device, dtype=torch.float32) - (s - 1) / 2
        self.factors = self.cfg.step**self.exponents  # (S,), ascending
        sigma = math.sqrt(s) * self.cfg.sigma_factor
        label = torch.exp(-0.5 * self.exponents**2 / sigma**2)  # peak in the middle sample
        self.label_f = torch.fft.fft(label)  # (S,)
        self.window = torch.hann_window(s + 2, periodic=False, device=self.device)[1:-1]  # (S,)

    def _samples(self, img: Image, centres: torch.Tensor, sizes: torch.Tensor, pyramid=None) -> torch.Tensor:
        """Feature vectors of the ``S`` scale crops: ``(B, D, S)`` FFT over the scale axis."""
        cfg = self.cfg
        b, s = centres.shape[0], cfg.num_scales
        mh, mw = self.model_hw
        sz = sizes.view(b, 1, 2) * self.factors.view(1, s, 1)  # (B, S, 2) crop size in pixels
        crops = sample_windows(
            img, centres.repeat_interleave(s, 0), sz.reshape(-1, 2), (mh, mw), pyramid
        )  # (B*S, 3, mh, mw)
        feat = hog_features(crops, cell=cfg.cell).reshape(b, s, -1).transpose(1, 2)  # (B, D, S)
        return torch.fft.fft(feat * self.window, dim=2)

    @torch.no_grad()
    def init(self, img: Image, centres: torch.Tensor, sizes: torch.Tensor) -> None:
        """Learn the first model. ``img`` (1, 3, H, W) float; ``centres``, ``sizes`` (B, 2) pixels."""
        cfg = self.cfg
        # One model size for all targets (so they batch); its aspect is the targets' mean aspect.
        aspect = float(torch.exp(torch.log(sizes[:, 0] / sizes[:, 1]).mean()))
        side = math.sqrt(cfg.model_area)
        mw = max(2, round(side * math.sqrt(aspect) / cfg.cell)) * cfg.cell
        mh = max(2, round(side / math.sqrt(aspect) / cfg.cell)) * cfg.cell
        self.model_hw = (mh, mw)
        xf = self._samples(img, centres, sizes)
        self.num = self.label_f.view(1, 1, -1) * xf.conj()  # (B, D, S)
        self.den = torch.view_as_real(xf).square().sum((1, 3))  # (B, S)

    @torch.no_grad()
    def detect(
        self, img: Image, centres: torch.Tensor, sizes: torch.Tensor, pyramid=None, targets=None
    ) -> torch.Tensor:
        """Relative scale change of each target (1.0 = unchanged), sub-step refined.

        Args:
            img: ``(1, 3, H, W)`` float frame.
            centres: Target centres ``(N, 2)`` pixels.
            sizes: Target sizes ``(N, 2)`` pixels.
            pyramid: Pooled-frame cache shared with the other samplers of this frame.
            targets: Indices ``(N,)`` of the targets whose models to use (all ``B`` when None), so
                targets that take their scale elsewhere pay nothing here.

        Returns:
            ``(N,)`` scale factors.
        """
        num, den = self.num, self.den
        if targets is not None:
            num, den = num.index_select(0, targets), den.index_select(0, targets)
        zf = self._samples(img, centres, sizes, pyramid)
        resp = torch.fft.ifft((num * zf).sum(1) / (den + self.cfg.lam), dim=1).real  # (N, S)
        s = self.cfg.num_scales
        i = resp.argmax(1)
        ar = torch.arange(resp.shape[0], device=self.device)
        c0, lo, hi = resp[ar, i], resp[ar, (i - 1).clamp_min(0)], resp[ar, (i + 1).clamp_max(s - 1)]
        den = lo - 2 * c0 + hi
        inner = (i > 0) & (i < s - 1) & (den < -1e-12)
        delta = torch.where(inner, 0.5 * (lo - hi) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)
        return self.cfg.step ** (self.exponents[i] + delta)

    @torch.no_grad()
    def update(
        self,
        img: Image,
        centres: torch.Tensor,
        sizes: torch.Tensor,
        rate: torch.Tensor,
        pyramid=None,
        targets: torch.Tensor | None = None,
    ) -> None:
        """Blend in a new sample with per-target learning rate factor ``rate`` in [0, 1].

        Args:
            img: ``(1, 3, H, W)`` float frame.
            centres: Target centres ``(N, 2)`` pixels.
            sizes: Target sizes ``(N, 2)`` pixels.
            rate: ``(N,)`` learning rate factors.
            pyramid: Pooled-frame cache shared with the other samplers of this frame.
            targets: Indices ``(N,)`` of the targets whose models learn (all ``B`` when None); the
                others keep theirs and pay nothing.
        """
        xf = self._samples(img, centres, sizes, pyramid)
        lr = (self.cfg.lr * rate).view(-1, 1)
        num, den = (self.num, self.den) if targets is None else (self.num[targets], self.den[targets])
        num = (1 - lr.unsqueeze(2)) * num + lr.unsqueeze(2) * self.label_f.view(1, 1, -1) * xf.conj()
        den = (1 - lr) * den + lr * torch.view_as_real(xf).square().sum((1, 3))
        if targets is None:
            self.num, self.den = num, den
        else:
            self.num[targets], self.den[targets] = num, den
