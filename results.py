"""Evaluate a training run (and the classical baselines) on its test split with fixed holes.

    python results.py --data-dir DIR       # the shipped weights (weights/generator.pt)
    python results.py out/RUN              # that run's best.pt
    python results.py --data-dir DIR --masks square,strokes --report report_images/   # the README figures
    python results.py --baselines-only --data-dir ../shared/data_celeb

    python results.py out/RUN --masks square,boxes,strokes     # free-form kinds per hole-area bucket
    python results.py out/RUN --split val --masks square,strokes  # choose between runs on validation

Writes into the run folder: results.md, results.json, per_image.csv, comparison.png (one
comparison_<kind>.png per further kind), eval_masks/ (every evaluation hole as a PNG),
inpainting_results.png and fixed_inpainting_results.png. With --report DIR, also the README's
figures and tables into DIR: architecture.png (drawn from the model), training_curves.png, the grids,
the comparison figures and results.md.
"""
import argparse
import csv
import json
import os
import shutil
import sys

import torch

from baselines import BASELINES
from checkpoints import (SHIPPED_WEIGHTS, CheckpointError, generator_from_checkpoint, load_checkpoint, newest_run,
                         run_checkpoint)
from config import DATA_ENV, Config, ConfigError, choose_runtime
from dataset import DataError, open_splits, split_files, to_model_range, to_unit_range
from evaluation import evaluate_baseline, evaluate_generator, generator_inpaint
from masks import evaluation_sets, fixed_masks, save_mask_pngs
from metrics import mean_ci95
from models import block_output_shapes, parameter_table
from plots import masked_view, save_architecture_diagram, save_grid, save_mask_examples, save_training_plot

OURS = "ours"
GRID_ROWS = 4  # test images in each comparison figure
# (column key, header, higher is better)
COLUMNS = [("l1", "hole L1 ↓", False), ("psnr", "hole PSNR dB ↑", True), ("ssim", "hole SSIM ↑", True),
           ("edge", "hole edge ↓", False), ("image_psnr", "image PSNR dB ↑", True),
           ("image_ssim", "image SSIM ↑", True)]
FIXED_POSITIONS = {"centre": (0.5, 0.5), "left eye": (0.45, 0.36), "right eye": (0.45, 0.64), "mouth": (0.72, 0.5)}


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


def write_per_image_csv(rows: list, path: str):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "method", "mask_kind", "hole_bucket", "hole_fraction"] + [k for k, _, _ in COLUMNS])
        w.writerows(rows)


def per_image_rows(per_method: dict, names: list, kind: str, bucket: str, masks: torch.Tensor) -> list:
    frac = masks.mean(dim=(1, 2, 3))
    return [[name, method, kind, bucket, f"{float(frac[i]):.4f}"] + [f"{float(r[k][i]):.6f}" for k, _, _ in COLUMNS]
            for method, r in per_method.items() for i, name in enumerate(names)]


def pooled(results: list) -> dict:
    """Concatenate per-image metrics of several mask sets (e.g. all buckets of a kind)."""
    out = {k: torch.cat([r[k] for r in results]) for k, _, _ in COLUMNS}
    out["seconds_per_image"] = sum(r["seconds_per_image"] for r in results) / len(results)
    return out


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


def comparison_figure(originals, masks, composites: dict, path: str, rows: int = GRID_ROWS):
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


def default_kinds(cfg: Config) -> list:
    """Evaluate on the run's own hole kind; square (the seed protocol) for square runs."""
    return ["square", "boxes", "strokes"] if cfg.mask == "mixed" else [cfg.mask]


