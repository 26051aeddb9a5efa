"""Run an inpainter over a fixed image set with fixed holes and measure it.

Shared by validation in main.py and by results.py, so both report exactly the same numbers.
"""
import time

import torch

from dataset import to_model_range, to_unit_range
from losses import discriminator_loss, generator_adversarial_loss
from metrics import quality_metrics


@torch.no_grad()
def generator_inpaint(generator, images: torch.Tensor, masks: torch.Tensor, rt) -> tuple:
    """(raw generator output, composite) for [-1, 1] images on rt.device; both float32."""
    with rt.autocast():
        raw = generator(images, masks).float()
    return raw, masks * raw + (1 - masks) * images


@torch.no_grad()
def evaluate_generator(generator, images_u8: torch.Tensor, masks: torch.Tensor, rt,
                       batch_size: int = 20, discriminator=None, keep_outputs: bool = False) -> dict:
    """Per-image hole metrics (tensors of length N) over uint8 images and their fixed masks.

    With a discriminator, also the mean generator adversarial loss and discriminator loss.
    With keep_outputs, 'raw' and 'composite' hold the outputs in [0, 1] on the CPU.
    """
    generator.eval()
    if discriminator is not None:
        discriminator.eval()
    per_image, raws, comps = [], [], []
    gan_g = gan_d = 0.0
    seconds = 0.0
    for i in range(0, len(images_u8), batch_size):
        x = to_model_range(images_u8[i:i + batch_size], rt.device, rt.memory_format())
        m = masks[i:i + batch_size].to(rt.device).contiguous(memory_format=rt.memory_format())
        start = time.perf_counter()
        raw, comp = generator_inpaint(generator, x, m, rt)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        per_image.append({k: v.cpu() for k, v in quality_metrics(to_unit_range(comp), to_unit_range(x), m).items()})
        if discriminator is not None:
            with rt.autocast():
                real_logits, fake_logits = discriminator(x).float(), discriminator(comp).float()
            n = len(x)
            gan_g += generator_adversarial_loss(fake_logits).item() * n
            gan_d += discriminator_loss(real_logits, fake_logits).item() * n
        if keep_outputs:
            raws.append(to_unit_range(raw).cpu())
            comps.append(to_unit_range(comp).cpu())
    out = {k: torch.cat([p[k] for p in per_image]) for k in per_image[0]}
    out["seconds_per_image"] = seconds / max(len(images_u8), 1)
    if discriminator is not None:
        out["gan_g"] = gan_g / len(images_u8)
        out["gan_d"] = gan_d / len(images_u8)
    if keep_outputs:
        out["raw"], out["composite"] = torch.cat(raws), torch.cat(comps)
    return out


def evaluate_baseline(inpaint, images_u8: torch.Tensor, masks: torch.Tensor) -> dict:
    """The same measurements for a classical inpaint(image HWC [0,1], mask HW bool) -> image."""
    outs, seconds = [], 0.0
    for img, m in zip(images_u8, masks):
        hwc = img.permute(1, 2, 0).float().numpy() / 255
        start = time.perf_counter()
        out = inpaint(hwc, m[0].numpy() > 0.5)
        seconds += time.perf_counter() - start
        outs.append(torch.from_numpy(out).permute(2, 0, 1))
    target = images_u8.float() / 255
    composite = masks * torch.stack(outs) + (1 - masks) * target  # keep known pixels exact
    result = quality_metrics(composite, target, masks)
    result["seconds_per_image"] = seconds / max(len(images_u8), 1)
    result["composite"] = composite
    return result
