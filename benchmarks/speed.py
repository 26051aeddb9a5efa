"""What this CPU (or GPU) can do, and how close each generator and training input gets, side by side.

    python benchmarks/speed.py --data-dir ../shared/data_celeb            # fp32 and (where fast) bf16
    python benchmarks/speed.py --data-dir ../shared/data_celeb --precision fp32   # fp32 only
    python benchmarks/speed.py --variants "today:--no-prefill" "default:" --against today
    python benchmarks/speed.py --variants "unet:--arch unet --crop 0" "wide:--width 48 --blocks 4"
    python benchmarks/speed.py --scale --data-dir ../shared/celeba --steps 10   # start-up + step rate at 17k faces

Everything is measured in this one run on this machine (its CPU model and bf16 units are printed), in each
precision asked for: by default fp32 and, where the CPU has bf16 units (AMX or AVX-512 BF16; elsewhere bf16 is
emulated and ~500x slower) or on a GPU, the precision `--precision auto` picks there, side by side. Per
precision: the peak for matmuls and for 3x3 convolutions (forward, and forward + backward as in training, over a
grid of channel counts and resolutions, best shape reported); FLOPs per image (torch's flop counter); and for
every variant (an architecture and a training crop, the rest of the default recipe unchanged: same holes, same
losses) the training step's images/s on the images it trains on, the same with data (decode or cache,
augmentation, holes, crop), and inference at batch 1 on whole 200 and 256 px images. Variants and precisions
are timed in interleaved rounds, so whatever else loads the machine slows all of them alike; each rate is the
total over the rounds for training, and for inference the median over its blocks (--infer-block batch-1
inferences each, the variants' blocks alternating), so a moment of load on a 2-core machine cannot swing an
inference ratio. Ratios are against --against (default `before`, the U-Net, nf 32, on whole images) in the same
precision, and bf16 against fp32 for each variant. Prints a table and writes it to JSON (--json).
"""
import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from checkpoints import build_discriminator, build_generator, model_args  # noqa: E402
from config import (DATA_ENV, Config, Runtime, build_parser, choose_runtime, device_description,  # noqa: E402
                    resolve_config)
from dataset import ImageFiles, ImageSource, epoch_order, image_root, open_splits, split_files  # noqa: E402
from losses import adversarial_part  # noqa: E402
from main import train_step, training_input  # noqa: E402
from masks import draw_mask, rng_for  # noqa: E402
from models import describe, inpaint  # noqa: E402

# (name, flags over the default recipe). `before` is the generator and input the project trained before
# the architecture switch; `default` is today's default.
VARIANTS = [("before", "--arch unet --nf 32 --crop 0"), ("dilated-whole", "--crop 0"), ("default", ""),
            ("dilated-crop96", "--crop 96")]
CONV_SHAPES = [(32, 128), (64, 64), (96, 50), (128, 32), (192, 25), (256, 25), (256, 16), (384, 16)]  # (C, side)
INFER_SIZES = (200, 256)


def matmul_peak(dtype, n=2048, seconds=1.0) -> float:
    """GFLOP/s of a large square matmul in dtype."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - start) / 1e9


def conv_rate(rt: Runtime, channels: int, side: int, train: bool, batch: int = 20, seconds: float = 0.5) -> float:
    """GFLOP/s of one C -> C 3x3 convolution on batch x C x side x side, forward (or forward + backward, 3x the
    forward FLOPs: the gradients of input and weight), in the run's device, precision and memory format."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(rt.device, memory_format=rt.memory_format())
    x = torch.randn(batch, channels, side, side, device=rt.device).contiguous(memory_format=rt.memory_format())
    x.requires_grad_(train)
    flops = 2 * channels ** 2 * 9 * side * side * batch * (3 if train else 1)

    def once():
        with rt.autocast(), torch.set_grad_enabled(train):
            y = conv(x)
        if train:
            y.float().sum().backward()

    once()
    sync(rt)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        once()
        reps += 1
    sync(rt)
    return flops * reps / (time.perf_counter() - start) / 1e9


