"""Hand-crafted tracking features in torch, batched over image patches.

Two families, both computed on a cell grid (one feature vector per ``cell x cell`` pixels):

- **HOG-like gradient histograms** in the spirit of Felzenszwalb's FHOG (Felzenszwalb et al.,
  "Object Detection with Discriminatively Trained Part-Based Models", TPAMI 2010), the feature
  used by KCF (Henriques et al. 2015), DSST (Danelljan et al. 2014) and CSR-DCF
  (Lukežič et al. 2017): contrast-sensitive orientation bins, contrast-insensitive bins and a
  block-energy normalisation, all with bilinear orientation voting.
- **Soft colour names**: the eleven basic colour terms of van de Weijer et al.
  ("Learning Color Names for Real-World Applications", TIP 2009), used as a tracking feature by
  Danelljan et al. ("Adaptive Color Attributes for Real-Time Visual Tracking", CVPR 2014). The
  original 32k-entry lookup table is learned from web images; here each cell colour is softly
  assigned to eleven prototype colours instead, which keeps the feature table-free and
  differentiable, at the price of being a coarser approximation.

Everything is a handful of tensor ops on a ``(N, 3, H, W)`` batch, so patches from several
targets and several scales are featurised in one call, on the CPU or the GPU.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# Eleven basic colour terms (black, blue, brown, grey, green, orange, pink, purple, red, white,
# yellow) as RGB prototypes in [0, 1]. Soft assignment to these stands in for the learned table.
_COLOUR_PROTOTYPES = (
    (0.0, 0.0, 0.0),
    (0.0, 0.0, 1.0),
    (0.5, 0.4, 0.25),
    (0.5, 0.5, 0.5),
    (0.0, 1.0, 0.0),
    (1.0, 0.8, 0.0),
    (1.0, 0.5, 1.0),
    (1.0, 0.0, 1.0),
    (1.0, 0.0, 0.0),
    (1.0, 1.0, 1.0),
    (1.0, 1.0, 0.0),
)
NUM_COLOUR_NAMES = len(_COLOUR_PROTOTYPES)


class FrameBuffer:
    """The float image that `LazyFrame`s convert into, kept across frames so it is allocated once: which frame
    holds it, and the rectangle ``x0, y0, x1, y1`` of that frame converted so far."""

    def __init__(self) -> None:
        self.image: torch.Tensor | None = None
        self.owner: LazyFrame | None = None
        self.done: tuple[int, int, int, int] | None = None


class LazyFrame:
    """An ``(H, W, 3)`` uint8 frame that :func:`sample_windows` converts to float only where windows read it.

    Converting a whole 1280x720 frame to float cost 1.1-1.6 ms of a 9-12 ms frame (one target), and
    the windows read a fraction of it. The float image lives in ``store`` (which the caller keeps
    across frames): only the rectangle converted for the frame that holds it is valid, and the
    samplers read nothing else. A frame that finds the store taken by another frame takes it back
    and converts again, so an older frame stays correct.
    """

    def __init__(self, pixels: torch.Tensor, store: FrameBuffer) -> None:
        self.pixels = pixels  # (H, W, 3) uint8
        h, w = pixels.shape[:2]
        self.shape = (1, 3, h, w)
        self.device = pixels.device
        self._store = store

    def covering(self, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
        """The ``(1, 3, H, W)`` float image in [0, 1], valid (at least) in columns ``x0:x1`` and rows ``y0:y1``."""
        st = self._store
        buf = st.image
        if buf is None or buf.shape != self.shape or buf.device != self.device:
            with torch.inference_mode(False):  # an ordinary tensor: written in and out of inference mode
                buf = st.image = torch.zeros(self.shape, device=self.device)
            st.owner = None
        if st.owner is not self:
            st.owner, st.done = self, None
        done = st.done
        if done is None or not (done[0] <= x0 and done[1] <= y0 and done[2] >= x1 and done[3] >= y1):
            if done is not None:  # the union, so that what earlier samplers read stays valid
                x0, y0, x1, y1 = min(x0, done[0]), min(y0, done[1]), max(x1, done[2]), max(y1, done[3])
            part = self.pixels[y0:y1, x0:x1].permute(2, 0, 1).float().mul_(1.0 / 255)
            buf[0, :, y0:y1, x0:x1] = part
            st.done = (x0, y0, x1, y1)
        return buf


Image = torch.Tensor | LazyFrame  # a frame as the samplers take it


def sample_windows(
    img: Image,
    centres: torch.Tensor,
    sizes: torch.Tensor,
    out_hw: tuple[int, int],
    pyramid: dict[int, tuple[int, int, int, int, torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Crop and resample ``N`` axis-aligned windows of a frame in one ``grid_sample`` call.

    Args:
        img: Frame ``(1, 3, H, W)`` float, or a :class:`LazyFrame`. Pixel ``i`` covers ``[i, i + 1)``.
        centres: Window centres ``(N, 2)`` as ``x, y`` pixels.
        sizes: Window sizes ``(N, 2)`` as ``w, h`` pixels (may exceed the frame: borders replicate).
        out_hw: Output size ``(oh, ow)``.
        pyramid: Optional per-frame cache of pooled crops of the frame, keyed by pooling factor,
            shared by the calls that sample the same frame.

    Returns:
        ``(N, 3, oh, ow)`` patches.
    """
    oh, ow = out_hw
    n = centres.shape[0]
    _, _, H, W = img.shape
    x0 = y0 = 0
    # Shrinking a window by more than 2x with bilinear taps aliases; pool first (once for all
    # windows, by the smallest shrink factor) and sample the pooled image instead. Only the part of
    # the frame the windows cover is pooled, so the cost follows the targets, not the frame size.
    factor = int(max(1.0, math.floor(0.5 * float((sizes / _out_size(ow, oh, sizes.device)).min()))))
    if factor > 1:
        x0, y0, x1, y1 = _covered_region(centres, sizes, factor, H, W)
        cached = pyramid.get(factor) if pyramid is not None else None
        if cached is not None and cached[0] <= x0 and cached[1] <= y0 and cached[2] >= x1 and cached[3] >= y1:
            x0, y0, x1, y1, pooled = cached
        else:
            src = img.covering(x0, y0, min(x1, W), min(y1, H)) if isinstance(img, LazyFrame) else img
            crop = src[:, :, y0 : min(y1, H), x0 : min(x1, W)]
            # Pad to the aligned region so pooled pixels keep the frame's coordinate grid (a region
            # inside the frame needs none: padding by zero would only copy it).
            pad_w, pad_h = x1 - x0 - crop.shape[3], y1 - y0 - crop.shape[2]
            if pad_w or pad_h:
                crop = F.pad(crop, (0, pad_w, 0, pad_h), mode="replicate")
            pooled = F.avg_pool2d(crop, factor)
            if pyramid is not None:
                pyramid[factor] = (x0, y0, x1, y1, pooled)
        img = pooled
        W, H = x1 - x0, y1 - y0
    ux, uy = _unit_offsets(ow, img.device), _unit_offsets(oh, img.device)
    xs = centres[:, 0:1] - x0 + ux.view(1, -1) * sizes[:, 0:1]  # (N, ow) pixel coordinates in img
    ys = centres[:, 1:2] - y0 + uy.view(1, -1) * sizes[:, 1:2]  # (N, oh)
    gx = (2 * xs / W - 1).view(n, 1, ow).expand(n, oh, ow)
    gy = (2 * ys / H - 1).view(n, oh, 1).expand(n, oh, ow)
    # Windows stacked along the height of one grid: one kernel launch for every target and scale.
    grid = torch.stack([gx, gy], -1).reshape(1, n * oh, ow, 2)
    if isinstance(img, LazyFrame):
        img = img.covering(*_grid_reach(xs, ys, W, H))
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(3, n, oh, ow).transpose(0, 1)  # (N, 3, oh, ow)


