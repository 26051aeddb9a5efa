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
import concurrent.futures
import contextlib
import csv
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
import time

import torch
from tqdm import tqdm

from baselines import BASELINES
from checkpoints import (SHIPPED_WEIGHTS, atomic_save, load_generator, model_args,
                         newest_run, run_checkpoint, saved_model_args)
from config import DATA_ENV, Config, ConfigError, UserError, choose_runtime, make_folder, write_text
from dataset import open_splits, resolve_data_dir, split_files
from evaluation import Judge, evaluate_baseline, evaluate_generator, face_key, generator_inpaint
import identity
from identity import SAME_PERSON
from masks import evaluation_sets, fixed_masks, save_mask_pngs
from metrics import METRICS, hole_bounds, mean_ci95
from models import describe, to_model_range, to_unit_range
from plots import masked_view, save_architecture_diagram, save_grid, save_mask_examples, save_training_plot

OURS = "ours"
KID_FEATURES = "kid_features.pt"  # the VGG features our KID column was computed from: originals and our composites
GRID_ROWS = 4  # test images in each comparison figure
# per-image metrics (per_image.csv, means with 95% CIs); names, directions and formats: metrics.METRICS
COLUMNS = ["l1", "psnr", "ssim", "edge", "seam", "detail", "grid", "lpips", "image_psnr", "image_ssim", "identity"]
# the printed tables: per-image metrics plus the set-level distribution distances
TABLE = ["l1", "psnr", "ssim", "seam", "detail", "grid", "lpips", "kid", "fd", "image_psnr", "identity", "same_person"]
FIXED_POSITIONS = {"centre": (0.5, 0.5), "left eye": (0.45, 0.36), "right eye": (0.45, 0.64), "mouth": (0.72, 0.5)}
IDENTITY_IMAGES = 500  # --identity-images default: dlib's descriptor costs ~0.1 s a face and method
CACHE_VERSION = 3  # bump when a baseline, the metrics or the cached fields change: old entries are then ignored
DEFAULT_CACHE = os.path.join("out", "cache")
FULL_BUCKETS_UP_TO = 500  # --buckets auto: every image in every bucket up to this many images, else cycle


def summarize(per_method: dict, real_features: "torch.Tensor | None" = None) -> dict:
    """{method: {metric: (mean, ci95 or KID's standard error), 'fd': value, 'ms_per_image': float}}."""
    from perceptual import frechet_distance, kid
    out = {}
    for name, r in per_method.items():
        s = {k: METRICS[k].average(r[k]) for k in COLUMNS if k in r and k != "identity"}
        if "identity" in r and not torch.isnan(r["identity"]).all():  # measured on a subset of the faces
            d = r["identity"][~torch.isnan(r["identity"])]
            s["identity"] = METRICS["identity"].average(d)
            s["same_person"] = METRICS["same_person"].average((d < SAME_PERSON).double())
        if real_features is not None and "features" in r:
            s["kid"] = kid(real_features, r["features"])
            s["fd"] = (frechet_distance(real_features, r["features"]), math.nan)
        s["ms_per_image"] = 1000 * r["seconds_per_image"]
        out[name] = s
    return out


def markdown_table(summary: dict) -> str:
    """Rows = methods, best mean per column in bold; columns absent from every method are left out."""
    cols = [k for k in TABLE if any(k in s for s in summary.values())]
    best = {k: METRICS[k].best([s[k][0] for s in summary.values() if k in s]) for k in cols}
    header = "| method | " + " | ".join(METRICS[k].header for k in cols) + " | ms / image |"
    lines = [header, "|" + "---|" * (len(cols) + 2)]
    for name, s in summary.items():
        cells = []
        for k in cols:
            text = METRICS[k].format(*s.get(k, (math.nan, math.nan)))
            cells.append(f"**{text}**" if s.get(k, (None,))[0] == best[k] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['ms_per_image']:.1f} |")
    return "\n".join(lines)