def conv_peak(rt: Runtime) -> dict:
    """The best 3x3 convolution rate over CONV_SHAPES, forward and forward + backward, with its shape."""
    out = {}
    for kind, train in (("forward", False), ("train", True)):
        rates = {f"{c}ch x {s}px": conv_rate(rt, c, s, train) for c, s in CONV_SHAPES}
        best = max(rates, key=rates.get)
        out[kind] = {"gflop_s": rates[best], "shape": best, "all": rates}
    return out


def sync(rt):
    if rt.device.type == "cuda":
        torch.cuda.synchronize(rt.device)


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


def data_scale(data_dir: str, steps: int, device: str) -> dict:
    """The default recipe on a large image set (e.g. 16,903 CelebA training faces): how long opening the data
    takes (file scan, split, cache set-up: what main.py does before its first step), and the step rate while
    the first epoch decodes into the lazy RAM cache against the pure step rate. The two kinds of step alternate,
    so whatever else loads the machine slows both alike."""
    cfg = Config(data_dir=data_dir, device=device).validate()  # the default recipe
    rt = choose_runtime(device, cfg.precision, cfg.channels_last)
    start = time.perf_counter()
    split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
    source = open_splits(cfg, split, ("train", "val"))["train"]
    opened = time.perf_counter() - start
    batches = source.batches(epoch_order(len(source), cfg.seed, 0), cfg.batch_size, True)
    g, train = build(cfg, rt)

    def data_step(step):  # what main.py does per step: next batch (decoded on first use), holes, crop, step
        x, m, kinds = training_input(cfg, rt, next(batches), rng_for(cfg.seed, 0, step))
        train(x, m, kinds)
        return x, m

    x, m = data_step(0)  # warm-up
    pure = with_data = 0.0
    for s in range(steps):
        t = time.perf_counter()
        train(x, m)
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


def build(cfg: Config, rt: Runtime) -> tuple:
    """(generator, step): the generator and, with the discriminator (only with the GAN) and both optimizers
    built as main.py builds them, step(x, m), one training step of the recipe."""
    torch.manual_seed(cfg.seed)
    g = build_generator(cfg).to(rt.device, memory_format=rt.memory_format())
    gan = adversarial_part(cfg)
    d = build_discriminator(cfg).to(rt.device, memory_format=rt.memory_format()) if gan is not None else None
    opts = (torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
            torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)) if d is not None else None)
    return g, lambda x, m, kinds=None: train_step(x, m, (g, d), opts, gan, cfg, rt, kinds=kinds)


def inference_pair(cfg: Config, size: int, rt: Runtime) -> tuple:
    """One whole size x size image in [-1, 1] and one of the recipe's holes drawn at that size."""
    sized = Config(**{**cfg.__dict__, "image_size": size})
    m = torch.from_numpy(draw_mask(sized, cfg.mask, rng_for(cfg.seed, size), squares=1)).float()[None, None]
    x = torch.rand(1, 3, size, size) * 2 - 1
    return tuple(t.to(rt.device).contiguous(memory_format=rt.memory_format()) for t in (x, m))


def flops_per_image(cfg: Config, batch_u8: torch.Tensor) -> dict:
    """Forward FLOPs of the generator on whole images (INFER_SIZES) and of one training step (forward +
    backward of everything the step runs) per image it trains on."""
    rt = choose_runtime("cpu", "fp32", False)
    g, train = build(cfg, rt)
    out = {}
    for size in INFER_SIZES:
        x, m = inference_pair(cfg, size, rt)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            g(x, m)
        out[f"inference_{size}_gflop"] = fc.get_total_flops() / 1e9
    x, m, kinds = training_input(cfg, rt, batch_u8[:2], rng_for(cfg.seed))
    with FlopCounterMode(display=False) as fc:
        train(x, m, kinds)
    out["train_step_gflop"] = fc.get_total_flops() / 2 / 1e9
    return out