def _grid_reach(xs: torch.Tensor, ys: torch.Tensor, W: int, H: int) -> tuple[int, int, int, int]:
    """``x0, y0, x1, y1`` of the pixels that bilinear ``grid_sample`` (border padding) reads at ``xs``, ``ys``.

    Sample ``x`` reads pixel ``floor(x - 0.5)`` and the next, its position clamped to the image
    first; one more pixel each side covers the rounding of the normalised coordinates. The whole
    image when any coordinate is not finite.
    """
    lo_x, lo_y, hi_x, hi_y = torch.stack([xs.amin(), ys.amin(), xs.amax(), ys.amax()]).tolist()
    if not all(map(math.isfinite, (lo_x, lo_y, hi_x, hi_y))):
        return 0, 0, W, H

    def span(lo: float, hi: float, n: int) -> tuple[int, int]:
        a = math.floor(min(max(lo - 0.5, 0.0), n - 1)) - 1
        b = math.floor(min(max(hi - 0.5, 0.0), n - 1)) + 3
        return max(0, a), min(n, b)

    (x0, x1), (y0, y1) = span(lo_x, hi_x, W), span(lo_y, hi_y, H)
    return x0, y0, x1, y1


@functools.lru_cache(maxsize=32)
def _out_size(ow: int, oh: int, device: torch.device) -> torch.Tensor:
    """``(ow, oh)`` as a float tensor, to divide window sizes ``(N, 2)`` by in one op."""
    return torch.tensor([float(ow), float(oh)], device=device)


