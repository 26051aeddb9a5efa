"""Hole masks: 1 = hole (pixels to invent), 0 = known. Shape B, 1, H, W, float32.

Randomness comes from numpy Generators seeded by tuples such as (seed, epoch, step), so the holes of
any step can be re-drawn after a resume and a fixed evaluation set is the same on every machine
(PCG64 is specified bit for bit, unlike torch's CPU/GPU generators).
"""
import numpy as np
import torch
import torch.nn.functional as F

SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}  # keeps val and test holes independent


def rng_for(*key: int) -> np.random.Generator:
    """A generator determined only by the integer key (e.g. seed, epoch, step)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def square_masks(n: int, size: int, hole: int, margin: int, rng: np.random.Generator,
                 jitter: int = 0) -> torch.Tensor:
    """n square holes of side hole +- jitter, at least `margin` px from every border."""
    sides = hole + rng.integers(-jitter, jitter + 1, size=n)                 # n
    span = size - 2 * margin - sides + 1                                      # valid top-left positions
    if (span < 1).any():
        raise ValueError(f"a {sides.max()} px hole with margin {margin} does not fit in {size} px")
    top = margin + (rng.random(n) * span).astype(np.int64)                    # n
    left = margin + (rng.random(n) * span).astype(np.int64)                   # n
    coords = np.arange(size)
    rows = (coords[None] >= top[:, None]) & (coords[None] < (top + sides)[:, None])     # n, H
    cols = (coords[None] >= left[:, None]) & (coords[None] < (left + sides)[:, None])   # n, W
    mask = rows[:, :, None] & cols[:, None, :]                                # n, H, W
    return torch.from_numpy(mask[:, None].astype(np.float32))                 # n, 1, H, W


def training_masks(cfg, n: int, rng: np.random.Generator) -> torch.Tensor:
    """Holes for one training batch, of the kind the config asks for."""
    return square_masks(n, cfg.image_size, cfg.hole_size, cfg.hole_margin, rng, cfg.hole_jitter)


def fixed_masks(cfg, n: int, split: str) -> torch.Tensor:
    """The evaluation holes of a split: hole i depends only on (eval_seed, split, i)."""
    if n == 0:
        return torch.zeros(0, 1, cfg.image_size, cfg.image_size)
    return torch.cat([square_masks(1, cfg.image_size, cfg.hole_size, cfg.hole_margin,
                                   rng_for(cfg.eval_seed, SPLIT_STREAM[split], i))
                      for i in range(n)])


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow holes by `radius` px in every direction (square structuring element)."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)
