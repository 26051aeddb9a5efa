"""How the model fares on faces framed differently from its training crops (the test split only).

    python tools/crop_check.py --data-dir ../shared/data_celeb [--checkpoint weights/generator.pt]

Training sees centre-cropped squares resized to 200 px. Here each test photo is framed four other ways,
one 32x32 hole is placed at a seeded random position on the face region, and the model (through
inpaint.py's Inpainter: windowing, resizing and pasting as for a user's photo) is compared with
biharmonic inpainting on the same holes. Prints a markdown table of hole PSNR / SSIM / L1.
"""
import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from baselines import biharmonic  # noqa: E402
from config import DATA_ENV, Config  # noqa: E402
from dataset import image_root, split_files, to_rgb  # noqa: E402
from inpaint import Inpainter  # noqa: E402
from masks import rng_for  # noqa: E402
from metrics import quality_metrics  # noqa: E402
from models import composite, to_unit_range  # noqa: E402

HOLE = 32


def framings(photo: Image.Image) -> dict:
    """name -> re-framed photo (PIL): every framing but the last is resized to 200 px."""
    w, h = photo.size
    s = min(w, h)
    return {
        "top square (face low in frame)": photo.crop((0, 0, s, s)).resize((200, 200), Image.BICUBIC),
        "bottom square (face high)": photo.crop((0, h - s, s, h)).resize((200, 200), Image.BICUBIC),
        "zoomed in 1.4x": photo.crop(((w - int(s / 1.4)) // 2, (h - int(s / 1.4)) // 2,
                                      (w + int(s / 1.4)) // 2, (h + int(s / 1.4)) // 2)).resize((200, 200), Image.BICUBIC),
        "whole photo, native 178x218": photo,
    }


def hole_on_face(shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """A HOLE x HOLE square whose centre lies in the middle half of the frame (where the face is)."""
    h, w = shape
    cy = int(rng.integers(h // 4, 3 * h // 4))
    cx = int(rng.integers(w // 4, 3 * w // 4))
    top, left = min(max(cy - HOLE // 2, 0), h - HOLE), min(max(cx - HOLE // 2, 0), w - HOLE)
    mask = np.zeros(shape, bool)
    mask[top:top + HOLE, left:left + HOLE] = True
    return mask


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--data-dir", default=os.environ.get(DATA_ENV, ""))
    p.add_argument("--checkpoint", default=None, help="default: the shipped weights")
    p.add_argument("--max-images", type=int, default=0)
    args = p.parse_args(argv)
    cfg = Config(data_dir=args.data_dir)
    names = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, 0, 0)["test"]
    names = names[:args.max_images] if args.max_images else names
    model = Inpainter(args.checkpoint)
    print(f"model {model.checkpoint}; {len(names)} test photos from {cfg.data_dir}\n")
    rows = {}
    for i, name in enumerate(names):
        with Image.open(os.path.join(image_root(cfg.data_dir), name)) as im:
            photo = to_rgb(im)
        for framing, img in framings(photo).items():
            arr = np.array(img, dtype=np.uint8)  # writable: torch.from_numpy below
            mask = hole_on_face(arr.shape[:2], rng_for(cfg.eval_seed, 77, i))
            ours = to_unit_range(torch.from_numpy(model(arr, mask))).numpy()
            bih = biharmonic(to_unit_range(torch.from_numpy(arr)).numpy(), mask)
            rows.setdefault(framing, []).append((arr, mask, ours, bih))
    print("| framing | ours PSNR dB | biharmonic PSNR dB | ours SSIM | biharmonic SSIM | ours L1 | biharmonic L1 |")
    print("|---|---|---|---|---|---|---|")
    for framing, items in rows.items():
        target = torch.stack([to_unit_range(torch.from_numpy(a).permute(2, 0, 1)) for a, _, _, _ in items])
        masks = torch.stack([torch.from_numpy(m)[None].float() for _, m, _, _ in items])
        res = {}
        for k, j in (("ours", 2), ("biharmonic", 3)):
            out = torch.stack([torch.from_numpy(np.ascontiguousarray(t[j])).permute(2, 0, 1) for t in items])
            res[k] = quality_metrics(composite(out, target, masks), target, masks)
        cells = [f"{float(res[m][k].mean()):.{2 if k == 'psnr' else 3 if k == 'ssim' else 4}f}"
                 for k in ("psnr", "ssim", "l1") for m in ("ours", "biharmonic")]
        print(f"| {framing} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
