"""Side-by-side speed benchmark: naive (fp32, NCHW, per-item PIL decoding) vs the project's defaults.

    python benchmarks/speed.py --data-dir ../shared/data_celeb            # seed config, ~8 min on 2 cores
    python benchmarks/speed.py --nf 32 --image-size 128 --epoch-images 200
    python benchmarks/speed.py --scale --data-dir ../shared/celeba --steps 10   # start-up + step rate at 17k faces

Everything is measured in this one run on this machine: matmul peaks, FLOPs per image (torch's
flop counter), training-step and inference images/s for both variants, a real training epoch
(data + step + logging) against the pure step rate, peak memory, and a short fp32-vs-default
precision parity run. Prints a table and writes it to JSON (--json).
"""
import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from checkpoints import build_discriminator, build_generator  # noqa: E402
from config import DATA_ENV, SEED_RECIPE, Config, Runtime, choose_runtime  # noqa: E402
from dataset import (ImageFiles, ImageSource, epoch_order, image_root, open_splits, split_files,  # noqa: E402
                     to_model_range)
from main import train, train_step  # noqa: E402
from masks import rng_for, training_masks  # noqa: E402
from models import inpaint  # noqa: E402


def matmul_peak(dtype, n=4096, seconds=2.0) -> float:
    """GFLOP/s of a large square matmul: the machine's practical dense-math ceiling for dtype."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def reset_peak_rss():
    """Reset the kernel's peak-RSS counter (Linux) so each phase reports its own peak."""
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")


def peak_rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(rt) -> float:
    if rt.device.type == "cuda":
        return torch.cuda.max_memory_allocated(rt.device) / 2 ** 20
    return peak_rss_mb()


def reset_memory(rt):
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    reset_peak_rss()


def sync(rt):
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)


def build(cfg: Config, rt: Runtime):
    torch.manual_seed(cfg.seed)
    g = build_generator(cfg).to(rt.device, memory_format=rt.memory_format())
    d = build_discriminator(cfg).to(rt.device, memory_format=rt.memory_format())
    opts = (torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
            torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)))
    return g, d, opts


def flops_per_image(cfg: Config) -> dict:
    """Forward FLOPs of the generator and of one whole training step (G + D, forward + backward)."""
    rt = choose_runtime("cpu", "fp32", False)
    g, d, opts = build(cfg, rt)
    b = 2
    x = torch.rand(b, 3, cfg.image_size, cfg.image_size) * 2 - 1
    m = training_masks(cfg, b, rng_for(0))
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            g(x, m)
    infer = fc.get_total_flops() / b
    with FlopCounterMode(display=False) as fc:
        train_step(x, m, (g, d), opts, cfg, rt)
    return {"inference_gflop": infer / 1e9, "train_step_gflop": fc.get_total_flops() / b / 1e9}


def measure(cfg: Config, rt: Runtime, batches, steps: int, compile_generator: bool = False) -> dict:
    """images/s of a training step and of inference; batches() yields uint8 B, 3, S, S batches
    (the decoding cost is part of the measured loop, as in training)."""
    g, d, opts = build(cfg, rt)
    if compile_generator:
        g = torch.compile(g)
    out = {}
    it = batches()

    def next_batch(step):
        x = to_model_range(next(it), rt.device, rt.memory_format())
        m = training_masks(cfg, len(x), rng_for(cfg.seed, 0, step)).to(rt.device)
        return x, m.contiguous(memory_format=rt.memory_format())

    # pure step: the same batch again, no data work
    x, m = next_batch(0)
    train_step(x, m, (g, d), opts, cfg, rt)  # warm-up (allocator, oneDNN primitive caches, compilation)
    reset_memory(rt)
    sync(rt)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(x, m, (g, d), opts, cfg, rt)
    sync(rt)
    out["train_step_img_s"] = steps * cfg.batch_size / (time.perf_counter() - start)
    out["train_peak_mb"] = peak_memory_mb(rt)
    # step with data: decode/cache + masks + step
    start = time.perf_counter()
    for s in range(steps):
        x, m = next_batch(s + 1)
        train_step(x, m, (g, d), opts, cfg, rt)
    sync(rt)
    out["train_with_data_img_s"] = steps * cfg.batch_size / (time.perf_counter() - start)
    # inference (no grad)
    g.eval()
    with torch.no_grad(), rt.autocast():
        g(x, m)
        reset_memory(rt)
        sync(rt)
        start = time.perf_counter()
        for _ in range(steps):
            g(x, m)
        sync(rt)
    out["inference_img_s"] = steps * cfg.batch_size / (time.perf_counter() - start)
    out["inference_peak_mb"] = peak_memory_mb(rt)
    return out