@functools.lru_cache(maxsize=32)
def _unit_offsets(n: int, device: torch.device) -> torch.Tensor:
    """Centres of ``n`` equal parts of ``[-0.5, 0.5]`` (a window's sample positions per unit size)."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n - 0.5


def _covered_region(centres: torch.Tensor, sizes: torch.Tensor, factor: int, H: int, W: int) -> tuple[int, ...]:
    """``x0, y0, x1, y1`` of the frame the windows touch, one pooled pixel of margin, on the factor grid.

    The region stays inside the frame rounded up to the factor: a window reaching beyond the frame
    reads the frame's border (replicated), as it would without the crop.
    """
    lo = (centres - sizes / 2).amin(0).tolist()
    hi = (centres + sizes / 2).amax(0).tolist()
    wf, hf = -(-W // factor) * factor, -(-H // factor) * factor  # the frame padded to the factor

    def span(a: float, b: float, limit: int) -> tuple[int, int]:
        start = min(max(0, (math.floor(a) // factor - 1) * factor), limit - factor)
        end = max(min(limit, (math.ceil(b) // factor + 2) * factor), start + factor)
        return start, end

    x0, x1 = span(lo[0], hi[0], wf)
    y0, y1 = span(lo[1], hi[1], hf)
    return x0, y0, x1, y1


@functools.lru_cache(maxsize=32)
def _cell_index(h: int, w: int, cell: int, device: torch.device) -> torch.Tensor:
    """Cell number (row-major over the cell grid) of every pixel of an ``h x w`` patch."""
    rows = torch.arange(h, device=device) // cell
    cols = torch.arange(w, device=device) // cell
    return (rows.view(-1, 1) * (w // cell) + cols.view(1, -1)).view(1, 1, h, w).float()


@functools.lru_cache(maxsize=32)
def _vote_base(
    n: int, h: int, w: int, cell: int, n_signed: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Per pixel of ``n`` ``h x w`` patches, its patch's and cell's part of the flat histogram index, float."""
    hc, wc = h // cell, w // cell
    patch = torch.arange(n, device=device, dtype=dtype).view(n, 1, 1, 1) * (n_signed * hc * wc)
    return patch + _cell_index(h, w, cell, device)


def num_hog_channels(num_orients: int = 9) -> int:
    """Number of channels :func:`hog_features` returns for ``num_orients`` unsigned bins."""
    return 3 * num_orients + 1


def hog_features(patch: torch.Tensor, cell: int = 4, num_orients: int = 9, clip: float = 0.2) -> torch.Tensor:
    """HOG-like gradient features on a cell grid.

    Per cell: ``2 * num_orients`` contrast-sensitive orientation bins, ``num_orients``
    contrast-insensitive bins (the two halves summed) and one gradient-energy channel, each
    normalised by the energy of the surrounding 2x2-cell blocks and truncated at ``clip`` as in
    Dalal-Triggs / FHOG.

    Args:
        patch: Image patches ``(N, 3, H, W)`` or ``(N, 1, H, W)``, float, values in [0, 1].
            ``H`` and ``W`` must be multiples of ``cell``.
        cell: Cell size in pixels.
        num_orients: Number of contrast-insensitive orientation bins.
        clip: Truncation threshold after normalisation.

    Returns:
        Features ``(N, 3 * num_orients + 1, H // cell, W // cell)``.
    """
    gray = patch.mean(1, keepdim=True) if patch.shape[1] == 3 else patch
    # Central differences with replicated borders, so patch edges do not create fake gradients.
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx = padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]  # (N, 1, H, W)
    gy = padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]
    mag = torch.sqrt(gx * gx + gy * gy + 1e-12)
    n_signed = 2 * num_orients
    # Signed orientation mapped to a continuous bin position in [0, n_signed]; bilinear voting into
    # the two nearest bins avoids the aliasing of hard binning when the target rotates slightly.
    # Index arithmetic stays in float (exact below 2**24) because integer remainder is slow on CPU.
    pos = (torch.atan2(gy, gx) + math.pi) * (n_signed / (2 * math.pi))
    lo = pos.floor().clamp_max(n_signed - 1)
    frac = pos - lo
    hi = lo + 1
    hi = hi - n_signed * (hi >= n_signed)
    n, _, h, w = gray.shape
    hc, wc = h // cell, w // cell
    # Vote straight into the cell histograms with one bincount: flat index (patch, bin, cell).
    # This avoids materialising a full-resolution (N, bins, H, W) map and pooling it, which costs
    # several times more on the CPU.
    base = _vote_base(n, h, w, cell, n_signed, gray.device, gray.dtype)  # (N, 1, H, W) patch and cell part of the index
    idx = torch.cat([lo, hi], 1) * (hc * wc) + base  # (N, 2, H, W)
    upper = mag * frac
    votes = torch.cat([mag - upper, upper], 1)
    hist = torch.bincount(idx.view(-1).long(), votes.view(-1), minlength=n * n_signed * hc * wc)
    signed = hist.view(n, n_signed, hc, wc).to(gray.dtype) * (1.0 / (cell * cell))
    unsigned = signed[:, :num_orients] + signed[:, num_orients:]
    # Block normalisation: energy of each 2x2 block of cells, averaged over the four blocks that
    # contain a cell (FHOG's four normalisers folded into one, which is cheaper and close enough).
    energy = (unsigned * unsigned).sum(1, keepdim=True)
    block = F.avg_pool2d(F.pad(energy, (1, 1, 1, 1), mode="replicate"), 2, stride=1)  # (N, 1, h+1, w+1)
    norm = F.avg_pool2d(block, 2, stride=1)  # (N, 1, h, w)
    inv = torch.rsqrt(norm + 1e-4)
    signed = (signed * inv).clamp_max(clip)
    unsigned = (unsigned * inv).clamp_max(clip)
    texture = torch.sqrt(energy * inv * inv + 1e-12) * 0.2
    return torch.cat([signed, unsigned, texture], 1)


