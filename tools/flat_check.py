"""Does a fill copy flat colours and smooth ramps exactly? Thin strokes over flat content, filled and measured.

    python tools/flat_check.py ~/runs/race4/prefill/last.pt --data-dir ../shared/celeba [--faces 200]
    python tools/flat_check.py weights/generator.pt            # synthetic cases only

Near-vertical strokes 6 and 12 px wide over (a) synthetic 200-px images: flat black, grey, white and a colour,
a horizontal and a diagonal linear ramp (full-height strokes), and (b) with --data-dir, the flat spots of
CelebA's validation faces (a 48-row stroke wherever it and 4 px around it vary by at most FLAT_RANGE grey
levels in every channel; faces without one are skipped). Prints, per case, the fill's mean absolute error over
the stroke's pixels in grey levels (0-255) and its mean signed error (the bias: + lighter than the truth),
for the model and for biharmonic. A fill that hides a stroke over flat content is within 1 grey level.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from baselines import biharmonic  # noqa: E402
from checkpoints import load_generator  # noqa: E402
from config import UserError, choose_runtime  # noqa: E402
from dataset import ImageFiles, image_root, split_files  # noqa: E402
from evaluation import generator_inpaint  # noqa: E402
from models import to_model_range, to_unit_range  # noqa: E402

SIZE = 200
WIDTHS = (6, 12)
SLOPE = 0.1  # columns the stroke drifts per row: near-vertical, so its border crosses pixel columns
FLAT_RANGE = 6  # grey levels: a spot is flat when every channel varies at most this much around the stroke
SEGMENT = 48  # rows of a stroke over a face's flat spot
MARGIN = 4  # px around the stroke that must be flat too


def stroke_mask(width: int, x0: int, top: int = 0, rows: int = SIZE, size: int = SIZE) -> torch.Tensor:
    """1, S, S: a near-vertical stroke `width` px wide, starting at column x0 on row `top`, `rows` long."""
    m = torch.zeros(1, size, size)
    for y in range(top, min(top + rows, size)):
        x = x0 + int(SLOPE * (y - top))
        m[0, y, max(x, 0):max(x + width, 0)] = 1
    return m


def synthetic_cases(size: int = SIZE) -> dict:
    """{name: uint8 3, S, S}: flat colours and linear ramps."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    flat = lambda rgb: torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, size, size).clone()
    ramp = lambda v: (v / v.max() * 255).round().to(torch.uint8).expand(3, size, size).clone()
    return {"flat black": flat((0, 0, 0)), "flat grey": flat((128, 128, 128)), "flat white": flat((255, 255, 255)),
            "flat colour": flat((200, 120, 80)), "ramp horizontal": ramp(xx), "ramp diagonal": ramp(xx + yy)}


def flat_spot(image: torch.Tensor, width: int) -> "torch.Tensor | None":
    """1, S, S: the first stroke of SEGMENT rows (scanning rows, then columns) over which image (uint8 3, S, S),
    and MARGIN px around it, varies by at most FLAT_RANGE in every channel; None when there is none."""
    size = image.shape[-1]
    span = width + int(SLOPE * SEGMENT) + 2 * MARGIN  # columns of the stroke's box with its margin
    img = image.int()
    for top in range(MARGIN, size - SEGMENT - MARGIN, SEGMENT // 2):
        band = img[:, top - MARGIN:top + SEGMENT + MARGIN]  # 3, rows, S
        for left in range(0, size - span, 4):
            box = band[..., left:left + span]
            if int((box.amax((1, 2)) - box.amin((1, 2))).max()) <= FLAT_RANGE:
                return stroke_mask(width, left + MARGIN, top, SEGMENT, size)
    return None


def errors(filled: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> tuple:
    """(mean |error|, mean signed error) over the hole pixels, in grey levels; filled/truth in [0, 1]."""
    diff = (filled.float() - truth.float()) * 255
    hole = mask.bool().expand_as(diff)
    return float(diff[hole].abs().mean()), float(diff[hole].mean())


def fill_both(g, rt, images: torch.Tensor, masks: torch.Tensor) -> dict:
    """{method: N, 3, S, S composites in [0, 1]} for the model and biharmonic."""
    _, comp = generator_inpaint(g, to_model_range(images, rt.device, rt.memory_format()),
                                masks.unsqueeze(1).to(rt.device).contiguous(memory_format=rt.memory_format()), rt)
    truth = to_unit_range(images)
    bih = [torch.from_numpy(biharmonic(t.permute(1, 2, 0).numpy(), m.numpy() > 0.5)).permute(2, 0, 1)
           for t, m in zip(truth, masks[:, 0] if masks.dim() == 4 else masks)]
    m = masks.unsqueeze(1) if masks.dim() == 3 else masks
    return {"ours": to_unit_range(comp).cpu(), "biharmonic": torch.stack(bih) * m + truth * (1 - m)}


def case_rows(g, rt, cases: dict) -> list:
    """[(case, width, {method: (|error|, bias)})] for every (name, width) -> (images, masks) in cases."""
    rows = []
    for (name, width), (images, masks) in cases.items():
        filled = fill_both(g, rt, images, masks)
        truth = to_unit_range(images)
        rows.append((name, width, {k: errors(v, truth, masks.unsqueeze(1)) for k, v in filled.items()}))
    return rows


def synthetic_set() -> dict:
    return {(name, w): (img[None], stroke_mask(w, 90)[None].expand(1, 1, SIZE, SIZE)[:, 0])
            for name, img in synthetic_cases().items() for w in WIDTHS}


def face_set(data_dir: str, faces: int) -> dict:
    """{("CelebA val flat spots (n faces)", width): (images, masks)} over the first `faces` validation faces."""
    split = split_files(data_dir, image_size=SIZE)
    files = ImageFiles(image_root(data_dir), split["val"][:faces], SIZE)
    images = [files.load(i) for i in range(len(files))]
    out = {}
    for w in WIDTHS:
        found = [(img, m) for img in images for m in [flat_spot(img, w)] if m is not None]
        if found:
            out[(f"CelebA val flat spots ({len(found)} of {len(images)} faces)", w)] = (
                torch.stack([f[0] for f in found]), torch.stack([f[1] for f in found])[:, 0])
    return out


def table(rows: list) -> str:
    lines = ["| case | stroke px | ours: mean abs error / bias (grey levels) | biharmonic |", "|---|---|---|---|"]
    for name, width, r in rows:
        lines.append(f"| {name} | {width} | " + " | ".join(f"{r[k][0]:.2f} / {r[k][1]:+.2f}" for k in ("ours", "biharmonic"))
                     + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("checkpoint", help="a run's last.pt / best.pt, or weights/generator.pt")
    p.add_argument("--data-dir", default="", help="a CelebA root: also measure flat spots of its validation faces")
    p.add_argument("--faces", type=int, default=200, help="validation faces searched for flat spots")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    try:
        g, cfg, _ = load_generator(args.checkpoint)
        rt = choose_runtime(args.device, args.precision, cfg.channels_last)
        g = g.to(rt.device, memory_format=rt.memory_format())
        cases = {**synthetic_set(), **(face_set(args.data_dir, args.faces) if args.data_dir else {})}
        print(f"{args.checkpoint} ({rt.precision} on {rt.device})\n\n{table(case_rows(g, rt, cases))}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