def onnx_inference(cfg: Config, steps: int) -> "dict | None":
    """images/s of the exported inpaint (generator + composite) under onnxruntime (fp32, CPU) vs PyTorch fp32 on the same batch."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from export import export_onnx
    rt = choose_runtime("cpu", "fp32", False)
    g, _, _ = build(cfg, rt)
    x = torch.rand(cfg.batch_size, 3, cfg.image_size, cfg.image_size) * 2 - 1
    m = training_masks(cfg, cfg.batch_size, rng_for(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(g, os.path.join(tmp, "g.onnx"), cfg.image_size)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy(), "mask": m.numpy()}
        session.run(None, feed)
        start = time.perf_counter()
        for _ in range(steps):
            session.run(None, feed)
        ort_rate = steps * cfg.batch_size / (time.perf_counter() - start)
    with torch.no_grad():
        inpaint(g.eval(), x, m)  # the same computation the exported graph holds
        start = time.perf_counter()
        for _ in range(steps):
            inpaint(g, x, m)
        torch_rate = steps * cfg.batch_size / (time.perf_counter() - start)
    return {"onnxruntime_fp32_img_s": ort_rate, "torch_fp32_img_s": torch_rate}


def naive_batches(files: ImageFiles, batch_size: int):
    """Decode every image with PIL on every use, one item at a time (no cache, no workers)."""
    def gen():
        i = 0
        while True:
            yield torch.stack([files[(i + k) % len(files)] for k in range(batch_size)])
            i += batch_size
    return gen


def cached_batches(source: ImageSource, batch_size: int):
    def gen():
        order = torch.arange(len(source))
        while True:
            yield from source.batches(order, batch_size, drop_last=True)
    return gen


def synthetic_folder(n: int) -> str:
    """CelebA-sized (178 x 218) JPEGs of smooth noise, for machines without the data."""
    import numpy as np
    from PIL import Image
    folder = tempfile.mkdtemp(prefix="bench_faces_")
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = (rng.random((218 // 8, 178 // 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).resize((178, 218), Image.BICUBIC).save(os.path.join(folder, f"{i:06d}.jpg"))
    return folder


def parity(base: Config, data_dir: str, default_precision: str) -> dict:
    """Same seed, same steps, the default recipe on a small model: validation hole L1 after training
    in fp32 and in the default precision. (A GAN at 5x the default learning rate is chaotic enough
    that any rounding difference, bf16 or not, moves the result by >10%: measured, not a bf16 defect.)"""
    out = {}
    cfg = Config(**{**base.__dict__, "data_dir": data_dir, "nf": 16, "image_size": 64, "hole_size": 16,
                    "hole_margin": 8, "batch_size": 20, "epochs": 5, "max_images": 400, "max_val_images": 40,
                    "workers": 0, "log_every": 10**6})
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", default_precision):
            run = Config(**{**cfg.__dict__, "precision": precision, "out_dir": tmp, "run_name": precision})
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                out[precision] = train(run.validate())["val_l1"]
    out["relative_difference"] = abs(out[default_precision] - out["fp32"]) / out["fp32"]
    out["steps"] = cfg.epochs * (int(cfg.max_images * (1 - cfg.val_fraction - cfg.test_fraction)) // cfg.batch_size)
    return out


def data_scale(data_dir: str, steps: int, device: str) -> dict:
    """The default recipe on a large image set (e.g. 16,903 CelebA training faces): how long opening the data
    takes (file scan, split, cache set-up: what main.py does before its first step), and the step rate while
    the first epoch decodes into the lazy RAM cache against the pure step rate. The two kinds of step alternate,
    so whatever else loads the machine slows both alike."""
    cfg = Config(data_dir=data_dir, device=device).validate()
    rt = choose_runtime(device, cfg.precision, cfg.channels_last)
    start = time.perf_counter()
    split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
    source = open_splits(cfg, split, ("train", "val"))["train"]
    opened = time.perf_counter() - start
    batches = source.batches(epoch_order(len(source), cfg.seed, 0), cfg.batch_size, True)
    g, d, opts = build(cfg, rt)

    def data_step(step):  # what main.py does per step: next batch (decoded on first use), holes, step
        x = to_model_range(next(batches), rt.device, rt.memory_format())
        m = training_masks(cfg, len(x), rng_for(cfg.seed, 0, step)).to(rt.device)
        train_step(x, m.contiguous(memory_format=rt.memory_format()), (g, d), opts, cfg, rt)
        return x, m

    x, m = data_step(0)  # warm-up
    pure = with_data = 0.0
    for s in range(steps):
        t = time.perf_counter()
        train_step(x, m, (g, d), opts, cfg, rt)
        sync(rt)
        pure += time.perf_counter() - t
        t = time.perf_counter()
        data_step(s + 1)
        sync(rt)
        with_data += time.perf_counter() - t
    n = steps * cfg.batch_size
    return {"train_images": len(source), "open_seconds": opened, "cache": "lazy RAM" if source.filled is not None
            else ("RAM" if source.cache is not None else "streaming"), "pure_step_img_s": n / pure,
            "first_epoch_img_s": n / with_data, "fraction_of_step_rate": pure / with_data}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get(DATA_ENV, ""), help="images (default $INPAINT_DATA_DIR, else synthetic)")
    p.add_argument("--nf", type=int, default=64)
    p.add_argument("--image-size", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    p.add_argument("--epoch-images", type=int, default=0, help="training images in the epoch measurement (0 = the whole split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile on the default variant")
    p.add_argument("--skip-parity", action="store_true")
    p.add_argument("--json", default=os.path.join(ROOT, "out", "benchmark_speed.json"))
    p.add_argument("--scale", action="store_true",
                   help="only measure the default recipe's start-up and first-epoch step rate on --data-dir "
                   "(e.g. ../shared/celeba) against its pure step rate")
    args = p.parse_args(argv)
    if args.scale:
        r = data_scale(args.data_dir, args.steps, args.device)
        print(f"default recipe on {args.data_dir}: {r['train_images']} training images opened in "
              f"{r['open_seconds']:.1f} s ({r['cache']} cache); first epoch (decoding as it goes) "
              f"{r['first_epoch_img_s']:.2f} img/s vs pure step {r['pure_step_img_s']:.2f} img/s = "
              f"{100 * r['fraction_of_step_rate']:.0f}%")
        return

    # The seed's recipe (GAN step, one hole) is what the speed work measured; --nf etc. vary it.
    base = Config(**{**SEED_RECIPE, "nf": args.nf, "image_size": args.image_size, "batch_size": args.batch_size,
                     "device": args.device})
    base.validate()
    data_dir = args.data_dir or synthetic_folder(240)
    default_rt = choose_runtime(args.device, "auto", True)
    naive_rt = choose_runtime(args.device, "fp32", False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {default_rt.device}; default precision {default_rt.precision}",
          flush=True)

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    flops = flops_per_image(base)
    print(f"per image: inference {flops['inference_gflop']:.1f} GFLOP, training step {flops['train_step_gflop']:.1f} GFLOP",
          flush=True)

    split = split_files(data_dir, base.val_fraction, base.test_fraction)
    train_names = split["train"][:args.epoch_images] if args.epoch_images else split["train"]
    files = ImageFiles(image_root(data_dir), train_names, base.image_size)
    variants = {}
    naive_cfg = Config(**{**base.__dict__, "precision": "fp32", "channels_last": False})
    variants["naive"] = measure(naive_cfg, naive_rt, naive_batches(files, base.batch_size), args.steps)
    print("naive:", {k: round(v, 2) for k, v in variants["naive"].items()}, flush=True)
    source = ImageSource(files, base.cache_mb)
    variants["default"] = measure(base, default_rt, cached_batches(source, base.batch_size), args.steps)
    print("default:", {k: round(v, 2) for k, v in variants["default"].items()}, flush=True)
    if args.compile:
        variants["default+compile"] = measure(base, default_rt, cached_batches(source, base.batch_size), args.steps,
                                              compile_generator=True)
        print("default+compile:", {k: round(v, 2) for k, v in variants["default+compile"].items()}, flush=True)

    # a real training epoch through main.train: data, augmentation, holes, step, progress bar and its syncs
    with tempfile.TemporaryDirectory() as tmp:
        epoch_cfg = Config(**{**base.__dict__, "data_dir": data_dir, "epochs": 1, "out_dir": tmp, "run_name": "epoch",
                              "max_val_images": 20})
        if args.epoch_images:
            epoch_cfg.max_images = int(args.epoch_images / (1 - base.val_fraction - base.test_fraction)) + 1
        reset_peak_rss()
        row = train(epoch_cfg.validate())
    epoch = {"img_s": row["train_images_per_s"], "seconds": row["seconds"],
             "fraction_of_step_rate": row["train_images_per_s"] / variants["default"]["train_step_img_s"],
             "peak_mb": peak_rss_mb()}

    par = None if args.skip_parity else parity(base, data_dir, default_rt.precision)
    onnx = onnx_inference(base, args.steps)

    def pct(gflops, dtype):
        return 100 * gflops / peaks[dtype]

    rows = []
    for name, v in variants.items():
        tr = v["train_step_img_s"] * flops["train_step_gflop"]
        inf = v["inference_img_s"] * flops["inference_gflop"]
        rows.append({"variant": name, **v, "train_gflop_s": tr, "inference_gflop_s": inf,
                     "train_pct_bf16_peak": pct(tr, "bf16"), "train_pct_fp32_peak": pct(tr, "fp32"),
                     "inference_pct_bf16_peak": pct(inf, "bf16"), "inference_pct_fp32_peak": pct(inf, "fp32")})
    n, d = variants["naive"], variants["default"]
    ratios = {"train_step": d["train_step_img_s"] / n["train_step_img_s"],
              "train_with_data": d["train_with_data_img_s"] / n["train_with_data_img_s"],
              "inference": d["inference_img_s"] / n["inference_img_s"]}

    print(f"\n## Speed: nf {base.nf}, {base.image_size} px, batch {base.batch_size}, device {default_rt.device}\n")
    print("| variant | train step img/s | train + data img/s | inference img/s | train GFLOP/s (% bf16 / fp32 peak) "
          "| inference GFLOP/s (% bf16 / fp32 peak) | peak MB train / infer |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['train_step_img_s']:.2f} | {r['train_with_data_img_s']:.2f} | {r['inference_img_s']:.2f} "
              f"| {r['train_gflop_s']:.0f} ({r['train_pct_bf16_peak']:.0f}% / {r['train_pct_fp32_peak']:.0f}%) "
              f"| {r['inference_gflop_s']:.0f} ({r['inference_pct_bf16_peak']:.0f}% / {r['inference_pct_fp32_peak']:.0f}%) "
              f"| {r['train_peak_mb']:.0f} / {r['inference_peak_mb']:.0f} |")
    print(f"\nratio default / naive: training step {ratios['train_step']:.2f}x, with data {ratios['train_with_data']:.2f}x, "
          f"inference {ratios['inference']:.2f}x")
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s; "
          f"GFLOP per image: inference {flops['inference_gflop']:.1f}, training step {flops['train_step_gflop']:.1f}")
    print(f"whole epoch (main.train, {len(train_names)} images): {epoch['img_s']:.2f} img/s = "
          f"{100 * epoch['fraction_of_step_rate']:.0f}% of the pure step rate; peak RSS {epoch['peak_mb']:.0f} MB")
    if onnx:
        print(f"inference, fp32 NCHW on CPU: onnxruntime {onnx['onnxruntime_fp32_img_s']:.2f} img/s, PyTorch "
              f"{onnx['torch_fp32_img_s']:.2f} img/s (the default bf16 + channels_last PyTorch path: "
              f"{variants['default']['inference_img_s']:.2f} img/s)")
    if par:
        print(f"precision parity after {par['steps']} steps (nf 16, 64 px): val hole L1 fp32 {par['fp32']:.4f}, "
              f"{default_rt.precision} {par[default_rt.precision]:.4f} ({100 * par['relative_difference']:.1f}% apart)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"config": {"nf": base.nf, "image_size": base.image_size, "batch_size": base.batch_size,
                              "device": str(default_rt.device), "default_precision": default_rt.precision,
                              "threads": torch.get_num_threads(), "torch": str(torch.__version__),
                              "data_dir": data_dir},
                   "matmul_peak_gflop_s": peaks, "gflop_per_image": flops, "variants": rows, "ratios": ratios,
                   "epoch": epoch, "parity": par, "onnx": onnx}, fh, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
