"""Image-quality metrics over holes, batched in torch; shared by training, validation, results.py.

All functions take images in [0, 1], shape B, C, H, W (float32) and masks B, 1, H, W (1 = hole),
and return one value per image (shape B) so callers can average or build confidence intervals.

SSIM follows skimage.metrics.structural_similarity(data_range=1, channel_axis=...) in two windows:
"uniform" (skimage's default 7x7 box, used for every reported SSIM so numbers compare with the
literature's one-liners) and "gaussian" (gaussian_weights=True, sigma=1.5, 11x11, used by the SSIM
loss). The tests check both against skimage.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
# skimage truncates its gaussian at 3.5 sigma (an 11x11 window); its default box window is 7x7.
SSIM_RADIUS = {"gaussian": int(3.5 * SSIM_SIGMA + 0.5), "uniform": 3}
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
HOLE_SSIM_MARGIN = 3  # hole SSIM is measured on the hole's bounding box grown by this many px


def _window(window: str, channels: int, device, dtype) -> torch.Tensor:
    """1-D separable SSIM window, C, 1, K."""
    r = SSIM_RADIUS[window]
    x = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    g = torch.exp(-x ** 2 / (2 * SSIM_SIGMA ** 2)) if window == "gaussian" else torch.ones_like(x)
    g = g / g.sum()
    return g.to(dtype).view(1, 1, -1).repeat(channels, 1, 1)


def _symmetric_pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Mirror r pixels at both ends of dim, repeating the edge pixel (scipy.ndimage's 'reflect')."""
    if x.shape[dim] < r:
        return torch.cat([x.narrow(dim, 0, 1)] * r + [x] + [x.narrow(dim, x.shape[dim] - 1, 1)] * r, dim)
    return torch.cat([x.narrow(dim, 0, r).flip(dim), x, x.narrow(dim, x.shape[dim] - r, r).flip(dim)], dim)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable filter with scipy's 'reflect' border, as skimage's SSIM uses."""
    c, r = x.shape[1], kernel.shape[-1] // 2
    x = F.conv2d(_symmetric_pad(x, r, -1), kernel.unsqueeze(2), groups=c)     # B, C, H, W
    return F.conv2d(_symmetric_pad(x, r, -2), kernel.unsqueeze(3), groups=c)  # B, C, H, W


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: str = "uniform") -> torch.Tensor:
    """Per-pixel SSIM, B, C, H, W; averaging it over a region gives skimage's SSIM of that crop
    as long as the region stays SSIM_RADIUS[window] px inside the crop."""
    x, y = x.float(), y.float()
    k = _window(window, x.shape[1], x.device, x.dtype)
    n = k.shape[-1] ** 2
    cov_norm = n / (n - 1)  # skimage's sample-covariance correction uses the window's pixel count
    # One batched filter pass over the five moments instead of five passes.
    moments = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), k.repeat(5, 1, 1))
    mx, my, xx, yy, xy = moments.chunk(5, dim=1)
    vx = cov_norm * (xx - mx * mx)
    vy = cov_norm * (yy - my * my)
    vxy = cov_norm * (xy - mx * my)
    return ((2 * mx * my + SSIM_C1) * (2 * vxy + SSIM_C2)) / ((mx ** 2 + my ** 2 + SSIM_C1) * (vx + vy + SSIM_C2))


def masked_mean(values: torch.Tensor, weight: torch.Tensor, dim=(1, 2, 3)) -> torch.Tensor:
    """Mean of values (B, C, H, W) over the pixels weight (B, 1, H, W) selects (all channels): one value
    per image with the default dim, one over the whole batch with dim=None (the training losses)."""
    total = (values * weight).sum(dim)
    count = weight.sum(dim) * values.shape[1]
    return total / count.clamp_min(1)


def hole_bounds(mask: torch.Tensor) -> tuple:
    """(top, bottom, left, right), each of shape B: the first and last row and column (inclusive) holding
    a pixel that mask (B, 1, H, W) sets; an empty mask gives top = H, bottom = -1, left = W, right = -1."""
    _, _, h, w = mask.shape
    present = mask > 0
    rows, cols = present.amax(dim=(1, 3)), present.amax(dim=(1, 2))          # B, H and B, W
    ih, iw = torch.arange(h, device=mask.device), torch.arange(w, device=mask.device)
    return (torch.where(rows, ih, h).amin(1), torch.where(rows, ih, -1).amax(1),
            torch.where(cols, iw, w).amin(1), torch.where(cols, iw, -1).amax(1))


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Sobel gradient magnitude, same shape as x (replicate padding at borders)."""
    kx = torch.tensor([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device, dtype=x.dtype) / 4
    c = x.shape[1]
    weight = torch.stack([kx, kx.t()]).unsqueeze(1).repeat(c, 1, 1, 1)      # 2C, 1, 3, 3
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=c)  # B, 2C, H, W
    gx, gy = g[:, 0::2], g[:, 1::2]
    return torch.sqrt(gx * gx + gy * gy + 1e-12)


