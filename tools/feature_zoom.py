"""What a GAN phase changes where it should show: a box over the mouth and a stroke across both eyes, zoomed.

    python tools/feature_zoom.py twin=~/runs/race7/twin/last.pt gan=~/runs/race7/d2a100h0c/last.pt \
        --data-dir ../shared/celeba -o report_images/race7_mouths.png [--faces 4] [--raw]

For the first --faces validation faces of CelebA (never the test split), each model fills the same two holes
(a 36 x 60 box over the mouth and a 6-px stroke across both eyes, placed for CelebA's aligned faces at 200 px);
the figure shows, per model a row, the mouth and the eyes cropped and enlarged 3x, the original last, the
model's name at the left. --raw uses the trained weights instead of their moving average (what a run's EMA lags).
"""
import argparse
import os
import sys

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from checkpoints import load_generator  # noqa: E402
from config import UserError, atomic_write, choose_runtime  # noqa: E402
from dataset import ImageFiles, image_root, split_files  # noqa: E402
from evaluation import generator_inpaint  # noqa: E402
from models import to_model_range, to_uint8  # noqa: E402

SIZE = 200
# CelebA's aligned faces centre-cropped to 200 px (dataset.load_image): eyes near row 103, the mouth near row 148
MOUTH = (slice(130, 166), slice(70, 130))  # rows, columns of the box over the mouth
EYES = (slice(100, 106), slice(45, 155))  # the stroke across both eyes
CROPS = ((slice(118, 178), slice(55, 145)), (slice(86, 120), slice(35, 165)))  # what is shown: mouth, eyes
ZOOM, LABEL = 3, 110


def holes(n: int) -> torch.Tensor:
    m = torch.zeros(n, 1, SIZE, SIZE)
    for rows, cols in (MOUTH, EYES):
        m[:, :, rows, cols] = 1
    return m


def strip(images: torch.Tensor) -> Image.Image:
    """The crops of every face side by side, enlarged: images N, 3, SIZE, SIZE uint8."""
    tiles = [images[i][:, r, c] for i in range(len(images)) for r, c in CROPS]  # 3, h, w each
    h = max(t.shape[1] for t in tiles)
    row = torch.cat([torch.nn.functional.pad(t, (0, 4, 0, h - t.shape[1]), value=255) for t in tiles], dim=2)
    im = Image.fromarray(row.permute(1, 2, 0).numpy())
    return im.resize((im.width * ZOOM, im.height * ZOOM), Image.NEAREST)


def figure(rows: list) -> Image.Image:
    """rows: [(label, strip image)] stacked, each labelled at its left."""
    w, h = LABEL + rows[0][1].width, sum(r.height + 6 for _, r in rows)
    out, y = Image.new("RGB", (w, h), "white"), 0
    for label, im in rows:
        out.paste(im, (LABEL, y))
        ImageDraw.Draw(out).text((6, y + im.height // 2 - 6), label, fill="black")
        y += im.height + 6
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("models", nargs="+", metavar="NAME=CHECKPOINT", help="a label and a run checkpoint or weights file")
    p.add_argument("--data-dir", required=True, help="CelebA root (its validation partition is shown)")
    p.add_argument("--faces", type=int, default=4, help="validation faces shown")
    p.add_argument("--raw", action="store_true", help="the trained weights, not their moving average")
    p.add_argument("-o", "--output", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    try:
        models = [m.partition("=")[::2] for m in args.models]
        if any(not name or not path for name, path in models):
            raise UserError("each model is NAME=CHECKPOINT, e.g. twin=~/runs/race7/twin/last.pt")
        files = ImageFiles(image_root(args.data_dir), split_files(args.data_dir, image_size=SIZE)["val"][:args.faces], SIZE)
        faces = torch.stack([files.load(i) for i in range(len(files))])  # N, 3, SIZE, SIZE uint8
        m, rt = holes(len(faces)), choose_runtime("cpu", "auto", False)
        rows = []
        for name, path in models:
            g, _, _ = load_generator(os.path.expanduser(path), average=not args.raw)
            with torch.no_grad():
                _, filled = generator_inpaint(g.eval(), to_model_range(faces), m, rt)
            rows.append((name, strip(to_uint8(filled))))
        holed = (faces.float() * (1 - m) + 255 * m).to(torch.uint8)
        rows = [("holes", strip(holed))] + rows + [("original", strip(faces))]
        atomic_write(args.output, figure(rows).save)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
