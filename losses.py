"""Training losses as small pure functions. Reconstruction losses take a weight map
(B, 1, H, W) that says where they look: hole + context ring, or the whole image."""
import torch
import torch.nn.functional as F

from metrics import sobel_magnitude, ssim_map


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss: the generator wants its composites judged real."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE with logits: real images -> 1, composites -> 0 (averaged over both halves)."""
    return 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of values (B, C, H, W) over the pixels weight (B, 1, H, W) selects, over the batch."""
    return (values * weight).sum() / (weight.sum() * values.shape[1]).clamp_min(1)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return weighted_mean((pred - target).abs(), weight)


def edge_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel gradient magnitudes: penalises blurred or misplaced edges."""
    return weighted_mean((sobel_magnitude(pred) - sobel_magnitude(target)).abs(), weight)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM over the weighted pixels; inputs in [-1, 1] are mapped to SSIM's [0, 1]."""
    return 1 - weighted_mean(ssim_map((pred + 1) / 2, (target + 1) / 2, window="gaussian"), weight)
