"""Package a trained run's generator as the shipped reference weights in weights/.

    python package_weights.py out/RUN --data-dir ../shared/data_celeb

Writes weights/generator.pt (the generator's fp16 weights and its config; loadable with
torch.load(..., weights_only=True)), weights/config.json, weights/metrics.csv (the run's training
history), weights/results.json, and weights/README.md with the file's SHA-256 and its test tables.
The packaged file is evaluated by results.py's own code (and cache) on the test split before anything
in weights/ is replaced, and it replaces shipped weights only when its hole PSNR (mean over squares,
boxes and strokes) is higher on the same test faces, unless --force.
"""
import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile


from checkpoints import SHIPPED_WEIGHTS, atomic_save, run_checkpoint, shipped_state
from config import ConfigError, UserError, recipe_command
from models import describe
from results import DEFAULT_CACHE, identity_images, run_results

WEIGHTS_DIR = os.path.dirname(SHIPPED_WEIGHTS)
KINDS = ["square", "boxes", "strokes"]
STAGING_PREFIX = ".weights-staging-"  # the evaluation and new files, until they replace weights/ (.gitignore)
CHECK_IMAGES = 16  # test faces whose square-hole PSNR is recorded for tests/test_shipped_weights.py to reproduce


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mean_psnr(results: dict, kinds: list) -> float:
    """Our hole PSNR averaged over these kinds (every bucket pooled), from a results.json."""
    return sum(results["sets"][k]["all"]["ours"]["psnr"]["mean"] for k in kinds) / len(kinds)


def keep_shipped(new: dict, old: dict) -> "str | None":
    """Why the shipped weights stay (None: replace them). Only results on the same test faces are compared, on
    the hole kinds both measured; anything else is no comparison, and only --force decides."""
    if old.get("check", {}).get("images") != new["check"]["images"]:
        return "their results.json was measured on other test faces, so the two cannot be compared"
    kinds = [k for k in new["kinds"] if k in old["kinds"]]
    old_psnr, new_psnr = mean_psnr(old, kinds), mean_psnr(new, kinds)
    if new_psnr <= old_psnr:
        return f"they score {old_psnr:.2f} dB hole PSNR ({', '.join(kinds)}), this run {new_psnr:.2f} dB"
    return None


def table_rows(methods: dict) -> str:
    lines = ["| method | hole PSNR dB | hole SSIM | hole L1 |", "|---|---|---|---|"]
    for name, m in methods.items():
        lines.append(f"| {name} | {m['psnr']['mean']:.2f} | {m['ssim']['mean']:.3f} | {m['l1']['mean']:.4f} |")
    return "\n".join(lines)


def check_record(eval_dir: str, n: int = CHECK_IMAGES) -> dict:
    """Our square-hole PSNR on the first n test faces (names kept), read from the evaluation's per-image rows."""
    with open(os.path.join(eval_dir, "per_image.csv"), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["method"] == "ours" and r["mask_kind"] == "square"][:n]
    return {"kind": "square", "images": [r["image"] for r in rows],
            "psnr": sum(float(r["psnr"]) for r in rows) / len(rows)}


def trained_on(payload: dict, cfg: dict) -> str:
    """The machines (CPU model and bf16 units, or GPU) and precisions the run trained on, in order."""
    machines = [m.replace("; ", " in ") for m in payload.get("machines", [])]
    return " then ".join(machines) or f"a CPU ({cfg.get('precision', 'auto')}; machine not recorded by this run)"


def readme(cfg: dict, payload: dict, results: dict, digest: str, size: int, run_dir: str, seconds: float) -> str:
    last = payload["history"][-1]
    kinds = [k for k in KINDS if k != "square" and k in results["sets"]]
    lines = [
        "# Shipped generator weights",
        "",
        "`generator.pt` is what `inpaint.py`, `app.py` and `results.py` use when no checkpoint is given.",
        "",
        f"- **SHA-256**: `{digest}`",
        f"- **Size**: {size / 1e6:.2f} MB (fp16 weights + the config; `torch.load(path, weights_only=True)`)",
        f"- **Data**: the training split of `{cfg['data_dir']}` (its test split: {results['images']} faces), "
        f"resized to {cfg['image_size']} px",
        f"- **Recipe**: `{recipe_command(cfg)}` (full config in `config.json`): generator "
        + describe(payload["model_args"]) + ", " + ", ".join(
            f"{k} {cfg[k]}" for k in ("crop", "mask", "mask_mix", "w_adv", "w_fm", "adv_start", "w_l1", "w_l2", "w_edge", "w_ssim", "lr_g",
                                      "lr_schedule", "ema", "batch_size", "epochs") if k in cfg),
        f"- **Budget**: {payload['epoch']} epochs, {seconds / 60:.0f} minutes of training (steps, per-epoch validation and "
        f"checkpoints, every sitting of the run) on {trained_on(payload, cfg)}; last validation: hole PSNR "
        f"{last['val_psnr']:.2f} dB, SSIM {last['val_ssim']:.3f}",
        f"- **Source run**: `{run_dir}` (training history in `metrics.csv`)",
        "",
        f"## Test split, one {cfg['hole_size']}x{cfg['hole_size']} square hole per image (fixed positions)",
        "",
        table_rows(results["sets"]["square"]["all"]),
    ]
    for kind in kinds:
        lines += ["", f"## Test split, {kind} (hole-area buckets pooled)", "", table_rows(results["sets"][kind]["all"])]
    lines += ["", f"Reproduce (every bucket, LPIPS, KID, identity): `python results.py weights --data-dir "
              f"{cfg['data_dir']} --masks {','.join(['square'] + kinds)}`", ""]
    return "\n".join(lines)


