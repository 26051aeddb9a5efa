"""Hole masks: 1 = hole (pixels to invent), 0 = known. Shape B, 1, H, W, float32.

Kinds: square (the seed's: fixed size +- jitter, margin from the border), boxes (1-N rectangles),
strokes (free-form brush polylines with round joints), mixed (a weighted blend of the three).

Randomness comes from numpy Generators seeded by tuples such as (seed, epoch, step), so the holes of
any step can be re-drawn after a resume and a fixed evaluation set is the same on every machine
(PCG64 is specified bit for bit; PIL's line drawing is integer arithmetic).
"""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

MASK_KINDS = ("square", "boxes", "strokes", "mixed")
SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}  # keeps val and test holes independent
KIND_STREAM = {k: i for i, k in enumerate(MASK_KINDS)}
BUCKETS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5))  # evaluation hole-area buckets
MAX_TRIES = 200  # redraws allowed to land a mask inside its area bounds
# Element sizes as fractions of the image side, so masks look the same at every resolution.
BOX_SIDE = (0.1, 0.4)
STROKE_WIDTH = (0.03, 0.09)
STROKE_STEP = (0.04, 0.12)
STROKE_VERTICES = (4, 10)


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


def _add_box(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator):
    h, w = (rng.uniform(*BOX_SIDE, size=2) * size).astype(int) + 1
    top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    draw.rectangle([int(left), int(top), int(left + w - 1), int(top + h - 1)], fill=255)


def _add_stroke(draw: ImageDraw.ImageDraw, size: int, rng: np.random.Generator):
    """One brush stroke: a polyline of random turns and step lengths, drawn wide with round joints."""
    width = max(int(rng.uniform(*STROKE_WIDTH) * size), 1)
    x, y = rng.uniform(0, size, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    points = [(x, y)]
    for _ in range(int(rng.integers(STROKE_VERTICES[0], STROKE_VERTICES[1] + 1))):
        angle += rng.normal(0, math.pi / 3)
        step = rng.uniform(*STROKE_STEP) * size
        x = float(np.clip(x + step * math.cos(angle), 0, size - 1))
        y = float(np.clip(y + step * math.sin(angle), 0, size - 1))
        points.append((x, y))
    points = [(round(px), round(py)) for px, py in points]
    draw.line(points, fill=255, width=width)
    r = width / 2
    for px, py in points:  # round joints and caps
        draw.ellipse([px - r, py - r, px + r, py + r], fill=255)


def _free_form(kind: str, size: int, rng: np.random.Generator, max_elements: int, min_fraction: float) -> np.ndarray:
    """Boxes or strokes: a random count of elements, plus more until the hole covers min_fraction."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    add = _add_box if kind == "boxes" else _add_stroke
    count = int(rng.integers(1, max_elements + 1))
    for _ in range(count):
        add(draw, size, rng)
    mask = np.asarray(canvas) > 0
    for _ in range(64):
        if mask.mean() >= min_fraction:
            break
        add(draw, size, rng)
        mask = np.asarray(canvas) > 0
    return mask


def parse_kind_weights(text: str, flag: str) -> dict:
    """'strokes:0.5,boxes:1' -> {kind: weight}; raises ValueError naming the flag and the problem."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, w = part.partition(":")
        try:
            weight = float(w)
        except ValueError:
            weight = math.nan
        if kind not in MASK_KINDS[:3] or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"{flag} entry {part!r}: expected KIND:WEIGHT with KIND one of square, boxes, strokes "
                             "and WEIGHT a finite number >= 0")
        weights[kind] = weight
    return weights


def parse_mix(text: str) -> dict:
    """'square:1,boxes:1,strokes:2' -> normalised weights; raises ValueError naming the problem."""
    weights = parse_kind_weights(text, "mask_mix")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"mask_mix {text!r}: weights must be finite, >= 0 and not all zero")
    return {k: v / total for k, v in weights.items()}


def draw_mask(cfg, kind: str, rng: np.random.Generator, area: "tuple | None" = None, squares: int = 1) -> np.ndarray:
    """One H, W bool mask of the given kind whose hole fraction lies within `area` (default: the
    config's min/max_hole_fraction), redrawn until it does; a square mask is the union of `squares`."""
    return draw_hole(cfg, kind, rng, area, squares)[0]


