"""A discriminative correlation filter (DCF) tracker with channel, spatial and temporal attention.

Batched over targets: every tensor has a leading target axis ``B``, so tracking four objects costs
the same number of torch ops as tracking one, on the CPU or the GPU. The ingredients, and where
they come from:

- **Correlation filter in the Fourier domain**, one filter per feature channel, trained to map the
  target window to a Gaussian peak (MOSSE, Bolme et al. 2010; KCF, Henriques et al. 2015).
- **Spatial attention** -- a reliability mask over the target window, from foreground/background
  colour histograms and a centre prior; the filter is constrained to the mask with ADMM, so the
  padded window can be large without the filter learning the background (CSR-DCF, Lukežič et al.,
  "Discriminative Correlation Filter with Channel and Spatial Reliability", CVPR 2017). Off by
  default (``DCFConfig.mask``): the filter is then constrained to the plain box; on the real
  sequences that did as well or better, and on a person whose legs are in shadow the mask kept his
  shirt and the box crept up his body.
- **Channel attention** -- per-channel reliability weights from how well each channel's filter
  reproduces the label (learning reliability) and how unambiguous its detection peak is (ratio of
  the two highest peaks), blended over time (CSR-DCF).
- **Temporal attention** -- a memory of past training samples, each weighted by its age and by the
  tracker's confidence when it was taken, merged ECO-style into a few slots, with the first frame
  kept as an anchor (ECO, Danelljan et al., "Efficient Convolution Operators for Tracking", CVPR
  2017). A blind running average would forget the first frame and absorb occluders.
- **Scale** from a separate one-dimensional scale filter over 13 target crops (DSST, Danelljan et
  al., "Accurate Scale Estimation for Robust Visual Tracking", BMVC 2014), see
  :mod:`vidattn.tracking.scale`. Its crops of a target under ``small_target`` pixels carry too little
  detail to respond, so small targets take their scale from the translation filter on a
  three-level pyramid instead (SAMF, Li and Zhu 2014), where the first-frame filter votes too: the
  adapted filter learned from boxes of the estimated size and shares any lag of the estimate. The
  translation template has a fixed size in pixels, so a 10 px target is upsampled to the same
  number of cells as a 300 px one is downsampled to.
- **Colour response** fused with the filter's (Staple, Bertinetto et al., "Staple: Complementary
  Learners for Real-Time Tracking", CVPR 2016): per target, joint RGB histograms of the pixels in
  the box and in a ring round it, learned with the confidence-gated sample weight; the per-pixel
  P(target | colour), averaged over a target-sized box at every shift, is blended with the
  filter's response (scaled to a top of 1) into the response that picks the position, in the
  normal and the wide search, for targets of at least ``colour_min_size`` pixels. The PSR cue is
  measured on that fused response; the peak and anchor cues stay the filter's own. Colour
  evidence tells a thin person from his shadow and the ground where the filter's peak is weak.
- **Motion**: the search window is centred where the target's recent velocity predicts it, and a
  peak far from that prediction must answer more strongly to win (SiamFC's window penalty).
- **Confidence** from three cues, each relative to its own running reference for the target: the
  peak-to-sidelobe ratio (PSR, Bolme et al. 2010), the peak height, and the response of the
  first-frame filter at the same place (agreement between two templates: a look-alike or background
  the adapted filter drifted onto answers the original weakly). The weakest cue is the confidence.
  A target is *lost* when the peak or anchor cue is below ``lost_score``, or the PSR cue is (a
  deforming target's broad response lowers the PSR alone: then it takes a second, middling cue, or
  a PSR cue far down): its model and scale stop learning, its box stays where it was last seen
  (or, while its response keeps a clean peak, follows that peak and its scale, measured on the
  pyramid), and
  it alone pays for a wider re-detection search (the filter zero-padded to a larger
  grid) until it is found again. Found again by a jump (``refind_jump``), it stays *unconfirmed*:
  confidence capped and learned with low weight until its own cues are good for a few frames in a
  row (a look-alike beside a vanished target answers the wide search about as well as the target);
  until then it also counts as lost while its cues are under ``good_score``.
- **Cost** follows the targets, not the frame: windows are cut from the frame before any pooling.

Coordinates: boxes are ``(x, y, w, h)`` in pixels with a top-left origin; pixel ``i`` covers
``[i, i + 1)``, so a box centre is ``(x + w / 2, y + h / 2)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vidattn.tracking.features import FrameBuffer, Image, LazyFrame, extract_features, sample_windows
from vidattn.tracking.scale import ScaleConfig, ScaleFilter


@dataclass
class DCFConfig:
    """Hyper-parameters of :class:`DCFTracker` (defaults tuned on generated sequences, see README)."""

    cell: int = 4  # pixels per feature cell
    padding: float = 3.0  # context per side, in units of sqrt(w * h) (CSR-DCF's large window)
    template_size: int = 128  # sqrt of the resampled window area in pixels; fixes the cost per frame
    num_orients: int = 9  # contrast-insensitive HOG bins
    colour: bool = True  # soft colour-name channels
    label_sigma: float = 0.8  # Gaussian label width, in cells... at least
    label_sigma_factor: float = 1.0 / 16  # ...or this fraction of sqrt(w * h), whichever is larger
    lam: float = 0.01  # filter regulariser
    admm_iters: int = 2  # ADMM iterations of the mask-constrained solve (warm-started)
    admm_mu: float = 5.0
    admm_beta: float = 3.0
    admm_mu_max: float = 20.0
    # Spatial attention from a colour reliability mask (CSR-DCF); False = the plain box as the filter's support.
    # Off: with the first box moved by up to a pixel (8 runs per sequence), the box support did as well or
    # better on all five real sequences; on the drone person the mask kept his shirt, not his shadowed legs,
    # and the box crept up his body (README, issue 16).
    mask: bool = False
    mask_min_fill: float = 0.35  # fall back to the box mask when the colour mask covers less
    # ... and for targets under this size sqrt(w * h) in frame pixels: their colour histograms hold
    # too few pixels to tell the target from the background, and the mask cuts the target up.
    mask_min_size: float = 20.0
    hist_bins: int = 8  # colour histogram bins per RGB channel for the mask
    hist_lr: float = 0.04
    # Colour response fused with the filter's (Staple, Bertinetto et al. 2016): the share of the
    # response that picks the position which is the mean P(target | colour) over a target-sized box
    # at each shift; 0 = off. The PSR cue is measured on that fused response.
    colour_weight: float = 0.5
    # ... for targets at least this size sqrt(w * h) in pixels. Smaller ones keep the filter alone:
    # with colour from 20 px on, a look-alike of the same colours was taken for the target again
    # and the growing 10 px target's box followed its area less well (README, issue 16).
    colour_min_size: float = 48.0
    colour_bins: int = 16  # bins per RGB channel of the joint per-pixel histograms (foreground: the box ...
    colour_ring: float = 0.5  # ... background: a ring this wide per side, in sqrt(w * h), round it; 0 = the window)
    colour_lr: float = 0.04  # their learning rate per frame, times the sample weight (confidence-gated like the filter)
    scale: ScaleConfig = field(default_factory=ScaleConfig)  # the DSST-style 1-D scale filter
    scale_damping: float = 1.0  # fraction of the measured scale change applied per frame
    min_scale: float = 0.2  # relative to the initial box
    max_scale: float = 5.0
    memory_slots: int = 8  # temporal attention: slots of the sample memory (slot 0 = first frame)
    merge_frames: int = 6  # consecutive confident samples merged into one slot
    age_decay: float = 0.985  # per-frame decay of a slot's weight
    anchor_weight: float = 0.15  # minimum share of the first-frame sample
    channel_lr: float = 0.05  # blending of channel reliability weights
    update_interval: int = 2  # re-solve the filter (and update the scale model) every n frames (ECO: sparser is better)
    # ... but targets that take their scale from the 1-D scale filter (small_target and up) every n frames: on the
    # drone person (54 px) every frame kept him in 8 of 8 runs with the first box moved by a pixel, every 2nd in 6
    # (README, issue 16); for small targets it bought nothing measurable at a third more time per frame.
    large_update_interval: int = 1
    reuse_sample: bool = True  # train on the detection window shifted onto the target (ECO) instead of re-sampling
    psr_floor: float = 3.5  # PSR of a response with no target (noise level) -> confidence 0
    psr_lost: float = 4.0  # absolute PSR below which a target is lost whatever its history
    ref_gate: float = 0.6  # confidence above which the PSR / peak / anchor references learn
    # The first frames set the references (their mean, unless lost): the first detection, one frame
    # after training, answers far more strongly than any later one and would make every later frame
    # look like drift.
    ref_warmup: int = 5
    follow_psr: float = 0.5  # a lost target still follows its peak while its relative PSR is above this
    motion_sigma: float = 1.0  # motion prior width, in target sizes sqrt(w * h)
    motion_penalty: float = 0.15  # share of the top peak a candidate far from the predicted position loses
    velocity_lr: float = 0.3  # blending of the per-frame motion into the velocity that centres the search
    small_target: float = 48.0  # targets under this size sqrt(w * h) in pixels get their scale from a pyramid
    pyramid_step: float = 1.05  # scale ratio between the pyramid's three levels
    # Each level's peak is looked for within this many cells of the target (None: a quarter of the
    # grid each way). The filters are zero outside the box, so a level's peaks only read the box plus
    # this reach: only that part of each level is sampled.
    pyramid_reach: int | None = 2
    # A small target within this factor of small_target keeps the 1-D scale filter trained, so that
    # it finds a current model when it grows into it; smaller ones skip its update.
    scale_train_margin: float = 1.25
    # Hysteresis of the per-target switches at small_target and colour_min_size: a target keeps the
    # 1-D scale filter (the colour model) until it is this factor under the threshold.
    switch_margin: float = 1.25
    psr_ref_lr: float = 0.1  # the PSR (peak, anchor) that maps to confidence 1 is a running mean over confident frames
    peak_low: float = 0.4  # response peak / its running mean at which peak confidence is 0 ...
    peak_high: float = 0.85  # ... and 1: an occluded or vanished target answers with a weak peak
    lost_score: float = 0.3  # confidence below this: lost (no update, wider search)...
    # ... but the PSR cue, which a deforming target's broad response lowers while the peak height and
    # the first-frame template still find it, declares a target lost on its own only below this
    # share of lost_score; above it, it needs the peak or anchor cue under good_score to agree.
    psr_lost_share: float = 0.5
    good_score: float = 0.6  # confidence above this: full-weight sample (in between: down-weighted)
    redetect_factor: int = 2  # search-window growth while lost
    # A lost target found again further than this from where it was last seen (in target sizes sqrt(w * h))
    # is *unconfirmed*: a look-alike beside the vanished target answers the wide search about as
    # well as the target would. Its confidence is capped at ``unconfirmed_cap`` (which is also the
    # weight the filter learns it with, and keeps the references from learning) until its own cues
    # reach good_score for ``confirm_frames`` consecutive frames.
    refind_jump: float = 0.5
    unconfirmed_cap: float = 0.25
    confirm_frames: int = 5
    # ... and is flagged lost (not learned from, searched for with the wide window) while its own cues are
    # under good_score: without the colour mask a look-alike answers the filter well enough to pass lost_score.
    unconfirmed_lost: bool = True
    # A lost target that follows its peak (see follow_psr) keeps measuring its scale, without learning: a
    # deforming bag, lost for a hundred frames while it shrank to half its size, otherwise kept its first size
    # (README, issue 16). Lost targets that are held where they were last seen keep their size.
    rescale_following: bool = True
    # ... and takes that scale from the translation filter on the scale pyramid, as small targets do, not from the
    # 1-D scale filter. Such a target is lost because it no longer matches its appearance models (it deforms); the
    # 1-D filter, which matches 13 crops against one model, kept the bag's box at 1.7-1.9x its size while the bag
    # shrank to half of it (jittered AUC 0.557 -> 0.650, the other four sequences unchanged; README, issue 16).
    follow_pyramid_scale: bool = True
    cpu_threads: int | None = 1  # torch threads while tracking on the CPU (None: leave torch's setting)


# A frame at least this many times the area of the targets' windows is converted to float lazily (DCFTracker._lazy).
_LAZY_FRAME_RATIO = 10


@contextlib.contextmanager
def _num_threads(n: int) -> Iterator[None]:
    prev = torch.get_num_threads()
    if prev != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if prev != n:
            torch.set_num_threads(prev)


def _abs2(x: torch.Tensor) -> torch.Tensor:
    """``|x|^2`` of a complex tensor, without the strided ``.real`` / ``.imag`` views (slow on CPU)."""
    return torch.view_as_real(x).square().sum(-1)


def _hann(n: int, device: torch.device) -> torch.Tensor:
    return torch.hann_window(n + 2, periodic=False, device=device)[1:-1]


def _signed_freq(n: int, device: torch.device) -> torch.Tensor:
    """0, 1, ..., -1: circular displacement of each index (the label peak sits at index 0)."""
    return torch.fft.fftfreq(n, d=1.0 / n, device=device)


def _weight_channels(*filters: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Filters ``(hf, chan_w)``, each (N, C, h, w') and (N, C), as :meth:`DCFTracker._detect` takes them.

    Returns:
        ``(K, N, C, h, w')``: per filter, its conjugate times its channel weights.
    """
    return torch.stack([hf.conj() * w.view(w.shape[0], -1, 1, 1) for hf, w in filters])