def package(run_dir: str, checkpoint: str, data_dir: str, force: bool, precision: str = "auto",
            cache_dir: str = DEFAULT_CACHE) -> int:
    """Evaluate the run's generator as it would ship (fp16) with results.py's code and cache (so that
    `results.py weights` afterwards reuses every result), then move it and its papers into weights/."""
    payload, ckpt = shipped_state(run_checkpoint(run_dir, checkpoint))
    # staged beside weights/ (one filesystem, so every move is an atomic rename), under a name git ignores
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=os.path.dirname(WEIGHTS_DIR)) as staging:
        candidate = os.path.join(staging, "generator.pt")
        atomic_save(payload, candidate)
        eval_dir = os.path.join(staging, "eval")
        run_results(None, candidate, data_dir, out_dir=eval_dir, kinds=KINDS, precision=precision,
                    jobs=os.cpu_count() or 1, cache_dir=cache_dir, identity_images=identity_images(None))
        with open(os.path.join(eval_dir, "results.json")) as fh:
            results = {**json.load(fh), "check": check_record(eval_dir)}
        old_results = os.path.join(WEIGHTS_DIR, "results.json")
        if os.path.isfile(SHIPPED_WEIGHTS) and os.path.isfile(old_results) and not force:
            with open(old_results) as fh:
                why = keep_shipped(results, json.load(fh))
            if why:
                print(f"kept the shipped weights: {why} (--force replaces them anyway)")
                return 1
        # the run's own clock, summed over every sitting; a history row's seconds cover only its last sitting
        seconds = ckpt.get("train_seconds") or sum(row["seconds"] for row in payload["history"])
        digest, size = sha256(candidate), os.path.getsize(candidate)
        # Every file is written into the staging folder first and moved in at the end, the weights
        # last, so a failure leaves the shipped files as they were (a README never names other weights).
        with open(os.path.join(staging, "config.json"), "w") as fh:
            json.dump(payload["config"], fh, indent=2)
        with open(os.path.join(staging, "README.md"), "w") as fh:
            fh.write(readme(payload["config"], payload, results, digest, size, run_dir, seconds))
        with open(os.path.join(staging, "results.json"), "w") as fh:
            json.dump(results, fh, indent=1)
        shutil.copyfile(os.path.join(run_dir, "metrics.csv"), os.path.join(staging, "metrics.csv"))
        os.makedirs(WEIGHTS_DIR, exist_ok=True)
        for name in ("config.json", "metrics.csv", "results.json", "README.md", "generator.pt"):
            os.replace(os.path.join(staging, name), os.path.join(WEIGHTS_DIR, name))
    print(f"shipped {SHIPPED_WEIGHTS} ({size / 1e6:.2f} MB, sha256 {digest[:16]}...): hole PSNR "
          f"{mean_psnr(results, results['kinds']):.2f} dB ({', '.join(results['kinds'])})")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("run_dir", help="training run folder")
    p.add_argument("--checkpoint", default="best", help="best, last, or a path to a .pt file")
    p.add_argument("--data-dir", default="", help="the images the run was trained on (for the test split)")
    p.add_argument("--force", action="store_true", help="replace shipped weights even if they score better")
    p.add_argument("--precision", default="auto", help="the evaluation's precision (auto: fp32 unless the CPU has "
                   "fast bf16); results.py weights with the same precision then finds every result in the cache")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE, help="results.py's cache of per-method results ('' = none)")
    args = p.parse_args(argv)
    try:
        if not os.path.isdir(args.run_dir):
            raise ConfigError(f"run folder {args.run_dir!r} does not exist")
        return package(args.run_dir, args.checkpoint, args.data_dir, args.force, args.precision, args.cache_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the staging folder is gone and weights/ untouched; finished results stay cached
        print("interrupted: weights/ is unchanged; the evaluation's results cached so far are kept and the same "
              "command continues from them", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
