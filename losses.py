"""Training losses as small pure functions. Reconstruction losses take a weight map
(B, 1, H, W) that says where they look: hole + context ring, or the whole image; each is one mean over
the whole batch (metrics.masked_mean with dim=None), the scalar the optimizer minimises."""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from metrics import SSIM_RADIUS, excess_gradient, hole_bounds, masked_mean, seam_band, sobel_magnitude, ssim_map
from masks import parse_kind_weights
from models import composite, to_unit_range


# --- the adversarial part: pure terms over one Critique, summed by the Adversarial object ---

class Critique(NamedTuple):
    """What the discriminator said about one batch. fake: per-layer features of the composites, logits last;
    real: the same of the real images (None when no active term needs them); fakeness: B, 1, h, w on the
    logit grid, how much of each composite patch is generated (1 everywhere without --d-mask); real_images:
    the real input, with requires_grad when a term differentiates the logits by it (R1); weights: B, 1, 1, 1,
    how much each sample's generator terms count (--gan-kind-weights), None for 1 each."""
    fake: list
    real: "list | None"
    fakeness: torch.Tensor
    real_images: "torch.Tensor | None" = None
    weights: "torch.Tensor | None" = None


def per_sample(values: torch.Tensor, c: Critique) -> torch.Tensor:
    """values (B, ...) scaled by each sample's weight in the critique (unchanged without weights)."""
    return values if c.weights is None else values * c.weights


def hole_patches(mask: torch.Tensor, logits: torch.Tensor, blur: float = 0.0) -> torch.Tensor:
    """B, 1, h, w on the discriminator's logit grid: 1 where a patch's cell holds a hole pixel, or with
    blur > 0 the mask blurred by a Gaussian of that sigma (px) and averaged per cell (AOT-GAN's soft labels)."""
    if blur <= 0:
        return F.adaptive_max_pool2d(mask.float(), logits.shape[-2:])
    r = int(3 * blur)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=mask.device, dtype=torch.float32) / blur) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1)
    soft = F.conv2d(F.conv2d(mask.float(), k, padding=(0, r)), k.transpose(2, 3), padding=(r, 0))  # B, 1, H, W
    soft = F.adaptive_avg_pool2d(soft, logits.shape[-2:])
    return (soft / soft.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)).clamp(0, 1)  # the hole's core is fake


def generator_adversarial_loss(c: Critique) -> torch.Tensor:
    """Non-saturating GAN loss: the generator wants its composites judged real, patch by patch weighted by
    how generated each patch is."""
    logits = c.fake[-1]
    per_patch = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    return masked_mean(per_sample(per_patch, c), c.fakeness, dim=None)


def feature_matching_loss(c: Critique) -> torch.Tensor:
    """L1 between the discriminator's features of composite and real image, averaged over its blocks (LaMa):
    a dense target the generator can follow before the discriminator's verdicts mean much."""
    return sum(per_sample((f - r.detach()).abs(), c).mean() for f, r in zip(c.fake[:-1], c.real[:-1])) / (len(c.fake) - 1)


def discriminator_loss(c: Critique) -> torch.Tensor:
    """BCE with logits: real images -> 1, composites -> 1 - fakeness (0 where generated; with --d-mask the
    known patches of a composite show real pixels and count as real), averaged over both halves."""
    real, fake = c.real[-1], c.fake[-1]
    return 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, 1 - c.fakeness))


