"""Evaluate a training run (and the classical baselines) on its test split with fixed holes.

    python results.py                      # newest run under out/
    python results.py out/RUN              # that run's best.pt
    python results.py --baselines-only --data-dir ../shared/data_celeb

Writes into the run folder: results.md, results.json, per_image.csv, comparison.png,
inpainting_results.png and fixed_inpainting_results.png.
"""
import argparse
import csv
import json
import os
import sys

import torch

from baselines import BASELINES
from checkpoints import CheckpointError, generator_from_checkpoint, load_checkpoint
from config import DATA_ENV, Config, ConfigError, choose_runtime
from dataset import DataError, open_splits, split_files, to_model_range, to_unit_range
from evaluation import evaluate_baseline, evaluate_generator, generator_inpaint
from masks import fixed_masks
from metrics import mean_ci95
from plots import masked_view, save_grid

OURS = "ours"
# (column key, header, higher is better)
COLUMNS = [("l1", "hole L1 ↓", False), ("psnr", "hole PSNR dB ↑", True), ("ssim", "hole SSIM ↑", True),
           ("edge", "hole edge ↓", False), ("image_psnr", "image PSNR dB ↑", True),
           ("image_ssim", "image SSIM ↑", True)]
FIXED_POSITIONS = {"centre": (0.5, 0.5), "left eye": (0.45, 0.36), "right eye": (0.45, 0.64), "mouth": (0.72, 0.5)}


def newest_run(out_dir: str) -> "str | None":
    """The most recently modified run folder under out_dir that holds a checkpoint."""
    if not os.path.isdir(out_dir):
        return None
    runs = [os.path.join(out_dir, d) for d in os.listdir(out_dir)
            if os.path.isfile(os.path.join(out_dir, d, "last.pt"))]
    return max(runs, key=lambda p: os.path.getmtime(os.path.join(p, "last.pt")), default=None)


def summarize(per_method: dict) -> dict:
    """{method: {metric: (mean, ci95), 'ms_per_image': float}}."""
    return {name: {**{k: mean_ci95(r[k]) for k, _, _ in COLUMNS}, "ms_per_image": 1000 * r["seconds_per_image"]}
            for name, r in per_method.items()}


def markdown_table(summary: dict) -> str:
    """Rows = methods, best mean per column in bold."""
    best = {}
    for k, _, higher in COLUMNS:
        values = [s[k][0] for s in summary.values()]
        best[k] = max(values) if higher else min(values)
    header = "| method | " + " | ".join(h for _, h, _ in COLUMNS) + " | ms / image |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for name, s in summary.items():
        cells = []
        for k, _, _ in COLUMNS:
            mean, ci = s[k]
            digits = 2 if "psnr" in k else 4
            text = f"{mean:.{digits}f} ± {ci:.{digits}f}"
            cells.append(f"**{text}**" if mean == best[k] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['ms_per_image']:.1f} |")
    return "\n".join(lines)


def bucket_names(masks: torch.Tensor) -> list:
    """Hole-area bucket of each mask: '0-10%', '10-20%', ..."""
    frac = masks.mean(dim=(1, 2, 3))
    lo = (frac * 10).floor().clamp(max=9).long() * 10
    return [f"{int(b)}-{int(b) + 10}%" for b in lo]


def bucket_tables(per_method: dict, buckets: list) -> str:
    """One table per hole-area bucket when the holes fall in more than one bucket."""
    names = sorted(set(buckets), key=lambda b: int(b.split("-")[0]))
    if len(names) < 2:
        return ""
    parts = []
    for b in names:
        idx = torch.tensor([i for i, x in enumerate(buckets) if x == b])
        sub = {m: {**{k: r[k][idx] for k, _, _ in COLUMNS}, "seconds_per_image": r["seconds_per_image"]}
               for m, r in per_method.items()}
        parts.append(f"\n### holes covering {b} of the image ({len(idx)} images)\n\n{markdown_table(summarize(sub))}\n")
    return "\n## By hole area\n" + "".join(parts)