def draw_hole(cfg, kind: str, rng: np.random.Generator, area: "tuple | None" = None, squares: int = 1) -> tuple:
    """(draw_mask's mask, the kind drawn: for mixed, which of square, boxes and strokes it picked)."""
    lo, hi = area if area is not None else (cfg.min_hole_fraction, cfg.max_hole_fraction)
    size = cfg.image_size
    for _ in range(MAX_TRIES):
        k = kind
        if k == "mixed":
            mix = parse_mix(cfg.mask_mix)
            k = list(mix)[int(rng.choice(len(mix), p=list(mix.values())))]
        if k == "square":
            mask = square_masks(squares, size, cfg.hole_size, cfg.hole_margin, rng, cfg.hole_jitter).amax(0)[0].numpy() > 0
        else:
            mask = _free_form(k, size, rng, cfg.max_boxes if k == "boxes" else cfg.max_strokes, lo)
        if lo <= mask.mean() <= hi:
            return mask, k
    raise ValueError(f"could not draw a {kind} hole covering {lo:.0%}-{hi:.0%} of a {size} px image in "
                     f"{MAX_TRIES} tries: widen --min-hole-fraction/--max-hole-fraction or change the hole size")


def _stack(masks: list) -> torch.Tensor:
    return torch.from_numpy(np.stack(masks).astype(np.float32)).unsqueeze(1)  # n, 1, H, W


def training_masks(cfg, n: int, rng: np.random.Generator) -> torch.Tensor:
    """Holes for one training batch, of the kind the config asks for."""
    return training_holes(cfg, n, rng)[0]


def training_holes(cfg, n: int, rng: np.random.Generator) -> tuple:
    """(training_masks' n, 1, H, W holes, the kind of each: a list of n of square, boxes, strokes)."""
    if cfg.mask == "square" and cfg.min_hole_fraction == 0 and cfg.max_hole_fraction >= 1:
        k = cfg.holes
        squares = square_masks(n * k, cfg.image_size, cfg.hole_size, cfg.hole_margin, rng, cfg.hole_jitter)  # vectorised
        return squares.view(n, k, 1, cfg.image_size, cfg.image_size).amax(1), ["square"] * n  # union of k squares
    masks, kinds = zip(*(draw_hole(cfg, cfg.mask, rng, squares=cfg.holes) for _ in range(n)))
    return _stack(list(masks)), list(kinds)


def fixed_masks(cfg, n: int, split: str, kind: "str | None" = None, area: "tuple | None" = None,
                indices=None) -> torch.Tensor:
    """The evaluation holes of a split: hole i depends only on (eval_seed, split, kind, area, i).

    The default (kind None) is the training kind with the config's area bounds; the square kind
    keeps the seed's protocol (one hole_size square per image) so numbers stay comparable.
    `indices` draws only the holes of those images (default: all n).
    """
    kind = kind or cfg.mask
    indices = range(n) if indices is None else [int(i) for i in indices]
    if len(indices) == 0:
        return torch.zeros(0, 1, cfg.image_size, cfg.image_size)
    if kind == "square" and area is None:
        return torch.cat([square_masks(1, cfg.image_size, cfg.hole_size, cfg.hole_margin,
                                       rng_for(cfg.eval_seed, SPLIT_STREAM[split], i)) for i in indices])
    area_key = (0, 1000) if area is None else (round(area[0] * 1000), round(area[1] * 1000))
    return _stack([draw_mask(cfg, kind, rng_for(cfg.eval_seed, SPLIT_STREAM[split], 1 + KIND_STREAM[kind], *area_key, i),
                             area) for i in indices])


def bucket_label(area: tuple) -> str:
    return f"{round(area[0] * 100)}-{round(area[1] * 100)}%"


def evaluation_sets(cfg, n: int, split: str, kinds, cycle: bool = False) -> dict:
    """{(kind, bucket label): masks}: the square protocol as one set, free-form kinds per area bucket.

    With cycle=True, {(kind, bucket label): (image indices, masks)} where each image lies in one bucket
    per kind (image i in bucket i mod 5): a fifth of the work on large test sets, and every hole is the
    one the full protocol gives that image in that bucket.
    """
    sets = {}
    for kind in kinds:
        if kind == "square":
            masks = fixed_masks(cfg, n, split, "square")
            sets[(kind, "square")] = (torch.arange(n), masks) if cycle else masks
            continue
        for b, (lo, hi) in enumerate(BUCKETS):
            idx = torch.arange(b, n, len(BUCKETS)) if cycle else torch.arange(n)
            masks = fixed_masks(cfg, n, split, kind, (max(lo, 0.01), hi), idx)
            sets[(kind, bucket_label((lo, hi)))] = (idx, masks) if cycle else masks
    return sets


def save_mask_pngs(masks: torch.Tensor, folder: str, names: list):
    """One 1-bit PNG per mask (white = hole), named after its image, so any tool can reuse the set."""
    os.makedirs(folder, exist_ok=True)
    for m, name in zip(masks, names):
        Image.fromarray((m[0].numpy() > 0.5)).save(os.path.join(folder, os.path.splitext(name)[0] + ".png"))


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow holes by `radius` px in every direction (square structuring element); the context ring
    of any hole shape is dilate(mask, ring) - mask."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)
