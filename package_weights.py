"""Package a trained run's generator as the shipped reference weights in weights/.

    python package_weights.py out/RUN --data-dir ../shared/data_celeb

Writes weights/generator.pt (the generator's fp16 weights and its config; loadable with
torch.load(..., weights_only=True)), weights/config.json, weights/metrics.csv (the run's training
history), weights/results.json, and weights/README.md with the file's SHA-256 and its test tables.
The packaged file is evaluated by results.py's own code on the test split before anything in
weights/ is replaced, and it replaces shipped weights only when its hole PSNR (square protocol) is
higher, unless --force.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile


from checkpoints import (SHIPPED_WEIGHTS, atomic_save, load_checkpoint, shipped_state,
                         run_checkpoint)
from config import ConfigError, UserError
from models import describe
from results import run_results

WEIGHTS_DIR = os.path.dirname(SHIPPED_WEIGHTS)
KINDS = ["square", "strokes"]


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def square_psnr(results: dict) -> float:
    """Our mean hole PSNR on the square protocol, from a results.json: what decides which weights ship."""
    return results["sets"]["square"]["all"]["ours"]["psnr"]["mean"]


def table_rows(methods: dict) -> str:
    lines = ["| method | hole PSNR dB | hole SSIM | hole L1 |", "|---|---|---|---|"]
    for name, m in methods.items():
        lines.append(f"| {name} | {m['psnr']['mean']:.2f} | {m['ssim']['mean']:.3f} | {m['l1']['mean']:.4f} |")
    return "\n".join(lines)


def readme(cfg: dict, payload: dict, results: dict, digest: str, size: int, run_dir: str, seconds: float) -> str:
    last = payload["history"][-1]
    strokes = results["sets"].get("strokes", {}).get("all")
    lines = [
        "# Shipped generator weights",
        "",
        "`generator.pt` is what `inpaint.py`, `app.py` and `results.py` use when no checkpoint is given.",
        "",
        f"- **SHA-256**: `{digest}`",
        f"- **Size**: {size / 1e6:.2f} MB (fp16 weights + the config; `torch.load(path, weights_only=True)`)",
        f"- **Data**: the 819-image training split of the 1,024 aligned CelebA images (sorted list: 80/10/10, "
        f"the last {results['images']} images are the test set), centre-cropped and resized to {cfg['image_size']} px",
        "- **Recipe**: `python main.py --data-dir ../shared/data_celeb` (the default preset; full config in "
        "`config.json`): generator " + describe(payload["model_args"]) + ", " + ", ".join(
            f"{k} {cfg[k]}" for k in ("crop", "mask", "holes", "w_adv", "w_l1", "w_l2", "w_edge", "w_ssim", "lr_g",
                                      "lr_schedule", "ema", "batch_size", "epochs") if k in cfg),
        f"- **Budget**: {payload['epoch']} epochs, {seconds / 60:.0f} minutes of training steps (plus per-epoch validation) on a 2-core CPU "
        f"(bf16 autocast); last validation: hole PSNR {last['val_psnr']:.2f} dB, SSIM {last['val_ssim']:.3f}",
        f"- **Source run**: `{run_dir}` (training history in `metrics.csv`)",
        "",
        f"## Test split, one {cfg['hole_size']}x{cfg['hole_size']} square hole per image (fixed positions)",
        "",
        table_rows(results["sets"]["square"]["all"]),
    ]
    if strokes:
        lines += ["", "## Test split, free-form strokes (every image once per hole-area bucket, pooled)", "",
                  table_rows(strokes)]
    lines += ["", "Reproduce: `python results.py weights --data-dir ../shared/data_celeb --masks square,strokes`", ""]
    return "\n".join(lines)


def package(run_dir: str, checkpoint: str, data_dir: str, force: bool) -> int:
    payload = shipped_state(load_checkpoint(run_checkpoint(run_dir, checkpoint)))
    with tempfile.TemporaryDirectory(dir=os.path.dirname(WEIGHTS_DIR)) as staging:
        candidate = os.path.join(staging, "generator.pt")
        atomic_save(payload, candidate)
        run_results(None, candidate, data_dir, out_dir=os.path.join(staging, "eval"), kinds=KINDS)
        with open(os.path.join(staging, "eval", "results.json")) as fh:
            results = json.load(fh)
        new_psnr = square_psnr(results)
        old_results = os.path.join(WEIGHTS_DIR, "results.json")
        if os.path.isfile(SHIPPED_WEIGHTS) and os.path.isfile(old_results) and not force:
            with open(old_results) as fh:
                old_psnr = square_psnr(json.load(fh))
            if new_psnr <= old_psnr:
                print(f"kept the shipped weights: they score {old_psnr:.2f} dB hole PSNR, this run {new_psnr:.2f} dB "
                      "(--force replaces them anyway)")
                return 1
        seconds = sum(row["seconds"] for row in payload["history"])
        digest, size = sha256(candidate), os.path.getsize(candidate)
        # Every file is written into the staging folder first and moved in at the end, the weights
        # last, so a failure leaves the shipped files as they were (a README never names other weights).
        with open(os.path.join(staging, "config.json"), "w") as fh:
            json.dump(payload["config"], fh, indent=2)
        with open(os.path.join(staging, "README.md"), "w") as fh:
            fh.write(readme(payload["config"], payload, results, digest, size, run_dir, seconds))
        shutil.copyfile(os.path.join(staging, "eval", "results.json"), os.path.join(staging, "results.json"))
        shutil.copyfile(os.path.join(run_dir, "metrics.csv"), os.path.join(staging, "metrics.csv"))
        os.makedirs(WEIGHTS_DIR, exist_ok=True)
        for name in ("config.json", "metrics.csv", "results.json", "README.md", "generator.pt"):
            os.replace(os.path.join(staging, name), os.path.join(WEIGHTS_DIR, name))
    print(f"shipped {SHIPPED_WEIGHTS} ({size / 1e6:.2f} MB, sha256 {digest[:16]}...): hole PSNR {new_psnr:.2f} dB")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("run_dir", help="training run folder")
    p.add_argument("--checkpoint", default="best", help="best, last, or a path to a .pt file")
    p.add_argument("--data-dir", default="", help="the images the run was trained on (for the test split)")
    p.add_argument("--force", action="store_true", help="replace shipped weights even if they score better")
    args = p.parse_args(argv)
    try:
        if not os.path.isdir(args.run_dir):
            raise ConfigError(f"run folder {args.run_dir!r} does not exist")
        return package(args.run_dir, args.checkpoint, args.data_dir, args.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