def bucket_overview(kind: str, by_bucket: dict) -> str:
    """One compact table per key metric: rows = area buckets, columns = methods, the best in bold."""
    out = []
    for key in ("psnr", "lpips", "seam", "detail", "grid"):
        methods, metric = list(next(iter(by_bucket.values()))), METRICS[key]
        if not all(key in by_bucket[b][m] for b in by_bucket for m in methods):
            continue
        lines = [f"\n### {kind}: {metric.header} per hole-area bucket\n", "| hole area | " + " | ".join(methods) + " |",
                 "|" + "---|" * (len(methods) + 1)]
        for bucket, summary in by_bucket.items():
            values = [summary[m][key][0] for m in methods]
            best = metric.best(values)
            lines.append(f"| {bucket} | " + " | ".join(f"**{metric.format(v)}**" if v == best else metric.format(v)
                                                       for v in values) + " |")
        out.append("\n".join(lines))
    return "\n".join(out)


def paired_lines(per_method: dict) -> list:
    """Ours minus the pixel bar (biharmonic) and the perceptual bar (PatchMatch) on the same image and hole."""
    lines = []
    for bar, keys in (("biharmonic", ("psnr", "lpips", "seam")), ("PatchMatch", ("lpips",))):
        if OURS not in per_method or bar not in per_method:
            continue
        parts = []
        for k in keys:
            if k in per_method[OURS] and k in per_method[bar]:
                mean, ci = mean_ci95(per_method[OURS][k] - per_method[bar][k])
                parts.append(f"{METRICS[k].label} {'+' if mean >= 0 else ''}{METRICS[k].format(mean, ci)}")
        if parts:
            lines.append(f"ours − {bar} (paired, 95% CI): " + ", ".join(parts))
    return lines


def write_per_image_csv(rows: list, path: str):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "method", "mask_kind", "hole_bucket", "hole_fraction"] + COLUMNS)
        w.writerows(rows)


def per_image_rows(per_method: dict, names: list, kind: str, bucket: str, masks: torch.Tensor) -> list:
    frac = masks.mean(dim=(1, 2, 3))
    return [[name, method, kind, bucket, f"{float(frac[i]):.4f}"] +
            [f"{float(r[k][i]):.6f}" if k in r else "" for k in COLUMNS]
            for method, r in per_method.items() for i, name in enumerate(names)]


def pooled(results: list) -> dict:
    """Concatenate per-image metrics (and features) of several mask sets (e.g. all buckets of a kind)."""
    keys = [k for k in results[0] if isinstance(results[0][k], torch.Tensor) and k not in ("composite", "raw")]
    out = {k: torch.cat([r[k] for r in results]) for k in keys}
    out["seconds_per_image"] = sum(r["seconds_per_image"] * len(r["psnr"]) for r in results) / len(out["psnr"])
    return out