def r1_penalty(c: Critique) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the squared gradient norm of the real logits by the real pixels, per image;
    it keeps the discriminator smooth on the data, which small datasets need most."""
    (grad,) = torch.autograd.grad(c.real[-1].sum(), c.real_images, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


# The adversarial terms: logged name -> (the Config field holding its weight, function of a Critique).
# Generator terms are scaled together by the adversarial schedule; "gan_g" and "gan_d" are the GAN itself
# (on when w_adv > 0), the others join only when their weight is > 0. A new term is one entry here.
GENERATOR_ADVERSARIAL = {"gan_g": ("w_adv", generator_adversarial_loss), "fm": ("w_fm", feature_matching_loss)}
DISCRIMINATOR_TERMS = {"gan_d": ("", discriminator_loss), "r1": ("w_r1", r1_penalty)}
NEEDS_REAL_FEATURES = {"fm"}  # generator terms that need the discriminator's view of the real images
NEEDS_REAL_GRADIENT = {"r1"}


class Adversarial:
    """The GAN of one run: the discriminator's view of a batch and both players' losses, each returning
    (loss, {name: value}). Built only when the adversarial loss is on (adversarial_part), so nothing else
    asks whether it is. Logits and losses are fp32 whatever the autocast."""

    def __init__(self, cfg):
        self.cfg = cfg
        weight = lambda field: 1.0 if not field else getattr(cfg, field)
        self.g_terms = {k: (weight(f), fn) for k, (f, fn) in GENERATOR_ADVERSARIAL.items() if k == "gan_g" or weight(f) > 0}
        self.d_terms = {k: (weight(f), fn) for k, (f, fn) in DISCRIMINATOR_TERMS.items() if k == "gan_d" or weight(f) > 0}
        self.kind_weights = parse_kind_weights(cfg.gan_kind_weights, "gan_kind_weights")

    def sample_weights(self, kinds: "list | None", device) -> "torch.Tensor | None":
        """B, 1, 1, 1: how strongly the GAN phase acts on each sample, by its hole's kind (--gan-kind-weights);
        None when every sample's is 1 (or the kinds are not known)."""
        weights = [self.kind_weights.get(k, 1.0) for k in kinds or ()]
        if all(w == 1.0 for w in weights):
            return None
        return torch.tensor(weights, device=device).view(-1, 1, 1, 1)

    @property
    def keys(self) -> tuple:
        return tuple(self.g_terms) + tuple(self.d_terms)

    def critique(self, d, real, composite, mask, real_view: bool, real_grad: bool = False, weights=None) -> Critique:
        with_mask = (lambda x: torch.cat([x, mask.to(x.dtype)], dim=1)) if self.cfg.d_mask else (lambda x: x)
        fake = [f.float() for f in d(with_mask(composite), features=True)]
        fakeness = hole_patches(mask, fake[-1], self.cfg.mask_blur) if self.cfg.d_mask else torch.ones_like(fake[-1])
        real_images, real_feats = None, None
        if real_view:
            real_images = real.detach().requires_grad_(real_grad)
            real_feats = [f.float() for f in d(with_mask(real_images), features=True)]
        return Critique(fake, real_feats, fakeness, real_images, weights)

    def generator_loss(self, d, real, composite, mask, scale: float = 1.0, weights=None) -> tuple:
        """scale x the weighted generator terms (the schedule's share of w_adv), and their unweighted values;
        weights: sample_weights' per-sample strengths. d must be frozen by the caller: only the generator learns."""
        c = self.critique(d, real, composite, mask, real_view=bool(NEEDS_REAL_FEATURES & set(self.g_terms)),
                          weights=weights)
        values = {k: fn(c) for k, (_, fn) in self.g_terms.items()}
        return scale * sum(w * values[k] for k, (w, _) in self.g_terms.items()), values

    def discriminator_loss(self, d, real, composite, mask) -> tuple:
        """The discriminator's loss on real images and (detached) composites, and its terms' values."""
        grad = bool(NEEDS_REAL_GRADIENT & set(self.d_terms))
        c = self.critique(d, real, composite.detach(), mask, real_view=True, real_grad=grad)
        values = {k: fn(c) for k, (_, fn) in self.d_terms.items()}
        return sum(w * values[k] for k, (w, _) in self.d_terms.items()), values

    @torch.no_grad()
    def scores(self, d, real, composite, mask) -> tuple:
        """(generator's, discriminator's) plain GAN losses on a batch, for validation: no penalties."""
        c = self.critique(d, real, composite, mask, real_view=True)
        return generator_adversarial_loss(c), discriminator_loss(c)


def adversarial_part(cfg) -> "Adversarial | None":
    """The one place the GAN is switched: an Adversarial when w_adv > 0, else None."""
    return Adversarial(cfg) if cfg.w_adv > 0 else None


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


def seam_loss(pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """The seam metric as a loss: the edge the composite (pred in the hole, target outside) draws along the
    hole's border beyond the photo's own, the mean over the band of every image. The outline a fill leaves
    lies across the hole's border, where no term on pred alone looks."""
    excess = excess_gradient(composite(pred, target, hole), target)  # B, 1, H, W
    return masked_mean(excess, seam_band(hole), dim=None)


# The generator's reconstruction terms: logged name -> (the Config field holding its weight, function).
# A new loss is one entry here (plus its weight field in config.py); training, logging and plots follow.
# Each function takes (pred, target, the loss region's weight map), or for READS_HOLE terms the hole mask.
RECONSTRUCTION = {
    "l1": ("w_l1", l1_loss),
    "edge": ("w_edge", edge_loss),
    "ssim_loss": ("w_ssim", ssim_loss),
    "l2": ("w_l2", l2_loss),
    "seam": ("w_seam", seam_loss),
}
READS_HOLE = {"seam"}  # terms that find their own region from the hole mask


def reconstruction_term(name: str, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                        hole: torch.Tensor) -> torch.Tensor:
    """The unweighted value of one RECONSTRUCTION term, given the region it reads."""
    return RECONSTRUCTION[name][1](pred, target, hole if name in READS_HOLE else weight)


def reconstruction_losses(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, hole: torch.Tensor,
                          cfg) -> tuple:
    """(weighted sum, {name: unweighted value}) of the RECONSTRUCTION terms; zero-weight terms are still
    computed and logged, so runs stay comparable."""
    values = {name: reconstruction_term(name, pred, target, weight, hole) for name in RECONSTRUCTION}
    total = sum(getattr(cfg, field) * values[name] for name, (field, _) in RECONSTRUCTION.items())
    return total, values
