"""Export the generator to ONNX (dynamic batch, height and width; weights embedded in the one file).

    python export.py                                  # newest run's best.pt (or the shipped weights) -> same name .onnx
    python export.py --checkpoint out/RUN/best.pt -o model.onnx

Inputs: image (B, 3, H, W) in [-1, 1] with H, W multiples of 8 (every architecture's size_multiple), and
mask (B, 1, H, W), 1 = hole.
Output: the inpainted image (B, 3, H, W) in [-1, 1]: models.inpaint() exported whole, so hole pixels come from
the generator and every known pixel is the input's.
Run it with onnxruntime, e.g. python inpaint.py PHOTO --box x,y,w,h -o OUT.png --engine onnx.
"""
import argparse
import os
import sys
import warnings

import torch

from checkpoints import default_checkpoint, load_generator
from config import UserError, WriteError, atomic_write, make_folder
from models import Inpaint

MAX_SIDE = 8192  # the exported graph accepts up to this many px per side


def export_onnx(generator: torch.nn.Module, path: str, size: int = 200) -> str:
    """Write inpaint() with `generator` (any architecture; fp32, eval) to `path` as one self-contained ONNX
    file whose batch, height and width are dynamic (sides multiples of the architecture's size_multiple)."""
    k = type(generator).size_multiple
    g = Inpaint(generator.float().eval().to("cpu"))
    x = torch.rand(2, 3, size, size) * 2 - 1
    m = torch.zeros(2, 1, size, size)
    m[..., size // 4: size // 2, size // 4: size // 2] = 1
    batch = torch.export.Dim("batch", min=1, max=4096)
    hk = torch.export.Dim("h_over_k", min=2, max=MAX_SIDE // k)  # height = k * h_over_k
    wk = torch.export.Dim("w_over_k", min=2, max=MAX_SIDE // k)
    shapes = {"image": {0: batch, 2: k * hk, 3: k * wk}, "mask": {0: batch, 2: k * hk, 3: k * wk}}
    make_folder(os.path.dirname(os.path.abspath(path)), path)

    def write(tmp: str):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter is chatty about internals we do not use
            torch.onnx.export(g, (x, m), tmp, input_names=["image", "mask"], output_names=["output"],
                              dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)
    try:
        return atomic_write(path, write)
    except OSError as e:
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--checkpoint", help="generator checkpoint (default: shipped weights, else newest run's best.pt)")
    p.add_argument("-o", "--output", help="ONNX file (default: the checkpoint's name with .onnx)")
    args = p.parse_args(argv)
    try:
        ckpt_path = args.checkpoint or default_checkpoint()
        g, cfg, _ = load_generator(ckpt_path)
        out = args.output or os.path.splitext(ckpt_path)[0] + ".onnx"
        export_onnx(g, out, cfg.image_size)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({os.path.getsize(out) / 2 ** 20:.1f} MB) from {ckpt_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