@functools.lru_cache(maxsize=8)
def _prototypes(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The colour-name prototypes as ``(1, 11, 3, 1, 1)``, to compare with cells ``(N, 1, 3, h, w)``."""
    return torch.tensor(_COLOUR_PROTOTYPES, dtype=dtype, device=device).view(1, -1, 3, 1, 1)


def colour_names(cells_rgb: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Soft colour-name probabilities per cell.

    Args:
        cells_rgb: Cell-averaged colours ``(N, 3, h, w)`` in [0, 1].
        temperature: Softmax temperature on squared RGB distances; smaller is harder.

    Returns:
        ``(N, 11, h, w)`` probabilities that sum to one over the channel axis.
    """
    protos = _prototypes(cells_rgb.dtype, cells_rgb.device)  # (1, 11, 3, 1, 1)
    # Brightness-normalise first so a dark pixel of a red coat still reads "red", not "black":
    # night scenes (OTB Crossing) are otherwise all black.
    bright = cells_rgb.amax(1, keepdim=True)
    chroma = cells_rgb / bright.clamp_min(0.05)
    mixed = 0.5 * cells_rgb + 0.5 * chroma * bright.sqrt()
    d2 = ((mixed.unsqueeze(1) - protos) ** 2).sum(2)  # (N, 11, h, w)
    return torch.softmax(-d2 / temperature, 1)


def extract_features(
    patch: torch.Tensor,
    cell: int = 4,
    num_orients: int = 9,
    colour: bool = True,
    cells: torch.Tensor | None = None,
) -> torch.Tensor:
    """The default tracking feature stack: HOG-like gradients, intensity and soft colour names.

    Args:
        patch: RGB patches ``(N, 3, H, W)`` in [0, 1]; ``H``, ``W`` multiples of ``cell``.
        cell: Cell size in pixels.
        num_orients: Contrast-insensitive orientation bins of the HOG part.
        colour: Append the eleven colour-name channels.
        cells: The patches' mean colour per cell ``(N, 3, H // cell, W // cell)``, when the caller
            has it already (pooling the full-resolution patches again costs as much as the FFT).

    Returns:
        ``(N, C, H // cell, W // cell)`` with ``C = 3 * num_orients + 2 (+ 11)``.
    """
    hog = hog_features(patch, cell=cell, num_orients=num_orients)
    if cells is None:
        cells = F.avg_pool2d(patch, cell)  # (N, 3, h, w) mean colour per cell
    gray = cells.mean(1, keepdim=True) - 0.5
    parts = [hog, gray]
    if colour:
        parts.append(colour_names(cells) * 0.5)
    return torch.cat(parts, 1)


def num_feature_channels(num_orients: int = 9, colour: bool = True) -> int:
    """Channel count of :func:`extract_features` for the given settings."""
    return num_hog_channels(num_orients) + 1 + (NUM_COLOUR_NAMES if colour else 0)