def hole_l1(pred, target, mask) -> torch.Tensor:
    """Mean absolute error over hole pixels (all channels), per image."""
    return masked_mean((pred.float() - target.float()).abs(), mask)


def hole_mse(pred, target, mask) -> torch.Tensor:
    return masked_mean((pred.float() - target.float()) ** 2, mask)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def hole_psnr(pred, target, mask) -> torch.Tensor:
    """PSNR (dB, data range 1) of the hole pixels, per image."""
    return psnr_from_mse(hole_mse(pred, target, mask))


def hole_edge(pred, target, mask) -> torch.Tensor:
    """Mean absolute difference of Sobel magnitudes over hole pixels, per image."""
    return masked_mean((sobel_magnitude(pred.float()) - sobel_magnitude(target.float())).abs(), mask)


def bbox_region(mask: torch.Tensor, margin: int = HOLE_SSIM_MARGIN) -> torch.Tensor:
    """B, 1, H, W: the pixels whose SSIM window lies inside the hole's bounding box grown by margin.

    That is where skimage's SSIM of the cropped box takes its mean. A box too small to hold one
    full window falls back to its centre pixel.
    """
    h, w = mask.shape[-2:]
    top, bottom, left, right = hole_bounds(mask)
    top, left = (top - margin).clamp_min(0), (left - margin).clamp_min(0)
    bottom, right = (bottom + margin).clamp_max(h - 1), (right + margin).clamp_max(w - 1)
    r = SSIM_RADIUS["uniform"]
    t2, b2 = torch.minimum(top + r, (top + bottom) // 2), torch.maximum(bottom - r, (top + bottom + 1) // 2)
    l2, r2 = torch.minimum(left + r, (left + right) // 2), torch.maximum(right - r, (left + right + 1) // 2)
    idx_h, idx_w = torch.arange(h, device=mask.device), torch.arange(w, device=mask.device)
    in_rows = (idx_h[None] >= t2[:, None]) & (idx_h[None] <= b2[:, None])       # B, H
    in_cols = (idx_w[None] >= l2[:, None]) & (idx_w[None] <= r2[:, None])       # B, W
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1).float()    # B, 1, H, W


def hole_ssim(pred, target, mask, ssim=None) -> torch.Tensor:
    """SSIM of the hole's bounding box (+ margin), per image, as skimage's default computes it on that crop.
    Pass a precomputed ssim_map(pred, target) as `ssim` to avoid computing it twice."""
    return masked_mean(ssim_map(pred, target) if ssim is None else ssim, bbox_region(mask))


def image_psnr(pred, target) -> torch.Tensor:
    return psnr_from_mse(((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3)))


def image_ssim(pred, target, ssim=None) -> torch.Tensor:
    """Whole-image SSIM as skimage's default computes it (the border of one window radius is left out)."""
    r = SSIM_RADIUS["uniform"]
    ssim = ssim_map(pred, target) if ssim is None else ssim
    return ssim[..., r:-r, r:-r].mean(dim=(1, 2, 3))


SEAM_BAND = (2, 1)  # the seam band: hole pixels within 2 px of a known pixel, known pixels within 1 px of the hole
DETAIL_DEPTH = 3  # detail is measured on hole pixels at least this many px from every known pixel
LUMA = (0.299, 0.587, 0.114)


def _grow(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within `radius` px (Chebyshev distance) of a set pixel of mask (B, 1, H, W)."""
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def grey(x: torch.Tensor) -> torch.Tensor:
    """B, 1, H, W: the grey level (ITU-R 601 luma) of x in [0, 1]."""
    return (x.float() * torch.tensor(LUMA, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)).sum(1, keepdim=True)


def grey_gradient(x: torch.Tensor) -> torch.Tensor:
    """B, 1, H, W: the Sobel gradient magnitude of the grey level (ITU-R 601 luma) of x in [0, 1]."""
    return sobel_magnitude(grey(x))


def seam_band(mask: torch.Tensor) -> torch.Tensor:
    """B, 1, H, W: 1 on the seam band (SEAM_BAND) of a hole mask (1 = hole), where a fill meets the photo."""
    hole = (mask > 0.5).float()
    known = 1 - hole
    return hole * _grow(known, SEAM_BAND[0]) + known * _grow(hole, SEAM_BAND[1])


def excess_gradient(pred, target) -> torch.Tensor:
    """B, 1, H, W: max(0, |grad pred| - |grad target|) of the grey level: the edges pred has and target lacks."""
    return (grey_gradient(pred) - grey_gradient(target)).clamp_min(0)


def seam(pred, target, mask) -> torch.Tensor:
    """The edge a fill draws where it meets the photo, per image: along the band (SEAM_BAND), the mean of
    max(0, |grad composite| - |grad original|) of the grey level, x100. 0 = no edge beyond the photo's own."""
    return 100 * masked_mean(excess_gradient(pred, target), seam_band(mask))


def detail(pred, target, mask) -> torch.Tensor:
    """The fill's texture against the photo's, per image: the mean grey-level gradient of the composite over
    that of the original, on hole pixels >= DETAIL_DEPTH px inside the hole (where the gradient sees only the
    fill). 1 = a real face's texture, below it smoother (a blur), above it busier; NaN where the hole has no
    such interior (a thin stroke)."""
    hole = (mask > 0.5).float()
    inner = hole * (1 - _grow(1 - hole, DETAIL_DEPTH - 1))
    ours, theirs = (masked_mean(grey_gradient(v), inner) for v in (pred, target))
    return torch.where(inner.sum((1, 2, 3)) > 0, ours / theirs.clamp_min(1e-6), torch.full_like(ours, math.nan))


GRID_PERIOD = 8  # the generator's coarsest pixel-shuffle step (1/8 -> 1/4) repeats every 8 px
GRID_MIN_PIXELS = 8  # hole pixels per phase (on average) below which grid is NaN: too few to tell a lock from noise


def grid(pred, mask, period: int = GRID_PERIOD) -> torch.Tensor:
    """How strongly a fill is locked to a `period`-px grid, per image: the hole's high-pass grey level (the grey
    minus its 9x9 mean) grouped by phase (y mod period, x mod period), as the square root of the one-way
    ANOVA F ratio (spread of the phase means over what the spread within phases predicts). ~1 for a texture
    with no lock, a photo's own pixels included; a pattern repeating every `period` px raises it. NaN where
    the hole has fewer than GRID_MIN_PIXELS pixels per phase."""
    g = grey(pred)
    high = (g - F.avg_pool2d(F.pad(g, (4,) * 4, mode="replicate"), 9, stride=1)).flatten(1)  # B, HW
    hole = (mask > 0.5).float().flatten(1)                                                  # B, HW
    h, w = pred.shape[-2:]
    phase = (torch.arange(h, device=pred.device)[:, None] % period * period
             + torch.arange(w, device=pred.device)[None, :] % period).flatten()
    n, sums, squares = (hole.new_zeros(hole.shape[0], period * period).index_add_(1, phase, v)
                        for v in (hole, hole * high, hole * high ** 2))                     # B, P*P each
    groups, total = (n > 0).sum(1).double(), n.sum(1).double()
    means_ss = (sums ** 2 / n.clamp_min(1)).sum(1).double()
    between = means_ss - sums.sum(1).double() ** 2 / total.clamp_min(1)
    within = squares.sum(1).double() - means_ss
    f_ratio = (between / (groups - 1).clamp_min(1)) / (within / (total - groups).clamp_min(1)).clamp_min(1e-20)
    enough = total >= GRID_MIN_PIXELS * period * period
    return torch.where(enough, f_ratio.clamp_min(0).sqrt(), torch.full_like(f_ratio, math.nan)).float()


def quality_metrics(pred, target, mask) -> dict:
    """Every per-image metric an evaluation reports (inputs in [0, 1]): hole L1, PSNR, SSIM and edge
    error, the seam, the detail and the grid lock, plus whole-image PSNR and SSIM."""
    ssim = ssim_map(pred, target)
    return {"l1": hole_l1(pred, target, mask), "psnr": hole_psnr(pred, target, mask),
            "ssim": hole_ssim(pred, target, mask, ssim), "edge": hole_edge(pred, target, mask),
            "seam": seam(pred, target, mask), "detail": detail(pred, target, mask), "grid": grid(pred, mask),
            "image_psnr": image_psnr(pred, target), "image_ssim": image_ssim(pred, target, ssim)}


@dataclass(frozen=True)
class Metric:
    """How a metric is shown and compared, declared once: its header, which way is better (ideal: +inf =
    higher, -inf = lower, a number = closer to it), its format (printed x scale with `digits` decimals), and how
    images are averaged: arithmetically, or for a ratio geometrically (see geometric_mean_ci95)."""
    label: str
    ideal: float
    digits: int = 4
    scale: float = 1.0
    geometric: bool = False

    def average(self, values) -> tuple:
        """(mean, 95 % CI half-width) over images, as this metric averages them."""
        return geometric_mean_ci95(values) if self.geometric else mean_ci95(values)

    @property
    def header(self) -> str:
        arrow = "↑" if self.ideal == math.inf else "↓" if self.ideal == -math.inf else f"→{self.ideal:g}"
        return f"{self.label} {arrow}"

    def distance(self, value: float) -> float:
        """How far a value is from ideal (smaller is better); NaN counts as the worst."""
        if math.isnan(value):
            return math.inf
        return -value if self.ideal == math.inf else value if self.ideal == -math.inf else abs(value - self.ideal)

    def better(self, value: float, than: "float | None") -> bool:
        return than is None or self.distance(value) < self.distance(than)

    def best(self, values) -> float:
        return min(values, key=self.distance)

    def format(self, value: float, spread: float = math.nan) -> str:
        """'12.34' or '12.34 ± 0.56', scaled."""
        text = f"{value * self.scale:.{self.digits}f}"
        return text if math.isnan(spread) else f"{text} ± {spread * self.scale:.{self.digits}f}"


UP, DOWN = math.inf, -math.inf
METRICS = {  # every metric a table, a goal line or a best-checkpoint choice names
    "l1": Metric("hole L1", DOWN),
    "psnr": Metric("hole PSNR dB", UP, 2),
    "ssim": Metric("hole SSIM", UP),
    "edge": Metric("hole edge", DOWN),
    "seam": Metric("seam", DOWN, 3),
    "detail": Metric("detail", 1.0, 3, geometric=True),
    "grid": Metric("grid", DOWN, 2),
    "lpips": Metric("LPIPS", DOWN),
    "kid": Metric("KID×1000", DOWN, 2, 1000),
    "fd": Metric("FD-VGG", DOWN, 2),
    "image_psnr": Metric("image PSNR dB", UP, 2),
    "image_ssim": Metric("image SSIM", UP),
    "identity": Metric("ID distance", DOWN, 3),
    "same_person": Metric("same person %", UP, 1, 100),
}


def mean_ci95(values) -> tuple:
    """Mean and half-width of a normal-approximation 95% confidence interval over images (NaN values, e.g.
    detail where a hole has no interior, are left out)."""
    v = torch.as_tensor(values, dtype=torch.float64)
    v = v[~torch.isnan(v)]
    if v.numel() < 2:
        return float(v.mean()) if v.numel() else math.nan, math.nan
    return float(v.mean()), float(1.96 * v.std(unbiased=True) / math.sqrt(v.numel()))


RATIO_FLOOR = 1e-3  # a ratio below this (a flat fill) counts as this in a geometric mean, whose log would be -inf


def geometric_mean_ci95(values) -> tuple:
    """exp(mean log) of per-image ratios and the 95% CI's half-width by the delta method (exp(m) x the log mean's).

    A ratio over a near-flat original (a hole on a plain backdrop) can be 10-100x: one such image pulls an
    arithmetic mean of 400 above 1.2 while every other fill is smoother than the photo, and halving a texture
    would count less than doubling it. In logs, 1/2 and 2 weigh the same and no image outweighs the rest."""
    v = torch.as_tensor(values, dtype=torch.float64)
    v = v[~torch.isnan(v)].clamp_min(RATIO_FLOOR)
    mean, ci = mean_ci95(v.log())
    return math.exp(mean), math.exp(mean) * ci