def write_per_image_csv(per_method: dict, names: list, buckets: list, path: str):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "method", "hole_bucket"] + [k for k, _, _ in COLUMNS] + ["ms_per_image_mean"])
        for method, r in per_method.items():
            for i, name in enumerate(names):
                w.writerow([name, method, buckets[i]] + [f"{float(r[k][i]):.6f}" for k, _, _ in COLUMNS]
                           + [f"{1000 * r['seconds_per_image']:.3f}"])


def hole_crops(images: torch.Tensor, masks: torch.Tensor, pad: int = 8, zoom: int = 0) -> torch.Tensor:
    """The bounding box of each hole plus `pad` px, scaled up to the image size (nearest)."""
    size = images.shape[-1]
    crops = []
    for img, m in zip(images, masks):
        ys, xs = torch.nonzero(m[0] > 0.5, as_tuple=True)
        top, bottom = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, size)
        left, right = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, size)
        crop = img[:, top:bottom, left:right].unsqueeze(0)
        crops.append(torch.nn.functional.interpolate(crop, size=(zoom or size,) * 2, mode="nearest")[0])
    return torch.stack(crops)


def comparison_figure(originals, masks, composites: dict, path: str, rows: int = 4):
    """Columns original | masked | each method; each image followed by a zoomed row of its hole."""
    n = min(rows, len(originals))
    cols = {"original": originals[:n], "masked": masked_view(originals[:n], masks[:n]),
            **{k: v[:n] for k, v in composites.items()}}
    interleaved = {k: torch.stack([t for i in range(n) for t in (v[i], hole_crops(v[i:i + 1], masks[i:i + 1])[0])])
                   for k, v in cols.items()}
    save_grid(interleaved, path, row_titles=[t for i in range(n) for t in (f"test {i}", "hole zoom")])