def run_results(run_dir: "str | None", checkpoint: str = "best", data_dir: str = "", baselines_only: bool = False,
                out_dir: "str | None" = None, device: str = "auto", precision: str = "auto",
                max_images: int = 0, skip_baselines: bool = False, kinds: "list | None" = None,
                report_dir: "str | None" = None, split_name: str = "test") -> dict:
    """Evaluate every method on every (kind, bucket) mask set of one split, write every output; returns
    {kind: {bucket or 'all': summary}}. split_name 'val' is for choosing between runs; 'test' for reporting."""
    if split_name not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, not {split_name!r}")
    if report_dir and split_name != "test":
        raise ConfigError("--report draws the README's test-split figures: drop --split val")
    g = None
    if baselines_only:
        cfg = Config(data_dir=data_dir or os.environ.get(DATA_ENV, ""))
        split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
        out_dir = out_dir or os.path.join("out", "baselines" if split_name == "test" else f"baselines-{split_name}")
    else:
        ckpt_path = run_checkpoint(run_dir, checkpoint)
        ckpt = load_checkpoint(ckpt_path)
        g, cfg = generator_from_checkpoint(ckpt)
        if data_dir:
            cfg.data_dir = data_dir
        split_path = os.path.join(run_dir or os.path.dirname(ckpt_path), "split.json")
        if os.path.isfile(split_path):
            with open(split_path) as fh:
                split = json.load(fh)
        else:  # shipped weights: the same sorted-list split of the images at --data-dir
            if not cfg.data_dir:
                raise ConfigError(f"{ckpt_path} has no split.json beside it: pass --data-dir (or set {DATA_ENV}) "
                                  "to the images to split and evaluate on")
            split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
        default_out = run_dir or os.path.join("out", "results-" + os.path.basename(os.path.dirname(ckpt_path)))
        # validation results go in a subfolder so they never overwrite the run's test results
        out_dir = out_dir or (default_out if split_name == "test" else os.path.join(default_out, split_name))
        print(f"evaluating {ckpt_path} (epoch {ckpt['epoch']}) on its {split_name} split")
    kinds = kinds or default_kinds(cfg)
    os.makedirs(out_dir, exist_ok=True)
    split = {**split, split_name: split[split_name][:max_images] if max_images else split[split_name]}
    source = open_splits(cfg, split, (split_name,))[split_name]
    names = source.names  # without any file that failed to decode
    images = source.take(len(names))  # N, 3, S, S uint8
    rt = choose_runtime(device, precision, cfg.channels_last)
    if g is not None:
        g = g.to(rt.device, memory_format=rt.memory_format())

    summaries, csv_rows, md, composites_by_kind = {}, [], [], {}
    for kind in kinds:
        sets = {b: m for (k, b), m in evaluation_sets(cfg, len(names), split_name, [kind]).items()}
        results = {}
        for bucket, masks in sets.items():
            save_mask_pngs(masks, os.path.join(out_dir, "eval_masks", kind if kind == bucket else os.path.join(kind, bucket.rstrip("%"))), names)
            per_method = {} if skip_baselines else {n: evaluate_baseline(f, images, masks) for n, f in BASELINES.items()}
            if g is not None:
                per_method[OURS] = evaluate_generator(g, images, masks, rt, keep_outputs=True)
            for r in per_method.values():  # the comparison grid shows the first GRID_ROWS images only
                r["composite"] = r["composite"][:GRID_ROWS]
                r.pop("raw", None)
            results[bucket] = (masks, per_method)
            csv_rows += per_image_rows(per_method, names, kind, bucket, masks)
        methods = list(next(iter(results.values()))[1])
        all_sets = {m: pooled([pm[m] for _, pm in results.values()]) for m in methods}
        summaries[kind] = {"all": summarize(all_sets)}
        title = (f"## {kind} holes: one {cfg.hole_size}x{cfg.hole_size} square per image" if kind == "square"
                 else f"## {kind} holes: every image once per hole-area bucket ({len(results)} buckets pooled)")
        md.append(f"{title}\n\n{markdown_table(summaries[kind]['all'])}\n")
        print(f"\n{title}\n{markdown_table(summaries[kind]['all'])}")
        if len(results) > 1:
            for bucket, (masks, per_method) in results.items():
                summaries[kind][bucket] = summarize(per_method)
                md.append(f"\n### {kind}, holes covering {bucket} of the image\n\n{markdown_table(summaries[kind][bucket])}\n")
        # the comparison grid cycles through the buckets so small and large holes both show
        rows = min(GRID_ROWS, len(names))
        buckets = list(results)
        pick = [(i, buckets[i % len(buckets)]) for i in range(rows)]
        grid_masks = torch.stack([results[b][0][i] for i, b in pick])
        grid = {m: torch.stack([results[b][1][m]["composite"][i] for i, b in pick]) for m in methods}
        composites_by_kind[kind] = (grid_masks, grid, [i for i, _ in pick])
    header = (f"# {split_name.capitalize()} results\n\n{len(names)} {split_name} images from {cfg.data_dir}, {cfg.image_size} px, fixed holes "
              f"(eval seed {cfg.eval_seed}; masks saved under eval_masks/). Mean ± 95% CI over images. Hole SSIM is "
              f"scikit-image's SSIM on the hole's bounding box + 3 px; times are per image on {rt.device}.\n\n")
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(header + "\n".join(md))
    first = summaries[kinds[0]]["all"]
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump({"split": split_name, "images": len(names), "image_size": cfg.image_size, "eval_seed": cfg.eval_seed, "kinds": kinds,
                   "methods": to_json(first), "sets": {k: {b: to_json(v) for b, v in s.items()} for k, s in summaries.items()}},
                  fh, indent=2)
    write_per_image_csv(csv_rows, os.path.join(out_dir, "per_image.csv"))
    originals = images.float() / 255
    for n, (kind, (grid_masks, grid, idx)) in enumerate(composites_by_kind.items()):
        fname = "comparison.png" if n == 0 else f"comparison_{kind}.png"
        comparison_figure(originals[idx], grid_masks, grid, os.path.join(out_dir, fname))
    if g is not None:
        render_generator_grids(g, cfg, rt, images, fixed_masks(cfg, len(names), split_name, kinds[0]), out_dir)
    print(f"wrote results.md, results.json, per_image.csv, comparison*.png, eval_masks/"
          f"{', inpainting_results.png, fixed_inpainting_results.png' if g is not None else ''} to {out_dir}")
    if report_dir:
        write_report(report_dir, out_dir, g, cfg, ckpt_path if g is not None else None, kinds)
    return summaries


def read_history(path: str) -> list:
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