class Variant:
    """One architecture + training input: its networks, a fixed training batch, and its accumulated timings."""

    def __init__(self, name: str, cfg: Config, rt: Runtime, source: ImageSource):
        self.name, self.cfg, self.rt = name, cfg, rt
        self.g, self.train = build(cfg, rt)
        self.batches = source.batches(torch.arange(len(source)).repeat(1000), cfg.batch_size, True)
        self.fixed = training_input(cfg, rt, next(self.batches), rng_for(cfg.seed, 0))
        self.pairs = {s: inference_pair(cfg, s, rt) for s in INFER_SIZES}
        self.step_count = 0
        self.blocks = defaultdict(list)  # key -> [(images, seconds)] of each timed block
        self.train(*self.fixed)  # warm-up (allocator, oneDNN primitive caches), not counted
        self.infer(1)
        self.blocks.clear()

    def timed(self, key: str, n: int, fn):
        sync(self.rt)
        start = time.perf_counter()
        for _ in range(n):
            fn()
        sync(self.rt)
        self.blocks[key].append((n, time.perf_counter() - start))

    def infer(self, n: int):
        g = self.g.eval()
        with torch.no_grad(), self.rt.autocast():
            for size, (x, m) in self.pairs.items():
                self.timed(f"infer_{size}", n, lambda: inpaint(g, x, m))
        g.train()

    def data_step(self):
        self.step_count += 1
        self.train(*training_input(self.cfg, self.rt, next(self.batches), rng_for(self.cfg.seed, 1, self.step_count)))

    def train_round(self, steps: int):
        self.timed("step", steps, lambda: self.train(*self.fixed))
        self.timed("data", steps, self.data_step)

    def rates(self) -> dict:
        """images/s: training step (per image trained on) and with data over all rounds; inference per size
        from its median block."""
        rates = {k: self.cfg.batch_size * sum(n for n, _ in self.blocks[k]) / sum(t for _, t in self.blocks[k])
                 for k in ("step", "data")}
        return {**rates, **{f"infer_{s}": 1 / statistics.median(t / n for n, t in self.blocks[f"infer_{s}"])
                            for s in INFER_SIZES}}


def onnx_inference(cfg: Config, reps: int) -> "dict | None":
    """images/s of the exported inpaint (generator + composite) under onnxruntime (fp32, CPU) against PyTorch
    fp32 on the same 200-px image and hole, batch 1."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from export import export_onnx
    rt = choose_runtime("cpu", "fp32", False)
    g = build(cfg, rt)[0].eval()
    x, m = inference_pair(cfg, 200, rt)
    with tempfile.TemporaryDirectory() as tmp:
        session = ort.InferenceSession(export_onnx(g, os.path.join(tmp, "g.onnx"), 200), providers=["CPUExecutionProvider"])
        feed = {"image": x.numpy(), "mask": m.numpy()}
        session.run(None, feed)
        start = time.perf_counter()
        for _ in range(reps):
            session.run(None, feed)
        ort_rate = reps / (time.perf_counter() - start)
    with torch.no_grad():
        inpaint(g, x, m)
        start = time.perf_counter()
        for _ in range(reps):
            inpaint(g, x, m)
        torch_rate = reps / (time.perf_counter() - start)
    return {"onnxruntime_fp32_img_s": ort_rate, "torch_fp32_nchw_img_s": torch_rate}


def variant_config(flags: str, device: str) -> Config:
    """The default recipe with a variant's flags (main.py's own parser and checks)."""
    args = build_parser().parse_args(shlex.split(flags) + ["--device", device])
    return resolve_config(args)


def ratio_lines(rows: list, against: str) -> list:
    """Each variant against `against` in the same precision, and each variant's bf16 (or fp16) against its fp32."""
    lines = []
    ratio = lambda r, b: (f"training {r['train_step_img_s'] / b['train_step_img_s']:.2f}x (with data "
                          f"{r['train_data_img_s'] / b['train_data_img_s']:.2f}x), inference "
                          f"{r['infer_200_img_s'] / b['infer_200_img_s']:.2f}x at 200 px, "
                          f"{r['infer_256_img_s'] / b['infer_256_img_s']:.2f}x at 256 px")
    for r in rows:
        base = next((b for b in rows if b["name"] == against and b["precision"] == r["precision"]), None)
        if base is not None and r is not base:
            lines.append(f"- {r['name']} / {against} ({r['precision']}): {ratio(r, base)}")
    for r in rows:
        fp32 = next((b for b in rows if b["name"] == r["name"] and b["precision"] == "fp32"), None)
        if fp32 is not None and r is not fp32:
            lines.append(f"- {r['name']}: {r['precision']} / fp32: {ratio(r, fp32)}")
    return lines