def content_key(*parts) -> str:
    """A hex digest of names, pixels and masks: what a cached result depends on."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for p in parts:
        h.update(p.numpy().tobytes() if isinstance(p, torch.Tensor) else repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def cached(cache_dir: "str | None", key: str, compute) -> tuple:
    """(result, True if it came from the cache): compute() runs once per key; its result is saved under
    cache_dir (atomically) and reloaded next time."""
    if not cache_dir:
        return compute(), False
    path = os.path.join(cache_dir, f"{key}.pt")
    if os.path.isfile(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True), True
        except Exception as e:  # a damaged entry is recomputed, never trusted
            print(f"ignoring unreadable cache entry {path} ({type(e).__name__}); recomputing", file=sys.stderr)
    result = compute()
    os.makedirs(cache_dir, exist_ok=True)
    atomic_save(result, path)
    return result, False


class Evaluator:
    """Everything one evaluation shares across its mask sets: the images, the model, the judge (metrics,
    LPIPS, VGG features), the identity judge (None when off), the worker pool for the classical fills and the
    on-disk cache of their results."""

    def __init__(self, images, names, g, rt, judge, executor, cache_dir, skip_baselines, identity_judge=None):
        self.images, self.names, self.g, self.rt, self.judge = images, names, g, rt, judge
        self.executor, self.cache_dir, self.skip_baselines = executor, cache_dir, skip_baselines
        self.identity_judge = identity_judge
        self.identity_faces = (None if identity_judge is None else  # N: which images identity is measured on
                               torch.tensor([face_key(x) in identity_judge.faces for x in images], dtype=torch.bool))
        self.methods = ([] if skip_baselines else list(BASELINES)) + ([OURS] if g is not None else [])
        self.hits = self.misses = 0
        self.model_key = content_key(*(v.cpu() for v in g.state_dict().values())) if g is not None else ""
        self.real = None
        if judge.lpips is not None:  # the reference side of KID: the originals, computed once per image set
            key = content_key("real", names, images)
            self.real = cached(cache_dir, key, lambda: {"features": judge.real_features(images)})[0]["features"]

    def measure(self, name: str, images: torch.Tensor, masks: torch.Tensor, bar, judge=None) -> dict:
        """One method's per-image measurements, the first GRID_ROWS composites kept for the figures."""
        judge = judge or self.judge
        if name != OURS:
            return evaluate_baseline(BASELINES[name], images, masks, judge, self.executor, keep=GRID_ROWS,
                                     progress=bar)
        out = evaluate_generator(self.g, images, masks, self.rt, keep_outputs=GRID_ROWS, judge=judge, progress=bar)
        out.pop("raw", None)
        return out

    def identity(self, name: str, key: str, idx: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """N: the identity distance of each composite of images = self.images[idx] (NaN off the identity faces).
        Measured and cached on its own, on those faces only, so adding it recomputes no cached result and costs a
        fraction of one."""
        faces = self.identity_faces[idx]
        out = torch.full((len(images),), float("nan"), dtype=torch.float64)
        if faces.any():
            sub = lambda: {"identity": self.measure(name, images[faces], masks[faces], None, self.identity_judge)["identity"]}
            out[faces] = cached(self.cache_dir, content_key("identity", key, faces), sub)[0]["identity"]
        return out

    def evaluate(self, label: str, idx: torch.Tensor, masks: torch.Tensor) -> dict:
        """{method: per-image measurements} on images[idx] with these masks, baselines from the cache."""
        images, names = self.images[idx], [self.names[i] for i in idx.tolist()]
        per_method, start, hits = {}, time.perf_counter(), self.hits
        with tqdm(total=len(idx) * len(self.methods), desc=label, unit="img", leave=False,
                  disable=None) as bar:
            for name in self.methods:
                bar.set_postfix_str(name)
                key = content_key(name, self.judge.lpips is not None, names, images, masks.bool())
                if name == OURS:  # a model's outputs depend on its weights and on the device and precision too
                    key = content_key(key, self.model_key, str(self.rt.device), self.rt.precision)
                per_method[name], hit = cached(self.cache_dir, key, lambda: self.measure(name, images, masks, bar))
                if self.identity_judge is not None:
                    per_method[name] = {**per_method[name], "identity": self.identity(name, key, idx, images, masks)}
                self.hits, self.misses = self.hits + hit, self.misses + (not hit)
                bar.update(len(idx) * len(per_method) - bar.n)  # a cached method completes at once
        print(f"{label}: {len(self.methods)} methods on {len(idx)} images in {time.perf_counter() - start:.0f} s"
              f" ({self.hits - hits} from the cache)", flush=True)
        return per_method


def hole_crops(images: torch.Tensor, masks: torch.Tensor, pad: int = 8, zoom: int = 0) -> torch.Tensor:
    """The bounding box of each hole plus `pad` px, scaled up to the image size (nearest)."""
    size = images.shape[-1]
    crops = []
    for img, top, bottom, left, right in zip(images, *(v.tolist() for v in hole_bounds(masks > 0.5))):
        crop = img[:, max(top - pad, 0):bottom + pad + 1, max(left - pad, 0):right + pad + 1].unsqueeze(0)
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
    save_grid(columns, os.path.join(out_dir, "fixed_inpainting_results.png"))


def default_kinds(cfg: Config) -> list:
    """Evaluate on the run's own hole kind; square (the seed protocol) for square runs."""
    return ["square", "boxes", "strokes"] if cfg.mask == "mixed" else [cfg.mask]


def load_model(run_dir, checkpoint: str, data_dir: str, split_name: str) -> tuple:
    """(generator, its config, the split, default output folder, checkpoint path) of a run or weights file."""
    ckpt_path = run_checkpoint(run_dir, checkpoint)
    g, cfg, ckpt = load_generator(ckpt_path)
    split_path = os.path.join(run_dir or os.path.dirname(ckpt_path), "split.json")
    split = None
    if os.path.isfile(split_path):
        with open(split_path) as fh:
            split = json.load(fh)
    # a run's own split must be found in the folder; shipped weights split whatever folder is given
    cfg.data_dir, source = resolve_data_dir(data_dir, cfg.data_dir, tuple(split[split_name]) if split else ())
    if split is None:
        split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
    default_out = run_dir or os.path.join("out", "results-" + os.path.basename(os.path.dirname(ckpt_path)))
    print(f"model: {ckpt_path} ({describe(saved_model_args(ckpt))}, epoch {ckpt['epoch']}); images: the {split_name} split of {cfg.data_dir} "
          f"(from {source})", flush=True)
    return g, cfg, split, default_out, ckpt_path


def _die_with_parent(parent: int):
    """Worker initializer: on Linux, end the worker when results.py ends, even when it is killed."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)


@contextlib.contextmanager
def process_pool(jobs: int):
    """Worker processes for the classical fills (spawned: no inherited thread pools), or None for jobs <= 1.
    On Ctrl-C (or any error) the queued fills are dropped instead of awaited: executor.map queues a whole mask
    set at once, so waiting would run PatchMatch on every remaining image first."""
    if jobs <= 1:
        yield None
        return
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                  initializer=_die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def evaluate_kind(ev: Evaluator, cfg: Config, kind: str, split_name: str, cycle: bool, out_dir: str) -> tuple:
    """One hole kind: (summaries {bucket or 'all': summary}, markdown, per-image csv rows, grid, the VGG features
    of our composites with every bucket pooled (None without a generator or the perceptual metrics))."""
    n = len(ev.names)
    sets = {b: (v if cycle else (torch.arange(n), v))
            for (_, b), v in evaluation_sets(cfg, n, split_name, [kind], cycle).items()}
    results, rows = {}, []
    for bucket, (idx, masks) in sets.items():
        names = [ev.names[i] for i in idx.tolist()]
        save_mask_pngs(masks, os.path.join(out_dir, "eval_masks", kind if kind == bucket else
                                           os.path.join(kind, bucket.rstrip("%"))), names)
        per_method = ev.evaluate(f"{kind} {bucket}" if kind != bucket else kind, idx, masks)
        results[bucket] = (idx, masks, per_method)
        rows += per_image_rows(per_method, names, kind, bucket, masks)
    all_sets = {m: pooled([pm[m] for _, _, pm in results.values()]) for m in ev.methods}  # every bucket together
    summaries = {"all": summarize(all_sets, ev.real)}
    title = (f"## {kind} holes: one {cfg.hole_size}x{cfg.hole_size} square per image" if kind == "square" else
             f"## {kind} holes: " + ("each image in one hole-area bucket (image i in bucket i mod 5)" if cycle else
                                     "every image once per hole-area bucket") + f" ({len(results)} buckets pooled)")
    md = [f"{title}\n\n{markdown_table(summaries['all'])}\n", *[f"- {line}" for line in paired_lines(all_sets)], ""]
    if len(results) > 1:
        for bucket, (idx, _, per_method) in results.items():
            summaries[bucket] = summarize(per_method, ev.real)
            md.append(f"\n### {kind}, holes covering {bucket} of the image ({len(idx)} images)\n\n"
                      f"{markdown_table(summaries[bucket])}\n")
            md += [f"- {line}" for line in paired_lines(per_method)] + [""]
    if len(results) > 1:
        md.append(bucket_overview(kind, {b: s for b, s in summaries.items() if b != "all"}))
    text = "\n".join(md)
    print("\n" + text, flush=True)
    return summaries, text, rows, grid_of(results, ev.methods), all_sets.get(OURS, {}).get("features")


def grid_of(results: dict, methods: list, rows: int = GRID_ROWS) -> tuple:
    """(masks, {method: composites}, image indices) of the first images, cycling through the buckets so
    that small and large holes both show."""
    buckets = list(results)
    picks = []
    for i in range(rows):
        idx, masks, per_method = results[buckets[i % len(buckets)]]
        local = (idx == i).nonzero().flatten()
        if len(local) and int(local[0]) < GRID_ROWS:
            picks.append((i, masks, per_method, int(local[0])))
    grid_masks = torch.stack([m[j] for _, m, _, j in picks])
    grid = {name: torch.stack([pm[name]["composite"][j] for _, _, pm, j in picks]) for name in methods}
    return grid_masks, grid, [i for i, _, _, _ in picks]


def run_results(run_dir: "str | None", checkpoint: str = "best", data_dir: str = "", baselines_only: bool = False,
                out_dir: "str | None" = None, device: str = "auto", precision: str = "auto",
                max_images: int = 0, skip_baselines: bool = False, kinds: "list | None" = None,
                report_dir: "str | None" = None, split_name: str = "test", jobs: int = 1, buckets: str = "auto",
                perceptual: bool = True, cache_dir: "str | None" = None, identity_images: int = 0) -> dict:
    """Evaluate every method on every (kind, bucket) mask set of one split, write every output; returns
    {kind: {bucket or 'all': summary}}. split_name 'val' is for choosing between runs; 'test' for reporting.
    identity_images > 0 measures face identity on the first that many faces (every kind, bucket, method)."""
    if split_name not in ("test", "val"):
        raise ConfigError(f"--split must be test or val, not {split_name!r}")
    if report_dir and split_name != "test":
        raise ConfigError("--report draws the README's test-split figures: drop --split val")
    if buckets not in ("auto", "all", "cycle"):
        raise ConfigError(f"--buckets must be auto, all or cycle, not {buckets!r}")
    start = time.perf_counter()
    g = ckpt_path = None
    if baselines_only:
        cfg = Config(data_dir=resolve_data_dir(data_dir)[0])
        split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
        default_out = os.path.join("out", "baselines")
    else:
        g, cfg, split, default_out, ckpt_path = load_model(run_dir, checkpoint, data_dir, split_name)
    # validation results go in a subfolder so they never overwrite the test results
    out_dir = out_dir or (default_out if split_name == "test" else os.path.join(default_out, split_name))
    kinds = kinds or default_kinds(cfg)
    make_folder(out_dir, f"--out {out_dir}")
    split = {**split, split_name: split[split_name][:max_images] if max_images else split[split_name]}
    source = open_splits(cfg, split, (split_name,))[split_name]
    names = source.names  # without any file that failed to decode
    images = source.take(len(names))  # N, 3, S, S uint8
    rt = choose_runtime(device, precision, cfg.channels_last)
    if g is not None:
        g = g.to(rt.device, memory_format=rt.memory_format())
    cycle = buckets == "cycle" or (buckets == "auto" and len(names) > FULL_BUCKETS_UP_TO)
    summaries, md, csv_rows, grids = {}, [], [], {}
    with process_pool(jobs) as executor:
        identity_judge = None
        if identity_images > 0:
            identity_judge = Judge(perceptual=False, identity=True)
            identity_judge.add_identity_faces(images[:identity_images])
        ev = Evaluator(images, names, g, rt, Judge(perceptual, device=rt.device), executor, cache_dir, skip_baselines,
                       identity_judge)
        features = {}
        for kind in kinds:
            summaries[kind], text, rows, grids[kind], features[kind] = evaluate_kind(ev, cfg, kind, split_name, cycle,
                                                                                     out_dir)
            md.append(text)
            csv_rows += rows
    write_outputs(out_dir, cfg, rt, names, split_name, kinds, summaries, md, csv_rows, grids, images, cycle, perceptual)
    if ev.real is not None and all(f is not None for f in features.values()):
        # for a paired KID difference between two models on these photos and holes (tools/twin_check.py)
        atomic_save({"images": names, "real": ev.real, "ours": features}, os.path.join(out_dir, KID_FEATURES))
    if g is not None:
        render_generator_grids(g, cfg, rt, images, fixed_masks(cfg, len(names), split_name, kinds[0]), out_dir)
    print(f"wrote results.md, results.json, per_image.csv, comparison*.png, eval_masks/"
          f"{', inpainting_results.png, fixed_inpainting_results.png' if g is not None else ''} to {out_dir}")
    print(f"evaluated {len(names)} images in {time.perf_counter() - start:.0f} s; per-method results: "
          f"{ev.hits} from the cache, {ev.misses} computed" + (f" (cache: {cache_dir})" if cache_dir else ""))
    if report_dir:
        write_report(report_dir, out_dir, g, cfg, ckpt_path, kinds)
    return summaries


CLASSICAL = [m for m in BASELINES if m != "mean fill"]  # the fills a user would reach for


def headline_table(summaries: dict) -> str:
    """One row per hole kind (every bucket pooled): ours against biharmonic (the pixel bar) and PatchMatch
    (the perceptual bar), in hole PSNR, LPIPS and, when measured, the share of faces still recognised."""
    methods = [OURS, "biharmonic", "PatchMatch"]
    first = next(iter(summaries.values()))["all"]
    cols = [k for k in ("psnr", "lpips", "seam", "same_person") if all(k in first.get(m, {}) for m in methods)]
    lines = ["| holes | " + " | ".join(f"{METRICS[k].header}: {m}" for k in cols for m in methods) + " |",
             "|" + "---|" * (1 + len(cols) * len(methods))]
    for kind, by_bucket in summaries.items():
        s = by_bucket["all"]
        if not all(m in s for m in methods):
            continue
        cells = []
        for k in cols:
            values = [s[m][k][0] for m in methods]
            best = METRICS[k].best(values)
            cells += [f"**{METRICS[k].format(v)}**" if v == best else METRICS[k].format(v) for v in values]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_rows(summaries: dict) -> list:
    """(goal, measured, met) for the quality goals that one model's evaluation can check."""
    rows = []
    sq = summaries.get("square", {}).get("all", {})
    if OURS in sq and "biharmonic" in sq:
        gain = sq[OURS]["psnr"][0] - sq["biharmonic"]["psnr"][0]
        rows.append(("squares: hole PSNR ≥ biharmonic + 2.5 dB", f"{gain:+.2f} dB", gain >= 2.5))
        rows.append(("squares: hole SSIM ≥ 0.70", f"{sq[OURS]['ssim'][0]:.4f}", sq[OURS]["ssim"][0] >= 0.70))
    for kind in ("boxes", "strokes"):
        buckets = {b: s for b, s in summaries.get(kind, {}).items() if b != "all" and OURS in s and "biharmonic" in s}
        if not buckets:
            continue
        gaps = {b: s[OURS]["psnr"][0] - s["biharmonic"]["psnr"][0] for b, s in buckets.items()}
        worst = min(gaps, key=gaps.get)
        rows.append((f"{kind}: hole PSNR ≥ biharmonic in every bucket", f"worst {worst}: {gaps[worst]:+.2f} dB",
                     gaps[worst] >= 0))
        pooled = summaries[kind]["all"]
        gain = pooled[OURS]["psnr"][0] - pooled["biharmonic"]["psnr"][0]
        rows.append((f"{kind}: pooled hole PSNR ≥ biharmonic + 1 dB", f"{gain:+.2f} dB", gain >= 1.0))
    for kind, by_bucket in summaries.items():
        pooled = by_bucket["all"]
        if OURS in pooled and "seam" in pooled[OURS] and "biharmonic" in pooled:
            gap = pooled[OURS]["seam"][0] - pooled["biharmonic"]["seam"][0]
            rows.append((f"{kind}: seam ≤ biharmonic's, pooled", f"{METRICS['seam'].format(gap)} over it", gap <= 0))
        if kind != "square" and OURS in pooled and "detail" in pooled[OURS]:
            value = pooled[OURS]["detail"][0]
            rows.append((f"{kind}: detail from 0.8 to 1.2, pooled", METRICS["detail"].format(value), 0.8 <= value <= 1.2))
        sets = {b: s for b, s in by_bucket.items() if (b != "all" or len(by_bucket) == 1) and OURS in s
                and "lpips" in s[OURS] and all(m in s for m in CLASSICAL)}
        if not sets:
            continue
        gaps = {b: s[OURS]["lpips"][0] - min(s[m]["lpips"][0] for m in CLASSICAL) for b, s in sets.items()}
        worst = max(gaps, key=gaps.get)
        rows.append((f"{kind}: LPIPS < the best classical fill's in every bucket",
                     f"worst {worst}: {gaps[worst]:+.4f}", gaps[worst] < 0))
    return rows


def goals_table(rows: list, measured: str = "ours") -> str:
    """A markdown table of (goal, measured, met) rows, e.g. goal_rows'."""
    lines = [f"| goal | {measured} | met |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {'yes' if met else '**no**'} |" for goal, measured, met in rows]
    return "\n".join(lines) if rows else ""


def write_outputs(out_dir, cfg, rt, names, split_name, kinds, summaries, md, csv_rows, grids, images, cycle,
                  perceptual):
    """results.md, results.json, per_image.csv and one comparison figure per kind."""
    header = (f"# {split_name.capitalize()} results\n\n{len(names)} {split_name} images from {cfg.data_dir}, "
              f"{cfg.image_size} px, fixed holes (eval seed {cfg.eval_seed}; masks saved under eval_masks/). "
              "Mean ± 95% CI over images. Hole SSIM is scikit-image's SSIM on the hole's bounding box + 3 px. "
              + ("LPIPS (v0.1, AlexNet) compares the whole composite with the original; KID (± its standard error "
                 "over subsets) and FD-VGG compare VGG16 relu5_3 features of the composites with those of all "
                 f"{len(names)} original images; both are evaluation-only networks, never training losses, and "
                 "neither is Inception-FID. " if perceptual else "")
              + f"Times are per image on {rt.device}.\n\n")
    overview = ""
    if any(OURS in s["all"] for s in summaries.values()):
        overview = (f"## Headline: every bucket of each kind pooled\n\n{headline_table(summaries)}\n\n"
                    f"## Goals\n\n{goals_table(goal_rows(summaries))}\n\n")
        print("\n" + overview, flush=True)
    write_text(os.path.join(out_dir, "results.md"), header + overview + "\n".join(md))
    first = summaries[kinds[0]]["all"]
    write_text(os.path.join(out_dir, "results.json"), json.dumps(
        {"split": split_name, "images": len(names), "image_size": cfg.image_size, "eval_seed": cfg.eval_seed,
         "kinds": kinds, "buckets": "cycle" if cycle else "all", "methods": to_json(first),
         "sets": {k: {b: to_json(v) for b, v in s.items()} for k, s in summaries.items()}}, indent=2))
    write_per_image_csv(csv_rows, os.path.join(out_dir, "per_image.csv"))
    originals = to_unit_range(images)
    for n, (kind, (grid_masks, grid, idx)) in enumerate(grids.items()):
        fname = "comparison.png" if n == 0 else f"comparison_{kind}.png"
        comparison_figure(originals[idx], grid_masks, grid, os.path.join(out_dir, fname))


def read_history(path: str) -> list:
    with open(path, newline="") as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(fh)]