def mask_at(size: int, hole: int, centre: tuple) -> torch.Tensor:
    """1, 1, S, S square hole centred at fractional (row, col), clipped inside the image."""
    m = torch.zeros(1, 1, size, size)
    top = min(max(int(centre[0] * size) - hole // 2, 0), size - hole)
    left = min(max(int(centre[1] * size) - hole // 2, 0), size - hole)
    m[..., top:top + hole, left:left + hole] = 1
    return m


def render_generator_grids(g, cfg, rt, images_u8, masks, out_dir: str, n: int = 6, seed: int = 0):
    """inpainting_results.png (random test images with their fixed holes) and
    fixed_inpainting_results.png (the same hole positions on every image)."""
    pick = torch.randperm(len(images_u8), generator=torch.Generator().manual_seed(seed))[:n]
    x = to_model_range(images_u8[pick], rt.device, rt.memory_format())
    m = masks[pick].to(rt.device)
    raw, comp = generator_inpaint(g, x, m, rt)
    orig = to_unit_range(x).cpu()
    save_grid({"original": orig, "masked": masked_view(orig, m.cpu()), "generated": to_unit_range(raw).cpu(),
               "inpainted": to_unit_range(comp).cpu()}, os.path.join(out_dir, "inpainting_results.png"))
    columns = {"original": orig}
    for name, centre in FIXED_POSITIONS.items():
        fm = mask_at(cfg.image_size, cfg.hole_size, centre).expand(len(pick), -1, -1, -1).to(rt.device)
        _, comp = generator_inpaint(g, x, fm, rt)
        columns[f"{name}: masked"] = masked_view(orig, fm.cpu())
        columns[f"{name}: inpainted"] = to_unit_range(comp).cpu()
    save_grid(columns, os.path.join(out_dir, "fixed_inpainting_results.png"), cell=1.3)


def run_results(run_dir: "str | None", checkpoint: str = "best", data_dir: str = "", baselines_only: bool = False,
                out_dir: "str | None" = None, device: str = "auto", precision: str = "auto",
                max_images: int = 0, skip_baselines: bool = False) -> dict:
    """Evaluate and write every output; returns the summary table as a dict."""
    g = None
    if baselines_only:
        cfg = Config(data_dir=data_dir or os.environ.get(DATA_ENV, ""))
        split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
        out_dir = out_dir or os.path.join("out", "baselines")
    else:
        ckpt_path = checkpoint if os.path.isfile(checkpoint) else os.path.join(run_dir, f"{checkpoint}.pt")
        ckpt = load_checkpoint(ckpt_path)
        g, cfg = generator_from_checkpoint(ckpt)
        with open(os.path.join(run_dir, "split.json")) as fh:
            split = json.load(fh)
        if data_dir:
            cfg.data_dir = data_dir
        out_dir = out_dir or run_dir
        print(f"evaluating {ckpt_path} (epoch {ckpt['epoch']}) on its test split")
    os.makedirs(out_dir, exist_ok=True)
    split = {**split, "test": split["test"][:max_images] if max_images else split["test"]}
    source = open_splits(cfg, split, ("test",))["test"]
    names = source.names  # without any file that failed to decode
    images = source.take(len(names))  # N, 3, S, S uint8
    masks = fixed_masks(cfg, len(names), "test")
    rt = choose_runtime(device, precision, cfg.channels_last)
    per_method = {}
    if not skip_baselines:
        for name, fn in BASELINES.items():
            per_method[name] = evaluate_baseline(fn, images, masks)
    if g is not None:
        g = g.to(rt.device, memory_format=rt.memory_format())
        per_method[OURS] = evaluate_generator(g, images, masks, rt, keep_outputs=True)
    summary = summarize(per_method)
    buckets = bucket_names(masks)
    table = markdown_table(summary)
    md = (f"# Test results\n\n{len(names)} test images from {cfg.data_dir}, {cfg.image_size} px, fixed holes "
          f"(eval seed {cfg.eval_seed}). Mean ± 95% CI over images. Hole SSIM is skimage's SSIM on the hole's "
          f"bounding box + 3 px.\n\n{table}\n{bucket_tables(per_method, buckets)}")
    print(table)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump({"images": len(names), "image_size": cfg.image_size, "eval_seed": cfg.eval_seed,
                   "methods": {m: {k: {"mean": v[0], "ci95": v[1]} if isinstance(v, tuple) else v
                                   for k, v in s.items()} for m, s in summary.items()}}, fh, indent=2)
    write_per_image_csv(per_method, names, buckets, os.path.join(out_dir, "per_image.csv"))
    originals = images.float() / 255
    comparison_figure(originals, masks, {m: r["composite"] for m, r in per_method.items()},
                      os.path.join(out_dir, "comparison.png"))
    if g is not None:
        render_generator_grids(g, cfg, rt, images, masks, out_dir)
    print(f"wrote results.md, results.json, per_image.csv, comparison.png"
          f"{', inpainting_results.png, fixed_inpainting_results.png' if g is not None else ''} to {out_dir}")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("run_dir", nargs="?", help="training run folder (default: newest under out/)")
    p.add_argument("--checkpoint", default="best", help="best, last, or a path to a .pt file")
    p.add_argument("--data-dir", default="", help="where the run's images are now, if they moved")
    p.add_argument("--baselines-only", action="store_true", help="evaluate the classical baselines alone (no checkpoint)")
    p.add_argument("--no-baselines", action="store_true", help="evaluate only the generator")
    p.add_argument("--out", default=None, help="folder for the outputs (default: the run folder)")
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N test images (0 = all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    try:
        run_dir = args.run_dir
        if not args.baselines_only and run_dir is None:
            run_dir = newest_run("out")
            if run_dir is None:
                raise ConfigError("no run folder given and none with a checkpoint under out/: train one with "
                                  "python main.py, or pass --baselines-only --data-dir DIR")
        if run_dir and not os.path.isdir(run_dir):
            raise ConfigError(f"run folder {run_dir!r} does not exist")
        run_results(run_dir, args.checkpoint, args.data_dir, args.baselines_only, args.out, args.device,
                    args.precision, args.max_images, args.no_baselines)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