def report(rows: list, peaks: dict, machine: str, onnx: "dict | None", against: str = "before") -> str:
    """Markdown: one row per variant and precision, then the ratios (against `against`, bf16 against fp32) and
    the peaks of each precision."""
    lines = [f"{machine}", "",
             "| variant | precision | generator | train input | train step img/s | train + data img/s | train GFLOP/s (% of conv fwd+bwd peak) "
             "| inference img/s 200 / 256 px | inference GFLOP/s 200 px (% of conv fwd peak) | GFLOP/image 200 / 256 px |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['precision']} | {r['generator']} | {r['input']} | {r['train_step_img_s']:.2f} | {r['train_data_img_s']:.2f} "
                     f"| {r['train_gflop_s']:.0f} ({r['train_pct_conv_peak']:.0f}%) | {r['infer_200_img_s']:.2f} / "
                     f"{r['infer_256_img_s']:.2f} | {r['infer_200_gflop_s']:.0f} ({r['infer_200_pct_conv_peak']:.0f}%) "
                     f"| {r['inference_200_gflop']:.1f} / {r['inference_256_gflop']:.1f} |")
    lines += [""] + ratio_lines(rows, against) + [""]
    for precision, p in peaks.items():
        lines.append(f"Peaks in this run ({precision}): matmul {p['matmul']:.0f} GFLOP/s; 3x3 convolution forward "
                     f"{p['conv']['forward']['gflop_s']:.0f} GFLOP/s ({p['conv']['forward']['shape']}), forward + "
                     f"backward {p['conv']['train']['gflop_s']:.0f} GFLOP/s ({p['conv']['train']['shape']}), batch 20.")
    if onnx:
        lines.append(f"ONNX, fp32 on CPU, default generator, 200 px, batch 1: onnxruntime {onnx['onnxruntime_fp32_img_s']:.2f} "
                     f"img/s, PyTorch fp32 NCHW {onnx['torch_fp32_nchw_img_s']:.2f} img/s.")
    return "\n".join(lines)