def write_report(report_dir: str, out_dir: str, g, cfg: Config, ckpt_path: "str | None", kinds: list):
    """The README's figures and tables, each regenerated from the evaluated model and its run."""
    os.makedirs(report_dir, exist_ok=True)
    wrote = []
    copies = {"results.md": "results.md", "comparison.png": f"comparison_{kinds[0]}.png",
              **{f"comparison_{k}.png": f"comparison_{k}.png" for k in kinds[1:]}}
    if g is not None:
        copies.update({"inpainting_results.png": "inpainting_random.png",
                       "fixed_inpainting_results.png": "inpainting_fixed_positions.png"})
        save_architecture_diagram(parameter_table(g), block_output_shapes(g, cfg.image_size),
                                  os.path.join(report_dir, "architecture.png"),
                                  f"Generator (U-Net, nf {cfg.nf}, {cfg.image_size} px)")
        wrote.append("architecture.png")
        history_path = os.path.join(os.path.dirname(ckpt_path), "metrics.csv")
        if os.path.isfile(history_path):
            save_training_plot(read_history(history_path), os.path.join(report_dir, "training_curves.png"))
            wrote.append("training_curves.png")
        else:
            print(f"no metrics.csv beside {ckpt_path}: training curves not drawn", file=sys.stderr)
    for src, dst in copies.items():
        shutil.copyfile(os.path.join(out_dir, src), os.path.join(report_dir, dst))
        wrote.append(dst)
    print(f"report: wrote {', '.join(wrote)} to {report_dir}")


def write_mask_examples(path: str, data_dir: str = ""):
    """The figure of example masks: each kind across the hole-area buckets, over a face when data is given."""
    cfg = Config(data_dir=data_dir)
    sets = evaluation_sets(cfg, 1, "test", ["square", "boxes", "strokes"])
    by_kind = {}
    for (kind, _), m in sets.items():
        by_kind.setdefault(kind, []).append(m[0])
    mixed = Config(mask="mixed").validate()
    by_kind["mixed"] = list(fixed_masks(mixed, 5, "test"))
    image = None
    if data_dir:
        split = split_files(data_dir, cfg.val_fraction, cfg.test_fraction, 0, cfg.image_size)
        image = open_splits(cfg, {**split, "test": split["test"][:1]}, ("test",))["test"].take(1)[0].float() / 255
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_mask_examples(by_kind, path, image)
    print(f"wrote {path}")


def to_json(summary: dict) -> dict:
    return {m: {k: {"mean": v[0], "ci95": v[1]} if isinstance(v, tuple) else v for k, v in s.items()}
            for m, s in summary.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("run_dir", nargs="?", help="training run folder (default: the shipped weights, else the newest "
                   "run under out/)")
    p.add_argument("--checkpoint", default="best", help="best, last, or a path to a .pt file")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="also write the README's figures and tables (architecture, curves, grids, comparisons) into DIR")
    p.add_argument("--data-dir", default="", help="where the run's images are now, if they moved")
    p.add_argument("--baselines-only", action="store_true", help="evaluate the classical baselines alone (no checkpoint)")
    p.add_argument("--no-baselines", action="store_true", help="evaluate only the generator")
    p.add_argument("--out", default=None, help="folder for the outputs (default: the run folder)")
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images of the split (0 = all)")
    p.add_argument("--masks", default="", help="comma-separated hole kinds to evaluate: square (the seed protocol), "
                   "boxes, strokes (each per hole-area bucket); default: the run's training kind")
    p.add_argument("--mask-examples", metavar="PNG", default=None,
                   help="only draw example masks of every kind (one per hole-area bucket) into PNG and exit")
    p.add_argument("--split", default="test", choices=("test", "val"),
                   help="test (report) or val (choose between runs; written to RUN/val/)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    if args.mask_examples:
        write_mask_examples(args.mask_examples, args.data_dir)
        return 0
    try:
        run_dir, checkpoint = args.run_dir, args.checkpoint
        if not args.baselines_only and run_dir is None and not os.path.isfile(checkpoint):
            if os.path.isfile(SHIPPED_WEIGHTS):
                checkpoint = SHIPPED_WEIGHTS
            else:
                run_dir = newest_run("out")
                if run_dir is None:
                    raise ConfigError("no run folder given, no shipped weights and no run with a checkpoint under "
                                      "out/: train one with python main.py, or pass --baselines-only --data-dir DIR")
        if run_dir and not os.path.isdir(run_dir):
            raise ConfigError(f"run folder {run_dir!r} does not exist")
        if args.baselines_only and args.no_baselines:
            raise ConfigError("--baselines-only with --no-baselines leaves nothing to evaluate; drop one of them")
        kinds = [k.strip() for k in args.masks.split(",") if k.strip()]
        bad = [k for k in kinds if k not in ("square", "boxes", "strokes")]
        if bad:
            raise ConfigError(f"--masks: unknown kind(s) {', '.join(bad)}; choose from square, boxes, strokes")
        run_results(run_dir, checkpoint, args.data_dir, args.baselines_only, args.out, args.device,
                    args.precision, args.max_images, args.no_baselines, kinds or None, args.report,
                    args.split)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