def _joint_bins(rgb: torch.Tensor, bins: int) -> torch.Tensor:
    """Joint RGB histogram bin ``(r * bins + g) * bins + b`` of every pixel of ``rgb`` (B, 3, H, W) in [0, 1]."""
    q = (rgb.clamp(0, 1 - 1e-6) * bins).long()
    return (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]


class DCFTracker:
    """Track ``B`` targets at once with a mask-constrained multi-channel correlation filter.

    Example:
        >>> trk = DCFTracker(DCFConfig())
        >>> trk.init(frame0, torch.tensor([[205.0, 151.0, 17.0, 50.0]]))
        >>> boxes, scores = trk.update(frame1)  # (B, 4) xywh pixels, (B,) in [0, 1]

    Frames are ``(H, W, 3)`` uint8 RGB tensors or arrays (or float ``(3, H, W)`` in [0, 1]).
    """

    def __init__(self, config: DCFConfig | None = None, device: str | torch.device = "cpu") -> None:
        self.cfg = config or DCFConfig()
        self.device = torch.device(device)
        self.frame_index = 0
        self._consts: dict[tuple, torch.Tensor] = {}
        self._frame_store = FrameBuffer()  # the float image LazyFrame converts frames into

    def _const(self, key: tuple, make) -> torch.Tensor:
        """A tensor that depends only on ``key`` (grid sizes, counts), made once: per-frame ops are mostly overhead."""
        t = self._consts.get(key)
        if t is None:
            t = self._consts[key] = make()
        return t

    def _arange(self, n: int) -> torch.Tensor:
        """``torch.arange(n)`` (int64) on the device, made once."""
        return self._const(("arange", n), lambda: torch.arange(n, device=self.device))

    def _weighted(self, name: str, *filters: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Filters ``(hf, chan_w)`` as :meth:`_detect` takes them, stacked ``(K, B, C, h, w')``, kept until one changes.

        The filters and channel weights are replaced (not modified) by each solve, so they are
        recomputed once per solve rather than per frame.
        """
        tensors = [t for pair in filters for t in pair]
        cached = self._consts.get(("weighted", name))
        if cached is None or any(a is not b for a, b in zip(cached[0], tensors, strict=True)):
            cached = self._consts[("weighted", name)] = (tensors, _weight_channels(*filters))
        return cached[1]

    # ------------------------------------------------------------------ frame / patch helpers
    def _to_image(self, frame) -> Image:
        """Any frame -> ``(1, 3, H, W)`` float32 in [0, 1] on the device.

        A uint8 frame on the CPU that is much larger than the targets' windows (see :meth:`_lazy`)
        becomes a :class:`LazyFrame`: only the parts the windows read are converted (into a buffer
        of the tracker's, allocated once).
        """
        t = torch.as_tensor(frame)
        if t.dtype == torch.uint8 and t.dim() == 3 and t.shape[2] == 3 and self._lazy(t.shape[0] * t.shape[1]):
            return LazyFrame(t, self._frame_store)
        if t.dtype == torch.uint8:
            t = t.to(self.device).permute(2, 0, 1).float().mul_(1.0 / 255)  # (H, W, 3) -> (3, H, W)
        else:
            t = t.to(self.device, torch.float32)
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 or (3, H, W) float frame, got {tuple(t.shape)}")
        return t.unsqueeze(0)

    def _lazy(self, area: int) -> bool:
        """Whether a frame of ``area`` pixels is converted lazily: on the CPU, while tracking, when it is
        at least ``_LAZY_FRAME_RATIO`` times the area of the targets' windows.

        Converting part of a frame costs more per pixel than converting all of it (a strided crop,
        then a copy into the buffer, and the windows' reach to find first): measured per frame, it
        saved 10 % on 1280x720 frames with windows of a 20th to a 26th of the frame (ball1, person12_1)
        and cost 5 % on Crossing (a 6th) and 10 % on car1 (two thirds).
        """
        if self.device.type != "cpu" or not hasattr(self, "grid"):
            return False
        gh, gw = self.grid
        window = gh * gw * self.cfg.cell**2 * float(self.step.square().sum())  # pixels of all targets' windows
        return area >= _LAZY_FRAME_RATIO * window

    def _sample(self, img: Image, centres: torch.Tensor, steps: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """``N`` windows of ``gh x gw`` cells around ``centres`` (N, 2), ``steps`` (N,) pixels per template pixel."""
        ph, pw = gh * self.cfg.cell, gw * self.cfg.cell
        sizes = torch.stack([pw * steps, ph * steps], 1)
        return sample_windows(img, centres, sizes, (ph, pw), self._pyramid)

    def _features(self, patches: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches -> (windowed features' rfft2 ``(N, C, gh, gw//2+1)``, cell colours ``(N, 3, gh, gw)``)."""
        cfg = self.cfg
        cells = F.avg_pool2d(patches, cfg.cell)
        feat = extract_features(patches, cell=cfg.cell, num_orients=cfg.num_orients, colour=cfg.colour, cells=cells)
        # Orthonormal FFTs keep per-frequency energies comparable to the ADMM penalty mu.
        return torch.fft.rfft2(feat * window, norm="ortho"), cells

    # ------------------------------------------------------------------ initialisation
    def init(self, frame, boxes) -> None:
        """Start tracking ``boxes`` (B, 4) ``x, y, w, h`` pixels in ``frame``.

        Args:
            frame: First frame, ``(H, W, 3)`` uint8 RGB.
            boxes: Initial boxes, one row per target.
        """
        with self._tracking_mode():
            self._init(frame, boxes)

    @contextlib.contextmanager
    def _tracking_mode(self) -> Iterator[None]:
        """The torch settings of ``init`` and ``update``: :meth:`_threads` and inference mode.

        Inference mode rather than ``no_grad``: a frame is hundreds of tiny tensor ops whose cost is
        mostly dispatch overhead, and inference mode skips every op's autograd and version-counter
        bookkeeping (about 11 % less CPU time per frame on the real sequences, the same results). The
        tracker's state tensors are therefore inference tensors: replace them, do not update them in place.
        """
        with self._threads(), torch.inference_mode():
            yield

    def _threads(self) -> contextlib.AbstractContextManager:
        """Limit torch's intra-op threads while tracking on the CPU.

        Per-frame tensors are tiny (tens of thousands of elements): worker threads cost more in
        synchronisation than they save, and on a busy machine they make tracking several times
        slower. One thread is the fastest setting measured on 2 and 16 cores.
        """
        if self.device.type != "cpu" or self.cfg.cpu_threads is None:
            return contextlib.nullcontext()
        return _num_threads(self.cfg.cpu_threads)

    def _init(self, frame, boxes) -> None:
        cfg = self.cfg
        img = self._to_image(frame)
        self._pyramid = {}
        self._consts = {}
        boxes = torch.as_tensor(boxes, dtype=torch.float32, device=self.device).view(-1, 4)
        if (boxes[:, 2:] <= 0).any():
            raise ValueError("box width and height must be positive")
        self.num_targets = b = boxes.shape[0]
        self.frame_size = (img.shape[2], img.shape[3])
        self.pos = boxes[:, :2] + boxes[:, 2:] / 2  # (B, 2) centre x, y
        self.size = boxes[:, 2:].clone()  # (B, 2) w, h
        side = torch.sqrt(self.size.prod(1))
        self._large = side >= cfg.small_target  # takes its scale from the 1-D scale filter
        self._colour_on = side >= cfg.colour_min_size
        self._init_geometry()
        gh, gw = self.grid
        patches = self._sample(img, self.pos, self.step, gh, gw)
        xf, cells = self._features(patches, self.window)
        c = xf.shape[1]
        nb = cfg.hist_bins**3
        self.hist_fg = torch.zeros(b, nb, device=self.device)
        self.hist_bg = torch.zeros(b, nb, device=self.device)
        self._update_histograms(cells, lr=1.0)
        if cfg.colour_weight > 0:
            self.col_fg = torch.zeros(b, cfg.colour_bins**3, device=self.device)
            self.col_bg = torch.zeros_like(self.col_fg)
            self._learn_colour(patches, torch.zeros(b, 2, device=self.device), torch.ones(b, device=self.device))

        self._init_memory(xf)

        self.scale_filter = ScaleFilter(cfg.scale, self.device)
        self.scale_filter.init(img, self.pos, self.size)

        self.chan_w = torch.full((b, c), 1.0 / c, device=self.device)
        self.filter_f = None
        self.frame_index = 0
        self.lost = torch.zeros(b, dtype=torch.bool, device=self.device)
        self.vel = torch.zeros(b, 2, device=self.device)  # pixels per frame, for the search centre
        self.wide_searches = 0  # target-frames that paid for the wide re-detection search
        self.unconfirmed = torch.zeros(b, dtype=torch.bool, device=self.device)  # re-found away from there
        self.confirmed_frames = torch.zeros(b, dtype=torch.long, device=self.device)
        self._solve(xf, cells, det_rel=torch.ones(b, c, device=self.device), first=True)
        # A second template that never learns: the first frame's filter. Where the adaptive filter
        # and this one disagree about the target, the adaptive one has probably drifted.
        self.anchor_f, self.anchor_w = self.filter_f.clone(), self.chan_w.clone()
        self._crop = self._pyramid_crop()  # the part of its levels the scale pyramid samples (None: all)
        self._crop_cache: tuple | None = None  # both filters cut to that crop (see _cropped_filters)
        self.anchor_ref: torch.Tensor | None = None
        self.scores = torch.ones(b, device=self.device)
        self.psr = torch.zeros(b, device=self.device)
        self.psr_ref: torch.Tensor | None = None  # set from the first detection

    def _init_geometry(self) -> None:
        """The cell grid, window, Gaussian label, box support and mask prior, from the first boxes."""
        cfg = self.cfg
        # Window: target plus `padding * sqrt(wh)` of context; all targets share one cell grid whose
        # aspect ratio is the geometric mean of theirs, so they batch without distorting any target.
        ctx = cfg.padding * torch.sqrt(self.size.prod(1, keepdim=True))
        win = self.size + ctx  # (B, 2)
        aspect = float(torch.exp(torch.log(win[:, 0] / win[:, 1]).mean()))
        side = cfg.template_size / cfg.cell
        gw = max(8, 2 * round(side * math.sqrt(aspect) / 2))
        gh = max(8, 2 * round(side / math.sqrt(aspect) / 2))
        self.grid = (gh, gw)
        # Pixel step per template pixel: the window area is kept, its shape follows the grid.
        self.step = torch.sqrt(win.prod(1) / (gh * gw * cfg.cell**2))  # (B,)
        self.init_step = self.step.clone()
        self.window = (_hann(gh, self.device).view(-1, 1) * _hann(gw, self.device).view(1, -1)).view(1, 1, gh, gw)
        # Bins of the half spectrum that stand for two bins of the full one (all but DC and Nyquist).
        rw = torch.full((gw // 2 + 1,), 2.0, device=self.device)
        rw[0] = 1.0
        if gw % 2 == 0:
            rw[-1] = 1.0
        self._rfft_weight = rw.view(1, 1, 1, -1)

        # Gaussian label centred on index 0 (circularly), one width per target.
        sig = torch.clamp(
            cfg.label_sigma_factor * torch.sqrt(self.size.prod(1)) / (cfg.cell * self.step), min=cfg.label_sigma
        )
        fy, fx = _signed_freq(gh, self.device), _signed_freq(gw, self.device)
        d2 = fy.view(1, -1, 1) ** 2 + fx.view(1, 1, -1) ** 2
        label = torch.exp(-0.5 * d2 / sig.view(-1, 1, 1) ** 2).unsqueeze(1)  # (B, 1, gh, gw)
        self.label_f = torch.fft.rfft2(label, norm="ortho")

        # Target box in cells, centred in the window (the support of the filter before masking).
        tw = self.size[:, 0] / (cfg.cell * self.step)
        th = self.size[:, 1] / (cfg.cell * self.step)
        cy = torch.arange(gh, device=self.device, dtype=torch.float32) - (gh - 1) / 2
        cx = torch.arange(gw, device=self.device, dtype=torch.float32) - (gw - 1) / 2
        inside = (cy.view(1, -1, 1).abs() <= th.view(-1, 1, 1) / 2) & (cx.view(1, 1, -1).abs() <= tw.view(-1, 1, 1) / 2)
        self.box_mask = inside.float().unsqueeze(1)  # (B, 1, gh, gw)
        box = self.box_mask / self.box_mask.sum((2, 3), keepdim=True).clamp_min(1)
        self._box_f = torch.fft.rfft2(box)  # for the colour response's box sums
        # Centre prior for the reliability mask: an Epanechnikov-like bump over the box.
        r2 = (cy.view(1, -1, 1) / (th.view(-1, 1, 1) / 2 + 1)) ** 2 + (
            cx.view(1, 1, -1) / (tw.view(-1, 1, 1) / 2 + 1)
        ) ** 2
        self.prior = (1 - r2).clamp_min(0).unsqueeze(1)

    def _init_memory(self, xf: torch.Tensor) -> None:
        """Empty sample memory with the first frame's features in slot 0."""
        cfg, b = self.cfg, self.num_targets
        # Sample memory (temporal attention). Slot 0 holds the first frame for good.
        k = max(2, cfg.memory_slots)
        self.mem_x = torch.zeros((b, k) + tuple(xf.shape[1:]), dtype=xf.dtype, device=self.device)
        self.mem_p = torch.zeros(self.mem_x.shape, dtype=torch.float32, device=self.device)
        self.mem_conf = torch.zeros(b, k, device=self.device)
        self.mem_time = torch.zeros(b, k, device=self.device)
        self.mem_count = torch.zeros(b, k, device=self.device)
        self.mem_valid = torch.zeros(b, k, dtype=torch.bool, device=self.device)
        self.mem_x[:, 0] = xf
        self.mem_p[:, 0] = _abs2(xf)
        self.mem_conf[:, 0] = 1.0
        self.mem_count[:, 0] = 1.0
        self.mem_valid[:, 0] = True
        self.cur_slot = torch.zeros(b, dtype=torch.long, device=self.device)
        self.cur_slot_new = torch.ones(b, dtype=torch.bool, device=self.device)  # slot 0 is never merged into

    # ------------------------------------------------------------------ spatial attention
    def _hist_index(self, cells: torch.Tensor) -> torch.Tensor:
        return _joint_bins(cells, self.cfg.hist_bins)  # (B, gh, gw)

    def _update_histograms(self, cells: torch.Tensor, lr: float | torch.Tensor) -> None:
        b = cells.shape[0]
        nb = self.cfg.hist_bins**3
        idx = self._hist_index(cells) + torch.arange(b, device=self.device).view(-1, 1, 1) * nb
        fg_w = self.box_mask[:, 0]
        fg = torch.bincount(idx.flatten(), fg_w.flatten(), minlength=b * nb).view(b, nb).float()
        bg = torch.bincount(idx.flatten(), (1 - fg_w).flatten(), minlength=b * nb).view(b, nb).float()
        fg = fg / fg.sum(1, keepdim=True).clamp_min(1e-6)
        bg = bg / bg.sum(1, keepdim=True).clamp_min(1e-6)
        lr = torch.as_tensor(lr, device=self.device, dtype=torch.float32).view(-1, 1)
        self.hist_fg = (1 - lr) * self.hist_fg + lr * fg
        self.hist_bg = (1 - lr) * self.hist_bg + lr * bg

    def _likelihood(self, cells: torch.Tensor) -> torch.Tensor:
        """P(target | colour) of every cell ``(B, 1, gh, gw)`` from the foreground/background histograms."""
        idx = self._hist_index(cells).flatten(1)  # (B, gh*gw)
        pf = torch.gather(self.hist_fg, 1, idx)
        pb = torch.gather(self.hist_bg, 1, idx)
        return (pf / (pf + pb + 1e-6)).view(cells.shape[0], 1, cells.shape[2], cells.shape[3])

    def _pixel_bins(self, patches: torch.Tensor) -> torch.Tensor:
        """Joint RGB bin of every pixel of ``patches`` (B, 3, ph, pw) -> (B, ph * pw)."""
        return _joint_bins(patches, self.cfg.colour_bins).flatten(1)

    def _learn_colour(self, patches: torch.Tensor, offset: torch.Tensor, lr: torch.Tensor) -> None:
        """Blend the foreground (box at ``offset`` cells from the window centre) and background colour histograms."""
        cfg = self.cfg
        b, _, ph, pw = patches.shape
        nb = cfg.colour_bins**3
        tw = self.size[:, 0] / self.step  # box in template pixels
        th = self.size[:, 1] / self.step
        ys = torch.arange(ph, device=self.device, dtype=torch.float32) + 0.5 - ph / 2
        xs = torch.arange(pw, device=self.device, dtype=torch.float32) + 0.5 - pw / 2
        oy, ox = (offset[:, 1] * cfg.cell).view(-1, 1, 1), (offset[:, 0] * cfg.cell).view(-1, 1, 1)
        dy, dx = (ys.view(1, -1, 1) - oy).abs(), (xs.view(1, 1, -1) - ox).abs()
        fg_w = ((dy <= th.view(-1, 1, 1) / 2) & (dx <= tw.view(-1, 1, 1) / 2)).float().flatten(1)
        bg_w = 1 - fg_w
        if cfg.colour_ring > 0:
            ring = (cfg.colour_ring * torch.sqrt(tw * th)).view(-1, 1, 1)
            near = (dy <= th.view(-1, 1, 1) / 2 + ring) & (dx <= tw.view(-1, 1, 1) / 2 + ring)
            bg_w = bg_w * near.float().flatten(1)
        idx = (self._pixel_bins(patches) + torch.arange(b, device=self.device).view(-1, 1) * nb).flatten()
        fg = torch.bincount(idx, fg_w.flatten(), minlength=b * nb).view(b, nb)
        bg = torch.bincount(idx, bg_w.flatten(), minlength=b * nb).view(b, nb)
        # A box that left the window (a re-detection far off) teaches nothing.
        lr = lr * (fg.sum(1) > 0)
        fg = fg / fg.sum(1, keepdim=True).clamp_min(1e-6)
        bg = bg / bg.sum(1, keepdim=True).clamp_min(1e-6)
        lr = lr.view(-1, 1)
        self.col_fg = (1 - lr) * self.col_fg + lr * fg
        self.col_bg = (1 - lr) * self.col_bg + lr * bg

    def _pixel_likelihood(self, patches: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """P(target | colour) per pixel from the per-pixel histograms, averaged per cell: ``(N, 1, h, w)``.

        ``targets`` (N,) picks whose histograms each patch uses (default: patch i is target i).
        """
        b, _, ph, pw = patches.shape
        idx = self._pixel_bins(patches)
        fg, bg = self.col_fg, self.col_bg
        if targets is not None:
            fg, bg = fg.index_select(0, targets), bg.index_select(0, targets)
        pf = torch.gather(fg, 1, idx)
        pb = torch.gather(bg, 1, idx)
        return F.avg_pool2d((pf / (pf + pb).clamp_min(1e-6)).view(b, 1, ph, pw), self.cfg.cell)

    def _colour_response(self, like: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Colour response ``(N, h, w)``: the mean of cell likelihoods ``like`` inside the target's box at every shift.

        Indexed like the filter's response (shift 0 at index 0, circular): the box-sum of the
        likelihood is a cross-correlation with the box centred in the window, done with FFTs. A
        window larger than the grid (the wide search) gets the box zero-padded, as the filter is.
        """
        gh, gw = self.grid
        h, w = like.shape[2:]
        box_f = self._box_f if targets is None else self._box_f.index_select(0, targets)
        if (h, w) != (gh, gw):
            box = torch.fft.irfft2(box_f, s=(gh, gw))
            oy, ox = (h - gh) // 2, (w - gw) // 2
            box_f = torch.fft.rfft2(F.pad(box, (ox, w - gw - ox, oy, h - gh - oy)))
        return torch.fft.irfft2(box_f.conj() * torch.fft.rfft2(like), s=(h, w))[:, 0]

    def _colour_targets(self) -> torch.Tensor:
        """Per target, whether it uses (and keeps learning) the colour model: ``colour_min_size`` and up."""
        cfg = self.cfg
        s = torch.sqrt(self.size.prod(1))
        on = torch.where(self._colour_on, s * cfg.switch_margin >= cfg.colour_min_size, s >= cfg.colour_min_size)
        return on & (cfg.colour_weight > 0)

    def _fuse_colour(
        self,
        resp: torch.Tensor,
        patches: torch.Tensor,
        targets: torch.Tensor | None = None,
        colour: torch.Tensor | None = None,
    ):
        """The response that picks the position: the filter's, scaled to a top of 1, blended with the colour response.

        Staple's fusion, per target: targets under ``colour_min_size`` keep the filter's response
        alone (scaled, which changes neither its peak nor its PSR). ``targets`` (N,) names the
        targets of the rows of ``resp`` (N, h, w) and ``patches`` (default: all, in order).
        ``colour`` is :meth:`_colour_targets` when the caller has it already.
        """
        cfg = self.cfg
        use = self._colour_targets() if colour is None else colour
        use = use if targets is None else use.index_select(0, targets)
        a = cfg.colour_weight * use.float().view(-1, 1, 1)
        top = resp.flatten(1).amax(1).clamp_min(1e-9).view(-1, 1, 1)
        col = self._colour_response(self._pixel_likelihood(patches, targets), targets)
        return (1 - a) * resp / top + a * col

    def _reliability_mask(self, cells: torch.Tensor) -> torch.Tensor:
        """Spatial attention: which cells of the box look like the target rather than the background."""
        if not self.cfg.mask:
            return self.box_mask
        like = self._likelihood(cells)  # P(target | colour), (B, 1, gh, gw)
        # Smooth with a 3x3 box filter: the likelihood is noisy per cell, the mask should be compact.
        like = F.avg_pool2d(F.pad(like, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        m = ((like * self.prior) > 0.5 * self.prior.amax((2, 3), keepdim=True) * 0.5).float() * self.box_mask
        # Too few reliable cells (uniform colours, darkness): trust the plain box instead.
        fill = m.sum((2, 3)) / self.box_mask.sum((2, 3)).clamp_min(1)
        plain = (fill.view(-1) < self.cfg.mask_min_fill) | (torch.sqrt(self.size.prod(1)) < self.cfg.mask_min_size)
        return torch.where(plain.view(-1, 1, 1, 1), self.box_mask, m)

    # ------------------------------------------------------------------ learning
    def _memory_weights(self) -> torch.Tensor:
        """Temporal attention over memory slots: confidence x age decay, first frame as anchor."""
        cfg = self.cfg
        age = (self.frame_index - self.mem_time).clamp_min(0)
        w = self.mem_conf * cfg.age_decay**age * self.mem_valid
        w[:, 0] = self.mem_conf[:, 0]
        rest = w[:, 1:].sum(1)
        a = cfg.anchor_weight
        # The anchor keeps at least a share `a`, but no more than its age-weighted share would give it
        # once the memory is full of good, recent samples.
        w0 = torch.maximum(a / (1 - a) * rest, w[:, 0] * cfg.age_decay ** min(self.frame_index, 1000))
        w = torch.cat([w0.unsqueeze(1), w[:, 1:]], 1)
        return w / w.sum(1, keepdim=True).clamp_min(1e-12)

    def _memorise(self, xf: torch.Tensor, conf: torch.Tensor, active: torch.Tensor) -> None:
        """Merge a confident sample into the current slot, or open a new slot (evicting the weakest)."""
        cfg = self.cfg
        b, k = self.mem_conf.shape
        ar = self._arange(b)
        # The per-slot tables flattened to (B*K,): each target's slot is one row, read with
        # index_select and written with index_copy_ (cheaper than (row, slot) advanced indexing).
        count, confs, times, valid = (
            t.view(-1) for t in (self.mem_count, self.mem_conf, self.mem_time, self.mem_valid)
        )
        merge = active & ~self.cur_slot_new & (count.index_select(0, ar * k + self.cur_slot) < cfg.merge_frames)
        w = torch.where(self.mem_valid, self._memory_weights(), -1.0)  # empty slots first
        w[:, 0] = float("inf")  # never evict the anchor
        # Inactive targets "merge" with weight zero into their current slot: a no-op write, which
        # keeps the update branch-free and batched.
        slot = torch.where(active & ~merge, w.argmin(1), self.cur_slot)
        flat = ar * k + slot  # row of each target's slot in the (B*K, ...) memory
        count_at, conf_at = count.index_select(0, flat), confs.index_select(0, flat)
        cnt = torch.where(merge, count_at, torch.zeros_like(conf))
        conf = conf * active
        # Confidence-weighted running mean inside a slot.
        old_w = torch.where(active, cnt * conf_at, torch.ones_like(conf))
        tot = (old_w + conf).clamp_min(1e-6)
        a_old = (old_w / tot).view(-1, 1, 1, 1)
        a_new = (conf / tot).view(-1, 1, 1, 1)
        mem_x = self.mem_x.view((b * k,) + tuple(self.mem_x.shape[2:]))
        mem_p = self.mem_p.view(mem_x.shape)
        mem_x.index_copy_(0, flat, a_old * mem_x.index_select(0, flat) + a_new * xf)
        mem_p.index_copy_(0, flat, a_old * mem_p.index_select(0, flat) + a_new * _abs2(xf))
        confs.index_copy_(0, flat, torch.where(active, (old_w + conf) / (cnt + 1), conf_at))
        count.index_copy_(0, flat, torch.where(active, cnt + 1, count_at))
        times.index_copy_(0, flat, torch.where(active, float(self.frame_index), times.index_select(0, flat)))
        valid.index_copy_(0, flat, valid.index_select(0, flat) | active)
        self.cur_slot = slot
        self.cur_slot_new = self.cur_slot_new & ~active

    def _solve(self, xf: torch.Tensor, cells: torch.Tensor, det_rel: torch.Tensor, first: bool = False) -> None:
        """Re-solve the mask-constrained filter from the weighted memory (CSR-DCF's ADMM)."""
        cfg = self.cfg
        gh, gw = self.grid
        b, k = self.mem_conf.shape
        w = self._memory_weights().view(b, 1, k)
        shape = (b,) + tuple(self.mem_x.shape[2:])
        # Weighted sums over the memory slots as batched (1 x K) @ (K x D) products.
        sxx = torch.bmm(w, self.mem_p.view(b, k, -1)).view(shape)  # (B, C, gh, gw//2+1) sample energy
        sxy = torch.bmm(w.to(self.mem_x.dtype), self.mem_x.view(b, k, -1)).view(shape) * self.label_f.conj()
        mask = self._reliability_mask(cells)
        self.mask = mask
        # Warm start from the current filter: the solution moves slowly, so few iterations suffice.
        h = sxy / (sxx + cfg.lam) if first or self.filter_f is None else self.filter_f
        lag = torch.zeros_like(h)
        mu = cfg.admm_mu
        iters = cfg.admm_iters + (2 if first else 0)
        for _ in range(iters):
            hc = (sxy + mu * h - lag) / (sxx + mu)
            hs = torch.fft.irfft2(lag + mu * hc, s=(gh, gw), norm="ortho") * mask / (cfg.lam + mu)
            h = torch.fft.rfft2(hs, norm="ortho")
            lag = lag + mu * (hc - h)
            mu = min(cfg.admm_beta * mu, cfg.admm_mu_max)
        self.filter_f = h
        # Channel attention: learning reliability = each channel's peak on its own training sample.
        # The training sample is centred, so its response peak belongs at zero shift, and the response
        # at zero shift is just the sum of the cross-spectrum (half-spectrum bins counted twice).
        learn = ((h.conj() * xf).real * self._rfft_weight).sum((2, 3)).clamp_min(0)
        rel = learn * det_rel
        rel = rel / rel.sum(1, keepdim=True).clamp_min(1e-12)
        lr = 1.0 if first else cfg.channel_lr
        self.chan_w = (1 - lr) * self.chan_w + lr * rel

    # ------------------------------------------------------------------ detection
    def _wide_filter(self, k: int, hf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Filters ``hf`` (N, C, gh, gw//2+1) zero-padded to a ``k``-times larger grid, for re-detection.

        Orthonormal FFTs of a ``k``-times larger grid scale the response by ``1 / k``; multiply peaks
        by ``k`` to compare them with the normal window's.
        """
        gh, gw = self.grid
        bh, bw = k * gh, k * gw
        hs = torch.fft.irfft2(hf, s=(gh, gw), norm="ortho")
        oy, ox = (bh - gh) // 2, (bw - gw) // 2
        big = F.pad(hs, (ox, bw - gw - ox, oy, bh - gh - oy))
        win = (_hann(bh, self.device).view(-1, 1) * _hann(bw, self.device).view(1, -1)).view(1, 1, bh, bw)
        return torch.fft.rfft2(big, norm="ortho"), win, bh, bw

    @staticmethod
    def _detect(zf: torch.Tensor, weighted: torch.Tensor, gh: int, gw: int) -> list[torch.Tensor]:
        """Per filter, the channel-weighted response ``(B, S, gh, gw)`` of samples ``zf`` (B, S, C, gh, gw//2+1).

        ``weighted`` (K, B, C, gh, gw//2+1) holds K filters, each conjugated and times its channel
        weights (:func:`_weight_channels`). Channels are summed in the Fourier domain (linearity),
        so one inverse FFT per filter and scale is enough; per-channel maps are only formed for the
        winning scale (see :meth:`_peak_ratio`).

        Every response is bit for bit what it is alone: small-target tracks are chaotic enough that
        a rounding change can flip a sequence. With one scale the K filters share one product and
        each takes its own inverse FFT (a larger FFT batch is vectorised, and rounds, differently).
        With several scales the shared product's memory layout changes the inverse FFT's rounding
        for some grid sizes, so each filter takes its own product.
        """
        if zf.shape[1] == 1:
            spec = torch.einsum("kbchw,bschw->kbshw", weighted, zf)
        else:
            spec = [torch.einsum("bchw,bschw->bshw", w, zf) for w in weighted]
        return [torch.fft.irfft2(s, s=(gh, gw), norm="ortho") for s in spec]

    @staticmethod
    def _peak(resp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Argmax of ``(B, S, gh, gw)`` -> scale index, row, col, value (all (B,))."""
        b, s, gh, gw = resp.shape
        val, idx = resp.reshape(b, -1).max(1)
        return idx // (gh * gw), (idx % (gh * gw)) // gw, idx % gw, val

    def _peak_with_prior(self, resp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row, column and value of the response peak, chosen under a motion prior.

        The window is centred on the predicted position; a candidate far from it must answer more
        strongly than one close by to win (SiamFC's window penalty, as a Gaussian in target sizes).
        The returned value is the raw response there, not the penalised one.
        """
        b, gh, gw = resp.shape

        def make_d2() -> torch.Tensor:
            fy, fx = _signed_freq(gh, self.device), _signed_freq(gw, self.device)
            return fy.view(1, -1, 1) ** 2 + fx.view(1, 1, -1) ** 2  # squared displacement, cells

        d2 = self._const(("d2", gh, gw), make_d2)
        size_cells = torch.sqrt(self.size.prod(1)) / (self.cfg.cell * self.step)
        prior = torch.exp(-0.5 * d2 / (self.cfg.motion_sigma * size_cells).view(-1, 1, 1) ** 2)
        top = resp.flatten(1).amax(1).clamp_min(1e-9).view(-1, 1, 1)
        _, r, c, _ = self._peak((resp - self.cfg.motion_penalty * top * (1 - prior)).unsqueeze(1))
        return r, c, resp[self._arange(b), r, c]

    @staticmethod
    def _subcell(m: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parabolic sub-cell refinement of the peak of ``m`` (B, gh, gw), circular neighbours."""
        b, gh, gw = m.shape
        ar = torch.arange(b, device=m.device)
        c0 = m[ar, r, c]

        def vertex(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
            den = lo - 2 * c0 + hi
            return torch.where(den < -1e-9, 0.5 * (lo - hi) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)

        dy = vertex(m[ar, (r - 1) % gh, c], m[ar, (r + 1) % gh, c])
        dx = vertex(m[ar, r, (c - 1) % gw], m[ar, r, (c + 1) % gw])
        return dy, dx

    @staticmethod
    def _psr(m: torch.Tensor, r: torch.Tensor, c: torch.Tensor, radius: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
        """Peak-to-sidelobe ratio of ``m`` (B, gh, gw), sidelobe = all but a (2r+1)^2 box at the peak."""
        b, gh, gw = m.shape
        ry = torch.arange(gh, device=m.device).view(1, -1, 1) - r.view(-1, 1, 1)
        rx = torch.arange(gw, device=m.device).view(1, 1, -1) - c.view(-1, 1, 1)
        ry = torch.minimum(ry % gh, (-ry) % gh)
        rx = torch.minimum(rx % gw, (-rx) % gw)
        side = ~((ry <= radius) & (rx <= radius))  # (B, gh, gw)
        n = side.sum((1, 2)).clamp_min(1)
        mean = (m * side).sum((1, 2)) / n
        var = (((m - mean.view(-1, 1, 1)) * side).square()).sum((1, 2)) / n
        peak = m.flatten(1).amax(1)
        return (peak - mean) / var.sqrt().clamp_min(1e-6), side

    def _peak_ratio(self, zf: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        """Channel detection reliability ``(B, C)``: 1 - min(second peak / first peak, 0.5).

        The first peak is each channel's maximum near the detected position, the second its maximum
        over the sidelobe region; a channel that fires elsewhere as strongly gets weight 0.5x.
        """
        gh, gw = self.grid
        per_chan = torch.fft.irfft2(self.filter_f.conj() * zf, s=(gh, gw), norm="ortho").flatten(2)  # (B, C, gh*gw)
        side = side.flatten(1).unsqueeze(1)  # (B, 1, gh*gw)
        first = torch.where(side, -1e9, per_chan).amax(2)
        second = torch.where(side, per_chan, -1e9).amax(2)
        ratio = second.clamp_min(0) / first.clamp_min(1e-9)
        return 1 - ratio.clamp(0, 0.5)

    # ------------------------------------------------------------------ per-frame step
    def update(self, frame) -> tuple[torch.Tensor, torch.Tensor]:
        """Track all targets into the next frame.

        Args:
            frame: Next frame, ``(H, W, 3)`` uint8 RGB.

        Returns:
            ``(boxes, scores)``: ``(B, 4)`` ``x, y, w, h`` pixels and ``(B,)`` confidences in [0, 1].
        """
        with self._tracking_mode():
            boxes, scores = self._update(frame)
        # Inference-mode tensors refuse in-place updates outside inference mode: hand out ordinary ones.
        return boxes.clone(), scores.clone()

    def _update(self, frame) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        self.frame_index += 1
        img = self._to_image(frame)
        self._pyramid: dict[int, tuple] = {}  # pooled crops of this frame, shared by all samplers
        gh, gw = self.grid

        # Translation: one window per target, all targets in one batch, centred where each target's
        # recent motion predicts it (a lost target is searched for where it was last seen).
        H, W = self.frame_size
        lim = self._const(("lim", W, H), lambda: torch.tensor([W, H], device=self.device, dtype=torch.float32))
        centre = torch.minimum((self.pos + self.vel).clamp_min(0), lim)
        patches = self._sample(img, centre, self.step, gh, gw)
        zf, zcells = self._features(patches, self.window)
        # The adapted filter's response picks the position; the first-frame filter's is read there.
        both = self._weighted("detect", (self.filter_f, self.chan_w), (self.anchor_f, self.anchor_w))
        resp, at = (r[:, 0] for r in self._detect(zf.unsqueeze(1), both, gh, gw))  # (B, gh, gw) each
        colour = self._colour_targets()
        pick = self._fuse_colour(resp, patches, colour=colour) if colour.any() else resp
        r, c, _ = self._peak_with_prior(pick)
        peak = resp[self._arange(self.num_targets), r, c]
        dy, dx = self._subcell(pick, r, c)
        psr, side = self._psr(pick, r, c)
        shift_cells = self._displacement(r, c, dy, dx, gh, gw)  # (B, 2) x, y in cells
        new_pos = centre + shift_cells * (cfg.cell * self.step).view(-1, 1)
        # Agreement with the first-frame template: its response where the target was found.
        grid_wh = self._const(("grid_wh", gw, gh), lambda: torch.tensor([gw, gh], device=self.device))
        iy_ix = (shift_cells.round().long() + grid_wh) % grid_wh
        anchor = at[self._arange(self.num_targets), iy_ix[:, 1], iy_ix[:, 0]]

        found = self._redetect(img, psr)
        if found is not None:
            use, pos2, psr2, peak2, anchor2 = found
            new_pos = torch.where(use.view(-1, 1), pos2, new_pos)
            psr, peak = torch.where(use, psr2, psr), torch.where(use, peak2, peak)
            anchor = torch.where(use, anchor2, anchor)
        conf, conf_psr, lost = self._confidence(psr, peak, anchor, self._unconfirmed(new_pos))

        # A lost target whose response still has a clean, isolated peak (a deforming target that
        # matches its model poorly) follows that peak; otherwise it stays where it was last seen
        # (and the wide search looks around there) instead of wandering onto background.
        hold = lost & (conf_psr < cfg.follow_psr)
        new_pos = torch.where(hold.view(-1, 1), self.pos, new_pos)
        new_pos = torch.minimum(new_pos.clamp_min(0), lim)  # a target that leaves is searched for at the border
        self.vel = torch.where(
            lost.view(-1, 1) | self.lost.view(-1, 1),
            torch.zeros_like(self.vel),
            (1 - cfg.velocity_lr) * self.vel + cfg.velocity_lr * (new_pos - self.pos),
        )
        self.pos, self.lost, self.scores, self.psr, self.peak = new_pos, lost, conf, psr, peak
        active = ~lost
        # A lost target that follows its peak also follows its measured scale (nothing is learned from it).
        follow = lost & ~hold if cfg.rescale_following else torch.zeros_like(lost)
        if bool(follow.any()) and not bool(active.any()):
            self._rescale(img, follow)
        if bool(active.any()):
            # The detection window re-centred on the target is the training sample, unless the
            # target was found outside it (then it is re-sampled).
            offset = (new_pos - centre) / (cfg.cell * self.step).view(-1, 1)
            colour = colour & active
            if bool(colour.any()):
                weight = torch.where(conf >= cfg.good_score, torch.ones_like(conf), conf)
                self._learn_colour(patches, offset, cfg.colour_lr * weight * colour)
            self._rescale(img, active | follow)
            self._learn(img, zf, zcells, side, offset, conf, active)
        return self.boxes(), self.scores

    def _redetect(self, img: Image, psr: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """Wide search for the lost targets only; targets that are tracked pay nothing for it.

        A ``redetect_factor``-times larger window around where each lost target was last seen, with
        its filter zero-padded to the larger grid.

        Returns:
            None when no target is lost, else ``(use, pos, psr, peak, anchor)`` for all ``B`` targets: ``use``
            marks the lost targets whose wide search answered with a cleaner peak (PSR) than the
            normal window did.
        """
        idx = self.lost.nonzero().flatten()
        if not idx.numel():
            return None
        cfg = self.cfg
        self.wide_searches += int(idx.numel())
        k = cfg.redetect_factor
        # The adapted and the first-frame filter in one batch: the first-frame template is asked
        # about the wide search's candidate as about the normal window's.
        both = torch.cat([self.filter_f.index_select(0, idx), self.anchor_f.index_select(0, idx)])
        hf_big, win_big, bh, bw = self._wide_filter(k, both)
        n = int(idx.numel())
        pos, step = self.pos.index_select(0, idx), self.step.index_select(0, idx)
        patches = self._sample(img, pos, step, bh, bw)
        zb, _ = self._features(patches, win_big)
        wide = _weight_channels(
            (hf_big[:n], self.chan_w.index_select(0, idx)), (hf_big[n:], self.anchor_w.index_select(0, idx))
        )
        rb, ab = (r[:, 0] for r in self._detect(zb.unsqueeze(1), wide, bh, bw))
        pick = self._fuse_colour(rb, patches, idx) if self._colour_targets().any() else rb
        _, r, c, _ = self._peak(pick.unsqueeze(1))
        peak = rb[torch.arange(n, device=self.device), r, c]
        dy, dx = self._subcell(pick, r, c)
        psr_wide, _ = self._psr(pick, r, c)
        anchor_wide = ab[torch.arange(n, device=self.device), r, c] * k
        use = torch.zeros_like(self.lost)
        use[idx] = psr_wide > psr.index_select(0, idx)
        out_pos, out_psr, out_peak = self.pos.clone(), psr.clone(), torch.zeros_like(psr)
        out_anchor = torch.zeros_like(psr)
        out_anchor[idx] = anchor_wide
        out_pos[idx] = pos + self._displacement(r, c, dy, dx, bh, bw) * (cfg.cell * step).view(-1, 1)
        out_psr[idx] = psr_wide
        out_peak[idx] = peak * k  # orthonormal FFTs of a k-times larger grid scale the response by 1/k
        return use, out_pos, out_psr, out_peak, out_anchor

    def _unconfirmed(self, new_pos: torch.Tensor) -> torch.Tensor:
        """Per target, whether it is still a candidate re-found away from where it was lost (see ``refind_jump``).

        A target that was lost last frame starts its probation here when it jumped more than
        ``refind_jump`` target sizes from where it was last seen (a lost target that follows its
        peak moves by small steps); :meth:`_confidence` ends it.
        """
        jump = (new_pos - self.pos).norm(dim=1) / torch.sqrt(self.size.prod(1))
        started = self.lost & (jump > self.cfg.refind_jump)
        self.confirmed_frames = torch.where(started, torch.zeros_like(self.confirmed_frames), self.confirmed_frames)
        return self.unconfirmed | started

    def _confidence(
        self, psr: torch.Tensor, peak: torch.Tensor, anchor: torch.Tensor, unconfirmed: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Confidence in [0, 1], its PSR part and the lost flag per target, from cues relative to running references.

        Each cue is measured against its own reference for this target, so that one threshold works
        for a crisp textured target and a blurry pedestrian at night alike:

        - PSR: a clean, isolated peak (Bolme et al. 2010);
        - the peak height: a filter that locks onto background texture can still produce a clean
          (high-PSR) but low peak;
        - the first-frame template's response at the same place (``anchor``; ``inf`` = not asked): a
          look-alike or background that the adapted filter has drifted onto answers the original
          template weakly.

        The weakest cue is the confidence. The lost flag trusts the PSR cue less than the other two
        (``psr_lost_share``): a walking, deforming person answers with a broad, low-PSR response while
        the peak height and the first-frame template still find it. (Motion consistency enters
        earlier, through the motion prior that picks the peak.) The references are the mean of the
        first ``ref_warmup`` frames, then learn only from confident frames, so slow drift cannot
        teach them that drift is normal.
        """
        cfg = self.cfg
        if self.psr_ref is None:
            self.psr_ref = psr.clamp_min(cfg.psr_lost + 1)
            self.peak_ref = peak.clamp_min(1e-6)
            self.anchor_ref = torch.where(anchor.isinf(), peak, anchor).clamp_min(1e-6)
        anchor = torch.where(anchor.isinf(), self.anchor_ref, anchor)
        conf_psr = (psr - cfg.psr_floor) / (self.psr_ref - cfg.psr_floor).clamp_min(1e-3)
        conf_peak = (peak / self.peak_ref - cfg.peak_low) / (cfg.peak_high - cfg.peak_low)
        conf_anchor = (anchor / self.anchor_ref - cfg.peak_low) / (cfg.peak_high - cfg.peak_low)
        conf = torch.minimum(torch.minimum(conf_psr, conf_peak), conf_anchor).clamp(0, 1)
        # Probation of a target re-found away from where it was lost: confirmed after
        # confirm_frames consecutive frames with its own cues at good_score, capped until then.
        self.confirmed_frames = (self.confirmed_frames + 1) * (conf >= cfg.good_score)
        self.unconfirmed = unconfirmed & (self.confirmed_frames < cfg.confirm_frames)
        self.cues = torch.stack([conf_psr, conf_peak, conf_anchor], 1)  # (B, 3), for diagnostics
        # Lost: the peak or the anchor cue alone, the PSR cue alone only when far down, else the PSR
        # cue with a second cue that is only middling (a deforming target keeps a high peak there).
        other = torch.minimum(conf_peak, conf_anchor)
        lost = (other < cfg.lost_score) | (conf_psr < cfg.lost_score * cfg.psr_lost_share) | (psr < cfg.psr_lost)
        lost = lost | ((conf_psr < cfg.lost_score) & (other < cfg.good_score))
        if cfg.unconfirmed_lost:
            lost = lost | (self.unconfirmed & (conf < cfg.good_score))
        capped = self.unconfirmed if cfg.unconfirmed_lost else self.unconfirmed & ~lost
        conf = torch.where(capped, conf.clamp_max(cfg.unconfirmed_cap), conf)
        warm = torch.full_like(conf, 1.0 / self.frame_index) * ~lost
        ref_lr = warm if self.frame_index <= cfg.ref_warmup else cfg.psr_ref_lr * (conf > cfg.ref_gate)
        self.psr_ref = (1 - ref_lr) * self.psr_ref + ref_lr * psr
        self.peak_ref = (1 - ref_lr) * self.peak_ref + ref_lr * peak
        self.anchor_ref = (1 - ref_lr) * self.anchor_ref + ref_lr * anchor
        return conf, conf_psr, lost

    def _rescale(self, img: Image, active: torch.Tensor) -> None:
        """Scale of the ``active`` targets at their new position (the others keep theirs).

        The 1-D scale filter, or, for small targets and lost targets that follow their peak
        (``follow_pyramid_scale``), the translation filter on a three-level pyramid (the scale filter's
        crops of a 10 px target carry too little detail to respond, and a deforming target no longer
        matches its appearance model). Each target pays only for its own method.
        """
        cfg = self.cfg
        scale = torch.ones_like(self.step)
        s = torch.sqrt(self.size.prod(1))
        self._large = torch.where(self._large, s * cfg.switch_margin >= cfg.small_target, s >= cfg.small_target)
        small = active & ~self._large
        if cfg.follow_pyramid_scale:
            small = small | (active & self.lost)  # lost and following its peak (see rescale_following)
        large = active & ~small
        if bool(large.any()):
            idx = large.nonzero().flatten()
            pos, size = self.pos.index_select(0, idx), self.size.index_select(0, idx)
            scale[idx] = self.scale_filter.detect(img, pos, size, self._pyramid, idx) ** cfg.scale_damping
        if bool(small.any()):
            idx = small.nonzero().flatten()
            scale[idx] = self._pyramid_scale(img, idx)
        rel = self.step * scale / self.init_step
        scale = scale * rel.clamp(cfg.min_scale, cfg.max_scale) / rel
        self.step = self.step * scale
        self.size = self.size * scale.view(-1, 1)
        self._colour_on = self._colour_targets()

    def _learn(self, img, zf, zcells, side, offset: torch.Tensor, conf: torch.Tensor, active: torch.Tensor) -> None:
        """Learn from the new positions, weighting each sample by confidence (temporal attention).

        ``offset`` (B, 2) is each target's position in the detection window, in cells from its centre.
        Lost targets keep their model, channel weights, colour statistics and scale model.
        """
        cfg = self.cfg
        gh, gw = self.grid
        weight = torch.where(conf >= cfg.good_score, torch.ones_like(conf), conf)
        if cfg.reuse_sample and bool((offset.abs() < 0.25 * min(gh, gw)).all()):
            xf, cells = self._shift_sample(zf, zcells, offset)
        else:
            patches = self._sample(img, self.pos, self.step, gh, gw)
            xf, cells = self._features(patches, self.window)
        self._memorise(xf, weight, active)
        due = active & (
            (self.frame_index % cfg.update_interval == 0)
            | (self._large & (self.frame_index % cfg.large_update_interval == 0))
        )
        if bool(due.any()):
            # Channel reliability and colour statistics only feed the solve, so they are only
            # measured on solve frames.
            det_rel = self._peak_ratio(zf, side)
            self._update_histograms(cells, lr=cfg.hist_lr * due.float())
            # Only the targets that take their scale from the 1-D scale filter, or that are close to
            # growing into it, train it: a target well under small_target would pay for its 13
            # crops every solve frame and never use them.
            self._train_scale(img, weight, due)
            prev_f, prev_w = self.filter_f, self.chan_w
            self._solve(xf, cells, det_rel)
            keep = (~due).view(-1, 1, 1, 1)
            self.filter_f = torch.where(keep, prev_f, self.filter_f)
            self.chan_w = torch.where(keep.view(-1, 1), prev_w, self.chan_w)

    def _train_scale(self, img: Image, weight: torch.Tensor, active: torch.Tensor) -> None:
        """Blend the current crops into the 1-D scale filter of the ``active`` targets that use it or nearly do."""
        cfg = self.cfg
        large = active & (torch.sqrt(self.size.prod(1)) * cfg.scale_train_margin >= cfg.small_target)
        if bool(large.any()):
            idx = large.nonzero().flatten()
            pos, size = self.pos.index_select(0, idx), self.size.index_select(0, idx)
            self.scale_filter.update(img, pos, size, weight.index_select(0, idx), self._pyramid, idx)

    def _pyramid_scale(self, img: Image, idx: torch.Tensor) -> torch.Tensor:
        """Scale change ``(n,)`` of targets ``idx`` from the translation filter on windows ``1/a, 1, a`` times as large.

        The window whose content best matches the filter (highest response peak near the centre)
        has the right scale; a parabola through the three peaks over ``log(scale)`` refines it.
        """
        return self._pyramid_vote(self._pyramid_peaks(img, idx, self._crop))

    def _pyramid_reach(self) -> tuple[int, int]:
        """Rows and columns of shift around the target within which the pyramid looks for each level's peak."""
        gh, gw = self.grid
        m = self.cfg.pyramid_reach
        return (gh // 4, gw // 4) if m is None else (min(m, gh // 4), min(m, gw // 4))

    def _pyramid_crop(self) -> tuple[int, int, int, int] | None:
        """Rows ``r0:r0+ch`` and columns ``c0:c0+cw`` of the grid around its centre that a level's peaks read.

        The filters are zero outside the box (the mask constrains them to it), so their response at
        a shift of up to the reach only reads the box's cells plus that reach on each side. None
        when that is not much less than the window (then the pyramid samples whole windows).
        """
        gh, gw = self.grid
        rh, rw = self._pyramid_reach()
        rows = self.box_mask.amax(3).amax(0).flatten().nonzero().flatten()
        cols = self.box_mask.amax(2).amax(0).flatten().nonzero().flatten()
        # Symmetric about the grid's centre and even like the grid, so the crop's cells are the window's.
        half_h = max(gh // 2 - int(rows.min()), int(rows.max()) + 1 - gh // 2) + rh
        half_w = max(gw // 2 - int(cols.min()), int(cols.max()) + 1 - gw // 2) + rw
        ch, cw = 2 * half_h, 2 * half_w
        if (ch + 4) * (cw + 4) > 0.7 * gh * gw:
            return None
        return gh // 2 - half_h, gw // 2 - half_w, ch, cw

    def _cropped_filters(self, crop: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapted and first-frame filters cut to ``crop`` of the grid, in the Fourier domain (cached per solve)."""
        gh, gw = self.grid
        r0, c0, ch, cw = crop

        def cut(hf: torch.Tensor) -> torch.Tensor:
            hs = torch.fft.irfft2(hf, s=(gh, gw), norm="ortho")[:, :, r0 : r0 + ch, c0 : c0 + cw]
            return torch.fft.rfft2(hs, norm="ortho")

        cache = self._crop_cache
        if cache is None or cache[0] is not self.filter_f or cache[1] != crop:
            anchor = cache[3] if cache is not None and cache[1] == crop else cut(self.anchor_f)
            cache = self._crop_cache = (self.filter_f, crop, cut(self.filter_f), anchor)
        return cache[2], cache[3]

    def _pyramid_peaks(self, img: Image, idx: torch.Tensor, crop: tuple[int, int, int, int] | None):
        """Per target of ``idx`` and level, the two filters' response peaks near the centre, each over its middle level.

        The levels are windows centred on the targets. Each level's peak is the maximum within
        ``pyramid_reach`` of the centre. With ``crop`` (see :meth:`_pyramid_crop`), only that part of
        each level, plus two cells so that its gradient histograms and their block normalisation
        are the window's, is sampled and correlated with the filters cut to the crop: the same
        peaks as the whole windows' (to rounding), at a fraction of the cost.

        Returns:
            ``(n, 3)``: per level ``1/a, 1, a``, the sum over the two filters of their peak divided by
            their middle level's.
        """
        cfg = self.cfg
        gh, gw = self.grid
        n = int(idx.numel())
        a = cfg.pyramid_step
        factors = self._const(("factors", a), lambda: torch.tensor([1 / a, 1.0, a], device=self.device))
        step = (self.step.index_select(0, idx).view(-1, 1) * factors.view(1, 3)).flatten()
        centres = self.pos.index_select(0, idx).repeat_interleave(3, 0)
        if crop is None:
            sh, sw = gh, gw
            zf, _ = self._features(self._sample(img, centres, step, gh, gw), self.window)
            hfs = (self.filter_f, self.anchor_f)
        else:
            r0, c0, sh, sw = crop
            m = 2
            patches = self._sample(img, centres, step, sh + 2 * m, sw + 2 * m)
            cells = F.avg_pool2d(patches, cfg.cell)
            feat = extract_features(patches, cell=cfg.cell, num_orients=cfg.num_orients, colour=cfg.colour, cells=cells)
            window = self.window[:, :, r0 : r0 + sh, c0 : c0 + sw]
            zf = torch.fft.rfft2(feat[:, :, m : m + sh, m : m + sw] * window, norm="ortho")
            hfs = self._cropped_filters(crop)
        zf = zf.view((n, 3) + tuple(zf.shape[1:]))
        rh, rw = self._pyramid_reach()

        def make_near() -> torch.Tensor:
            fy, fx = _signed_freq(sh, self.device).abs(), _signed_freq(sw, self.device).abs()
            return (fy.view(-1, 1) <= rh) & (fx.view(1, -1) <= rw)  # the target is near the centre

        near = self._const(("near", sh, sw, rh, rw), make_near)
        # Both templates vote: the adapted filter knows today's appearance, but it learned from boxes
        # of the estimated size and so shares any lag of the estimate; the first-frame filter knows
        # the true size relative to the box it was given.
        p = torch.zeros(n, 3, device=self.device)
        both = self._weighted("pyramid", (hfs[0], self.chan_w), (hfs[1], self.anchor_w)).index_select(1, idx)
        # (Orthonormal FFTs of the smaller crop scale all three levels' responses alike.)
        for resp in self._detect(zf, both, sh, sw):
            peaks = torch.where(near, resp, -1e9).flatten(2).amax(2)  # (n, 3)
            p = p + peaks / peaks[:, 1:2].abs().clamp_min(1e-9)
        return p

    def _pyramid_vote(self, p: torch.Tensor) -> torch.Tensor:
        """Scale change from the pyramid's summed, normalised peaks ``p`` (n, 3) at ``1/a, 1, a``."""
        lo, mid, hi = p[:, 0], p[:, 1], p[:, 2]
        den = lo - 2 * mid + hi
        best = p.argmax(1).float() - 1  # -1, 0, 1
        vertex = torch.where(den < -1e-12, 0.5 * (lo - hi) / den, best).clamp(-1, 1)
        offset = torch.where(best == 0, vertex, best)
        return self.cfg.pyramid_step**offset

    @staticmethod
    def _displacement(r, c, dy, dx, gh: int, gw: int) -> torch.Tensor:
        """Peak location (cells, circular) -> displacement ``(B, 2)`` as ``x, y`` cells."""
        ry = torch.where(r > gh // 2, r - gh, r).float() + dy
        rx = torch.where(c > gw // 2, c - gw, c).float() + dx
        return torch.stack([rx, ry], 1)

    def _shift_sample(self, zf: torch.Tensor, cells: torch.Tensor, shift: torch.Tensor):
        """Re-centre the detection sample on the target by a Fourier phase ramp (ECO's sample reuse).

        Saves a second resampling and feature extraction per frame; the circular wrap it implies
        only touches the window's border, where the cosine window has already faded the features.
        """
        gh, gw = self.grid
        ky = self._const(("ky", gh), lambda: _signed_freq(gh, self.device).view(1, -1, 1))
        kx = self._const(
            ("kx", gw), lambda: torch.arange(gw // 2 + 1, device=self.device, dtype=torch.float32).view(1, 1, -1)
        )
        phase = 2 * math.pi * (ky * shift[:, 1].view(-1, 1, 1) / gh + kx * shift[:, 0].view(-1, 1, 1) / gw)
        xf = zf * torch.polar(torch.ones_like(phase), phase).unsqueeze(1)
        # Colour cells only feed histograms and the mask: an integer roll is precise enough.
        iy = (self._arange(gh).view(1, -1) + shift[:, 1:2].round().long()) % gh  # (B, gh)
        ix = (self._arange(gw).view(1, -1) + shift[:, 0:1].round().long()) % gw  # (B, gw)
        b = cells.shape[0]
        cells = cells[
            self._arange(b).view(-1, 1, 1, 1),
            self._arange(3).view(1, -1, 1, 1),
            iy.view(b, 1, gh, 1),
            ix.view(b, 1, 1, gw),
        ]
        return xf, cells

    def boxes(self) -> torch.Tensor:
        """Current boxes ``(B, 4)`` as ``x, y, w, h`` pixels."""
        return torch.cat([self.pos - self.size / 2, self.size], 1)
