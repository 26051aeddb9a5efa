"""Training losses as small pure functions. Reconstruction losses take a weight map
(B, 1, H, W) that says where they look: hole + context ring, or the whole image; each is one mean over
the whole batch (metrics.masked_mean with dim=None), the scalar the optimizer minimises."""
import torch
import torch.nn.functional as F

from metrics import SSIM_RADIUS, hole_bounds, masked_mean, sobel_magnitude, ssim_map
from models import to_unit_range


def hole_patches(mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """B, 1, h, w on the discriminator's logit grid: 1 where a patch's cell holds a hole pixel."""
    return F.adaptive_max_pool2d(mask.float(), logits.shape[-2:])


def generator_adversarial_loss(fake_logits: torch.Tensor, patches: "torch.Tensor | None" = None) -> torch.Tensor:
    """Non-saturating GAN loss: the generator wants its composites judged real (on `patches` only, when given)."""
    if patches is None:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    per_patch = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits), reduction="none")
    return masked_mean(per_patch, patches, dim=None)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       patches: "torch.Tensor | None" = None) -> torch.Tensor:
    """BCE with logits: real images -> 1, composites -> 0 (averaged over both halves). With `patches`, only
    those patches of a composite are fake; the rest of it shows real pixels and is labelled real."""
    fake_target = torch.zeros_like(fake_logits) if patches is None else 1 - patches
    return 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, fake_target))


def l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return masked_mean((pred - target).abs(), weight, dim=None)


def l2_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error: the quantity PSNR is a log of, so the one to minimise for PSNR."""
    return masked_mean((pred - target).square(), weight, dim=None)


def edge_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel gradient magnitudes: penalises blurred or misplaced edges."""
    return masked_mean((sobel_magnitude(pred) - sobel_magnitude(target)).abs(), weight, dim=None)


def region_crops(weight: torch.Tensor, margin: int, *images: torch.Tensor) -> tuple:
    """Per-sample crops (all of one size) of the weight's bounding box grown by margin, for weight
    and each image; (weight, *images) unchanged when the crops would not be smaller.

    A crop that reaches the image border is shifted inside it, so every weighted pixel keeps the
    same margin of real (or, at the image border, the same mirrored) neighbours as in the full image.
    """
    b, _, h, w = weight.shape
    top, bottom, left, right = hole_bounds(weight)
    extent = torch.stack([(bottom - top).amax(), (right - left).amax()]).tolist()  # one host sync
    ch, cw = min(extent[0] + 1 + 2 * margin, h), min(extent[1] + 1 + 2 * margin, w)
    if ch * cw * 2 > h * w:
        return (weight, *images)
    top = (top - margin).clamp(0, h - ch)
    left = (left - margin).clamp(0, w - cw)
    r = (top[:, None] + torch.arange(ch, device=weight.device))[:, :, None]   # B, ch, 1
    c = (left[:, None] + torch.arange(cw, device=weight.device))[:, None, :]  # B, 1, cw
    bi = torch.arange(b, device=weight.device)[:, None, None]
    return tuple(t[bi, :, r, c].permute(0, 3, 1, 2) for t in (weight, *images))  # B, C, ch, cw


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM over the weighted pixels; inputs in [-1, 1] are mapped to SSIM's [0, 1].

    On CPU the SSIM map is computed only on crops around the weighted pixels (same values, ~10x
    less work for small holes); elsewhere on the full image, avoiding the crops' host sync.
    """
    if pred.device.type == "cpu":
        weight, pred, target = region_crops(weight, SSIM_RADIUS["gaussian"], pred, target)
    ssim = ssim_map(to_unit_range(pred), to_unit_range(target), window="gaussian")
    return 1 - masked_mean(ssim, weight, dim=None)


# The generator's reconstruction terms: logged name -> (the Config field holding its weight, function).
# A new loss is one entry here (plus its weight field in config.py); training, logging and plots follow.
RECONSTRUCTION = {
    "l1": ("w_l1", l1_loss),
    "edge": ("w_edge", edge_loss),
    "ssim_loss": ("w_ssim", ssim_loss),
    "l2": ("w_l2", l2_loss),
}


def reconstruction_losses(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, cfg) -> tuple:
    """(weighted sum, {name: unweighted value}) of the RECONSTRUCTION terms; zero-weight terms are still
    computed and logged, so runs stay comparable."""
    values = {name: fn(pred, target, weight) for name, (_, fn) in RECONSTRUCTION.items()}
    total = sum(getattr(cfg, field) * values[name] for name, (field, _) in RECONSTRUCTION.items())
    return total, values