def measure_variants(variants: list, source: ImageSource, rounds: int, steps: int, infer_reps: int,
                     infer_block: int) -> list:
    """Interleaved rounds of every (variant, precision): each one's training steps, then their inference blocks
    in turn (variant A's block, B's, A's, ...); one result row each."""
    built = [Variant(name, cfg, choose_runtime(cfg.device, cfg.precision, cfg.channels_last), source)
             for name, cfg in variants]
    for r in range(rounds):
        for v in built:
            v.train_round(steps)
        for _ in range(max(1, infer_reps // infer_block)):
            for v in built:
                v.infer(infer_block)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{v.name} {v.rt.precision} {v.rates()['step']:.2f}" for v in built)
              + " train img/s", flush=True)
    return built


def precisions(flag: str, device: str) -> list:
    """The precisions to compare: the flag's comma-separated list, or for 'both' fp32 and the one `auto` picks
    here when that is not fp32 (bf16 on a CPU with bf16 units; nothing more where bf16 would be emulated)."""
    if flag != "both":
        return [p.strip() for p in flag.split(",") if p.strip()]
    picked = choose_runtime(device, "auto").precision
    return ["fp32"] + ([picked] if picked != "fp32" else [])


def result_row(v: Variant, flops: dict, peaks: dict) -> dict:
    rates, peaks = v.rates(), peaks[v.rt.precision]
    train_gflop_s = rates["step"] * flops["train_step_gflop"]
    infer_gflop_s = rates["infer_200"] * flops["inference_200_gflop"]
    return {"name": v.name, "precision": v.rt.precision, "generator": describe(model_args(v.cfg)),
            "input": f"{v.cfg.crop} px crops" if v.cfg.crop else f"whole {v.cfg.image_size} px",
            "train_step_img_s": rates["step"], "train_data_img_s": rates["data"],
            **{f"infer_{s}_img_s": rates[f"infer_{s}"] for s in INFER_SIZES}, **flops,
            "train_gflop_s": train_gflop_s, "train_pct_conv_peak": 100 * train_gflop_s / peaks["conv"]["train"]["gflop_s"],
            "infer_200_gflop_s": infer_gflop_s,
            "infer_200_pct_conv_peak": 100 * infer_gflop_s / peaks["conv"]["forward"]["gflop_s"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=os.environ.get(DATA_ENV, ""), help="images (default $INPAINT_DATA_DIR, else synthetic)")
    p.add_argument("--variants", nargs="*", default=None, metavar="NAME:FLAGS",
                   help="variants as NAME:main.py flags over the default recipe (default: " +
                   "; ".join(f"{n}:{f}" for n, f in VARIANTS).replace("%", "%%") + ")")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants")
    p.add_argument("--steps", type=int, default=2, help="training steps per variant per round (and as many with data)")
    p.add_argument("--infer-reps", type=int, default=5, help="batch-1 inferences per size per variant per round")
    p.add_argument("--infer-block", type=int, default=5,
                   help="inferences per timed block (the blocks of the variants alternate; a rate is the median block's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="both", metavar="LIST",
                   help="comma-separated precisions every variant trains and infers in, side by side (fp32, bf16, "
                   "fp16, auto: what main.py picks here); both (default): fp32 and, where it differs, auto's pick")
    p.add_argument("--against", default="before", help="the variant the others are compared with")
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
    specs = [tuple(v.split(":", 1)) if ":" in v else (v, "") for v in args.variants] if args.variants else VARIANTS
    variants = [(name, variant_config(f"{flags} --precision {precision}", args.device))
                for name, flags in specs for precision in precisions(args.precision, args.device)]
    rt = choose_runtime(args.device, "fp32")
    machine = (f"machine: {device_description(rt.device)}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
               f"device {rt.device}; `--precision auto` picks {choose_runtime(args.device, 'auto').precision} here")
    print(machine, flush=True)
    peaks = {}
    for _, cfg in variants:
        vrt = choose_runtime(cfg.device, cfg.precision, cfg.channels_last)
        if vrt.precision not in peaks:
            peaks[vrt.precision] = {"matmul": matmul_peak(vrt.amp_dtype or torch.float32), "conv": conv_peak(vrt)}
            print(f"peaks ({vrt.precision}): matmul {peaks[vrt.precision]['matmul']:.0f}, conv forward "
                  f"{peaks[vrt.precision]['conv']['forward']['gflop_s']:.0f}, conv forward+backward "
                  f"{peaks[vrt.precision]['conv']['train']['gflop_s']:.0f} GFLOP/s", flush=True)
    data_dir = args.data_dir or synthetic_folder(120)
    split = split_files(data_dir, 0.1, 0.1)
    source = ImageSource(ImageFiles(image_root(data_dir), split["train"][:200], variants[0][1].image_size), 2048)
    batch = next(source.batches(torch.arange(len(source)), 2, True))
    flops = {name: flops_per_image(cfg, batch) for name, cfg in variants}
    built = measure_variants(variants, source, args.rounds, args.steps, args.infer_reps, args.infer_block)
    rows = [result_row(v, flops[v.name], peaks) for v in built]
    default = next((cfg for name, cfg in variants if name == "default"), variants[0][1])
    onnx = onnx_inference(default, 10 * args.infer_reps)
    text = report(rows, peaks, machine, onnx, args.against)
    print("\n" + text)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"machine": machine, "peaks": peaks, "variants": rows, "onnx": onnx,
                   "flags": dict(specs), "data_dir": data_dir}, fh, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
