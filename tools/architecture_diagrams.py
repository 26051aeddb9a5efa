"""Draw every registered generator architecture at the config's defaults (200 px) from the model itself.

    python tools/architecture_diagrams.py            # -> report_images/architecture_<arch>.png
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from checkpoints import build_generator, model_args  # noqa: E402
from config import Config  # noqa: E402
from models import ARCHITECTURES, describe  # noqa: E402
from plots import save_architecture_diagram  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default=os.path.join(ROOT, "report_images"))
    p.add_argument("--image-size", type=int, default=200)
    args = p.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    for arch in ARCHITECTURES:
        cfg = Config(arch=arch, image_size=args.image_size)
        g = build_generator(cfg)
        path = os.path.join(args.out_dir, f"architecture_{arch}.png")
        save_architecture_diagram(g, cfg.image_size, path, f"Generator {describe(model_args(cfg))}, {cfg.image_size} px")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