def write_report(report_dir: str, out_dir: str, g, cfg: Config, ckpt_path: "str | None", kinds: list):
    """The README's figures and tables, each regenerated from the evaluated model and its run."""
    make_folder(report_dir, f"--report {report_dir}")
    wrote = []
    copies = {"results.md": "results.md", "comparison.png": f"comparison_{kinds[0]}.png",
              **{f"comparison_{k}.png": f"comparison_{k}.png" for k in kinds[1:]}}
    if g is not None:
        copies.update({"inpainting_results.png": "inpainting_random.png",
                       "fixed_inpainting_results.png": "inpainting_fixed_positions.png"})
        save_architecture_diagram(g, cfg.image_size, os.path.join(report_dir, "architecture.png"),
                                  f"Generator {describe(model_args(cfg))}, {cfg.image_size} px")
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
        image = to_unit_range(open_splits(cfg, {**split, "test": split["test"][:1]}, ("test",))["test"].take(1)[0])
    make_folder(os.path.dirname(os.path.abspath(path)), path)
    save_mask_examples(by_kind, path, image)
    print(f"wrote {path}")


def to_json(summary: dict) -> dict:
    def value(k, v):
        if not isinstance(v, tuple):
            return v
        return v[0] if k == "fd" else {"mean": v[0], "se" if k == "kid" else "ci95": v[1]}
    return {m: {k: value(k, v) for k, v in s.items()} for m, s in summary.items()}


def choose_model(run_dir: "str | None", checkpoint: str, baselines_only: bool) -> tuple:
    """(run folder, checkpoint): the given run; a weights folder (weights/); else the newest run under out/
    (what you just trained), else the shipped weights."""
    if run_dir and os.path.isfile(os.path.join(run_dir, "generator.pt")) and checkpoint in ("best", "last"):
        return None, os.path.join(run_dir, "generator.pt")
    if baselines_only or run_dir is not None or os.path.isfile(checkpoint):
        return run_dir, checkpoint
    run_dir = newest_run("out")
    if run_dir is not None:
        return run_dir, checkpoint
    if os.path.isfile(SHIPPED_WEIGHTS):
        return None, SHIPPED_WEIGHTS
    raise ConfigError("no run folder given, no run with a checkpoint under out/ and no shipped weights: train one "
                      "with python main.py, or pass --baselines-only --data-dir DIR")


def identity_images(flag: "int | None") -> int:
    """--identity-images as given, else the default when dlib is installed, else 0; a flag asking for it without
    dlib is an error, not a silently missing column."""
    if flag is not None and flag < 0:
        raise ConfigError(f"--identity-images must be >= 0, not {flag}")
    if flag is None:
        return IDENTITY_IMAGES if identity.available() else 0
    if flag > 0 and not identity.available():
        raise ConfigError("--identity-images needs dlib and its models: pip install -r requirements-identity.txt "
                          "(or pass --identity-images 0)")
    return flag


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("run_dir", nargs="?", help="training run folder, or weights/ for the shipped model (default: "
                   "the newest run under out/, else the shipped weights)")
    p.add_argument("--checkpoint", default="best", help="best, last, or a path to a .pt file")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="also write the README's figures and tables (architecture, curves, grids, comparisons) into DIR")
    p.add_argument("--data-dir", default="", help=f"the images (default: ${DATA_ENV}, else the run's saved "
                   "data_dir: the first that holds the run's split)")
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
    p.add_argument("--buckets", default="auto", choices=("auto", "all", "cycle"),
                   help="free-form kinds: every image in every hole-area bucket (all), or image i in bucket i mod 5 "
                   f"(cycle, a fifth of the work); auto: all up to {FULL_BUCKETS_UP_TO} images, else cycle")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes for the classical fills (default: one per CPU core)")
    p.add_argument("--no-perceptual", action="store_true",
                   help="skip LPIPS, KID and FD-VGG (they need: pip install --no-deps -r requirements-metrics.txt)")
    p.add_argument("--identity-images", type=int, default=None, metavar="N",
                   help="measure face identity (dlib's descriptor distance; < 0.6 = the same person) on the first N "
                   f"faces; default {IDENTITY_IMAGES} when dlib is installed (pip install -r requirements-identity.txt), "
                   "0 = off")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE,
                   help="where the classical fills' results are kept, keyed by images, holes and method "
                   "('' = no cache)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    if args.mask_examples:
        write_mask_examples(args.mask_examples, args.data_dir)
        return 0
    try:
        run_dir, checkpoint = choose_model(args.run_dir, args.checkpoint, args.baselines_only)
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
                    args.split, args.jobs, args.buckets, not args.no_perceptual, args.cache_dir,
                    identity_images(args.identity_images))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the results cached so far are kept; the same command continues from them",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
