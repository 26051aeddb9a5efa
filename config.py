"""Every hyperparameter in one dataclass; presets; the CLI generated from it; device and precision.

Precedence when resolving a config: field defaults < --preset < --config FILE < explicit flags.
"""
import argparse
import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field, fields

import torch

from masks import MASK_KINDS, parse_kind_weights, parse_mix
from models import ARCHITECTURES, arch_arg_names

DATA_ENV = "INPAINT_DATA_DIR"  # environment variable naming the image folder when --data-dir is not given


def F(default, help: str):
    """A config field whose help text is its one-line comment (shown by --help and the README)."""
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # --- data ---
    data_dir: str = F("", f"image folder or CelebA root (img_align_celeba/ + list_eval_partition.txt); default ${DATA_ENV}")
    image_size: int = F(200, "side of the square images in pixels (training crops come from them); a multiple of 8, which every architecture needs")
    val_fraction: float = F(0.1, "fraction of the sorted file list used for validation when there is no CelebA partition file")
    test_fraction: float = F(0.1, "fraction of the sorted file list held out for testing (the last files)")
    max_images: int = F(0, "use only the first N images of the sorted list before splitting (0 = all)")
    cache_mb: int = F(2048, "decode the whole split into RAM as uint8 when it fits this many MB, else stream from disk")
    workers: int = F(2, "DataLoader worker processes when streaming from disk (unused with the RAM cache)")
    # --- holes ---
    mask: str = F("mixed", "training hole shape: square (the seed's), boxes, strokes (free-form brush) or mixed")
    mask_mix: str = F("square:1,boxes:1,strokes:2", "relative weights of the kinds when mask=mixed")
    hole_size: int = F(32, "side of the square hole in pixels")
    holes: int = F(6, "squares per training image whenever a square hole is drawn (more supervised pixels per step); boxes and strokes ignore it; evaluation keeps one")
    hole_jitter: int = F(0, "augmentation: hole side drawn uniformly from hole_size +- hole_jitter")
    hole_margin: int = F(16, "minimum distance in pixels between a square hole and the image border")
    max_boxes: int = F(3, "boxes masks hold 1 to this many rectangles")
    max_strokes: int = F(4, "strokes masks hold 1 to this many brush strokes")
    min_hole_fraction: float = F(0.0, "holes are redrawn until they cover at least this fraction of the image")
    max_hole_fraction: float = F(1.0, "... and at most this fraction")
    ring: int = F(4, "width of the context ring around each hole where reconstruction losses also look")
    # --- augmentation ---
    hflip: bool = F(True, "augmentation: random horizontal flips")
    color_jitter: float = F(0.1, "augmentation: max relative brightness/contrast change (0 = off)")
    crop: int = F(128, "train on this random N x N window of each image and its holes (drawn on the whole image; 0 = whole images); validation stays on whole images")
    crop_fraction: float = F(1.0, "fraction of the run trained on --crop windows; the steps after it train on whole images (a resolution schedule)")
    # --- model (the generator's arguments: models.ARCHITECTURES says which belong to which arch) ---
    arch: str = F("dilated", "generator architecture: dilated (CPU-shaped U-Net with dilated residual blocks at 1/8) or unet (the seed's)")
    nf: int = F(32, "unet: base channels (seed: 64)")
    width: int = F(32, "dilated: channels at 1/2 resolution (2x at 1/4, 4x at 1/8)")
    blocks: int = F(8, "dilated: residual blocks (dilations 1, 2, 4, 8, ...) at 1/8 resolution")
    attention: bool = F(True, "self-attention at 1/8 resolution in the generator")
    prefill: bool = F(True, "fill holes with a cheap smooth (push-pull) fill and predict a zero-initialised correction to it (--no-prefill: colours from scratch)")
    gate: float = F(0.01, "with --prefill: scale the network's correction by c / (c + gate), c the hole's surroundings' curvature, so flat colours and ramps keep the exact fill (0 = no gate)")
    blur_up: bool = F(True, "dilated: blur each pixel-shuffle upsampling's output ([1,2,1]^2), so the GAN cannot draw a grid locked to its phases")
    init_from: str = F("", "start the generator (and its moving average) from this checkpoint's weights, e.g. weights/generator.pt for a fine-tune")
    branch_from: str = F("", "start as a copy of this run checkpoint (networks, optimizers, step, history, split) and go on under this config, e.g. a reconstruction-only twin with --w-adv 0")
    d_nf: int = F(32, "base channels of the PatchGAN discriminator")
    d_layers: int = F(4, "stride-2 layers of the PatchGAN discriminator: its patches are ~22 px at 2, ~94 px at 4 (seed: 2)")
    d_scale: int = F(2, "the discriminator judges images average-pooled by this factor (1, 2 or 4): 2 hides pixel grain and doubles the face each patch sees")
    d_norm: str = F("spectral", "normalisation in the discriminator: spectral or batch (seed: batch)")
    d_mask: bool = F(True, "the discriminator also sees the mask; only patches touching a hole are labelled fake")
    mask_blur: float = F(4.0, "with --d-mask, soft labels: how fake a patch is = the mask blurred by a Gaussian of this sigma (px); 0 = hard")
    # --- losses ---
    w_adv: float = F(100.0, "weight of the non-saturating adversarial loss (0 turns the GAN off: no discriminator, no GAN term; seed: 1)")
    adv_start: float = F(0.334, "fraction of the run trained on reconstruction alone before the adversarial terms start (default: the first 5 of 15 epochs)")
    adv_ramp: float = F(0.1, "fraction of the run over which the adversarial weights then rise linearly to theirs")
    w_fm: float = F(1000.0, "weight of feature matching on the discriminator's features (LaMa); a GAN term: off with w_adv 0")
    gan_hole_weight: float = F(0.5, "once the GAN is on, the pixel losses' weight on hole pixels (ring pixels: 1), reached along the adversarial ramp; 0 leaves the fill to the GAN terms and the seam (LaMa); the twin keeps 1")
    gan_kind_weights: str = F("", "how strongly the GAN phase acts on a training sample by its hole's kind, e.g. 'strokes:0.25': its adversarial and feature-matching terms scaled by it and its hole weight moved only that far towards gan_hole_weight; kinds not named: 1")
    w_r1: float = F(0.0, "weight of the R1 gradient penalty on the discriminator's real images; a GAN term: off with w_adv 0")
    w_l1: float = F(100.0, "weight of the L1 reconstruction loss")
    w_edge: float = F(10.0, "weight of the Sobel edge loss")
    w_ssim: float = F(1.0, "weight of the 1 - SSIM loss")
    w_l2: float = F(1000.0, "weight of the mean squared error (the loss PSNR measures)")
    w_seam: float = F(100.0, "weight of the seam loss: the edge the composite draws along the hole's border beyond the photo's")
    loss_region: str = F("hole_ring", "where reconstruction losses look: hole_ring (hole + context ring) or whole (every pixel)")
    # --- optimisation ---
    epochs: int = F(15, "passes over the training split (15 of CelebA's 16,903 training faces: ~1.5 h on a 2-core Xeon with AMX in bf16)")
    batch_size: int = F(20, "images per step")
    lr_g: float = F(1e-3, "Adam learning rate of the generator")
    lr_d: float = F(2e-4, "Adam learning rate of the discriminator")
    lr_schedule: str = F("constant", "constant, or cosine: both learning rates decay to 0 over the run's epochs")
    warmup_steps: int = F(100, "steps over which both learning rates rise linearly from 0 before the schedule")
    grad_clip: float = F(250.0, "clip each network's gradient norm to this before its step (0 = off): ~3x the generator's usual norm in the GAN phase, which stops a runaway (docs/experiments.md; seed: off)")
    ema: float = F(0.999, "decay of the moving average of generator weights used to validate and inpaint (0 = off)")
    beta1: float = F(0.5, "Adam beta1 for both networks")
    beta2: float = F(0.999, "Adam beta2 for both networks")
    max_minutes: float = F(0.0, "stop cleanly (last.pt saved, as on Ctrl-C) once the run has trained this many minutes in all, resumes included (0 = no limit)")
    max_bad_steps: int = F(20, "stop after this many consecutive steps with a NaN/inf loss (each is skipped)")
    loss_jump: float = F(5.0, "stop when the hole L1 of a log window exceeds this many times its running level, keeping last.pt from before the jump (0 = off)")
    collapse_db: float = F(3.0, "stop when validation hole PSNR falls below mean fill's after beating it by this many dB (0 = off)")
    seed: int = F(0, "seed of model init, data order, training holes and augmentation")
    # --- evaluation ---
    eval_seed: int = F(1234, "seed of the fixed validation/test holes (same holes every epoch and every method)")
    max_val_images: int = F(0, "validate on at most N validation images (0 = all)")
    best_metric: str = F("psnr", "validation metric that selects best.pt: ssim, psnr, l1 or lpips")
    val_lpips_images: int = F(64, "validation images whose LPIPS (AlexNet; evaluation only, never a loss) is logged each epoch (0 = off)")
    grid_images: int = F(6, "validation images shown in the per-epoch sample grid")
    # --- runtime ---
    device: str = F("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    precision: str = F("auto", "auto, fp32, bf16 or fp16 (autocast; fp16 uses a GradScaler)")
    channels_last: bool = F(True, "keep models and batches in channels_last memory format (faster convs)")
    compile: bool = F(False, "torch.compile the generator")
    threads: int = F(0, "CPU threads for torch (0 = torch's default)")
    out_dir: str = F("out", "parent folder of run folders")
    run_name: str = F("", "run folder name under out_dir (default: preset name + timestamp)")
    log_every: int = F(10, "steps between progress-line refreshes (each one syncs the host to read the running losses)")
    preset: str = F("default", "preset the other values were resolved from (informational)")

    def validate(self) -> "Config":
        """Reject values that would fail later; called before any data is read. Every bad value is listed."""
        errors = []

        def need(ok, name, why):
            if not ok:
                errors.append(f"--{name.replace('_', '-')}={getattr(self, name)!r}: {why}")

        for check in (self._check_data_and_holes, self._check_model, self._check_training):
            check(need, errors)
        if errors:
            raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
        return self

    def _check_data_and_holes(self, need, errors: list):
        need(self.image_size >= 16, "image_size", "must be at least 16")
        need(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        need(0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1, "test_fraction", "val + test fractions must leave training images")
        need(self.max_images >= 0, "max_images", "must be >= 0")
        need(self.cache_mb >= 0, "cache_mb", "must be >= 0")
        need(self.workers >= 0, "workers", "must be >= 0")
        need(self.mask in MASK_KINDS, "mask", f"must be one of {', '.join(MASK_KINDS)}")
        need(self.hole_size >= 1, "hole_size", "must be >= 1")
        need(0 <= self.hole_jitter < self.hole_size, "hole_jitter", "must be in [0, hole_size)")
        need(self.holes >= 1, "holes", "must be >= 1")
        need(self.hole_margin >= 0, "hole_margin", "must be >= 0")
        need(self.hole_size + self.hole_jitter + 2 * self.hole_margin <= self.image_size, "hole_size",
             f"hole (+ jitter {self.hole_jitter}) plus 2 x margin {self.hole_margin} must fit in image_size {self.image_size}")
        need(self.ring >= 0, "ring", "must be >= 0")
        need(self.max_boxes >= 1, "max_boxes", "must be >= 1")
        need(self.max_strokes >= 1, "max_strokes", "must be >= 1")
        need(0 <= self.min_hole_fraction < self.max_hole_fraction <= 1, "min_hole_fraction",
             "need 0 <= min_hole_fraction < max_hole_fraction <= 1")
        try:
            parse_mix(self.mask_mix)
        except ValueError as e:
            errors.append(f"--mask-mix={self.mask_mix!r}: {e}")
        try:
            parse_kind_weights(self.gan_kind_weights, "gan_kind_weights")
        except ValueError as e:
            errors.append(f"--gan-kind-weights={self.gan_kind_weights!r}: {e}")
        if self.mask == "square" and self.image_size >= 1:
            lo, hi = [(self.hole_size + s) ** 2 / self.image_size ** 2 for s in (-self.hole_jitter, self.hole_jitter)]
            need(hi >= self.min_hole_fraction and lo <= self.max_hole_fraction, "max_hole_fraction",
                 f"square holes cover {lo:.1%}-{hi:.1%} of the image, outside the hole-fraction bounds")
        need(0 <= self.color_jitter < 1, "color_jitter", "must be in [0, 1)")

    def _check_model(self, need, errors: list):
        need(self.arch in ARCHITECTURES, "arch", f"must be one of {', '.join(ARCHITECTURES)}")
        need(self.nf >= 8 and self.nf % 8 == 0, "nf", "must be a multiple of 8 (attention projects to nf/2 channels)")
        need(self.width >= 8 and self.width % 8 == 0, "width", "must be a multiple of 8 (attention projects to width/2 channels)")
        need(self.blocks >= 0, "blocks", "must be >= 0")
        multiple = ARCHITECTURES[self.arch][1].size_multiple if self.arch in ARCHITECTURES else 8
        need(self.image_size % multiple == 0, "image_size", f"must be a multiple of {multiple} for --arch {self.arch}")
        need(self.crop == 0 or (32 <= self.crop <= self.image_size and self.crop % multiple == 0), "crop",
             f"must be 0 (whole images) or a multiple of {multiple} (what --arch {self.arch} takes) from 32 to "
             f"--image-size {self.image_size}")
        need(self.d_nf >= 1, "d_nf", "must be >= 1")
        need(not (self.branch_from and self.init_from), "branch_from", "and --init-from both give the starting weights: pass one")
        need(1 <= self.d_layers <= 6, "d_layers", "must be from 1 to 6")
        need(self.d_norm in ("spectral", "batch"), "d_norm", "must be spectral or batch")
        need(self.d_scale in (1, 2, 4), "d_scale", "must be 1, 2 or 4")
        seen = (self.crop or self.image_size) // self.d_scale  # what the discriminator is shown in training
        need(seen >= 2 ** (self.d_layers + 1) or self.w_adv == 0, "d_layers",
             f"leaves no patch on a {seen} px training image (after --d-scale): lower it or raise --crop / --image-size")

    def _check_training(self, need, errors: list):
        for w in ("w_adv", "w_fm", "gan_hole_weight", "w_r1", "w_l1", "w_edge", "w_ssim", "w_l2", "w_seam", "mask_blur", "gate"):
            need(math.isfinite(getattr(self, w)) and getattr(self, w) >= 0, w, "must be a finite number >= 0")
        need(self.w_l1 + self.w_edge + self.w_ssim + self.w_l2 > 0, "w_l1", "at least one reconstruction loss weight must be > 0")
        need(self.loss_region in ("hole_ring", "whole"), "loss_region", "must be hole_ring or whole")
        need(self.epochs >= 1, "epochs", "must be >= 1")
        need(self.batch_size >= 2, "batch_size", "must be >= 2 (the discriminator uses BatchNorm)")
        for lr in ("lr_g", "lr_d"):
            need(math.isfinite(getattr(self, lr)) and getattr(self, lr) > 0, lr, "must be a finite number > 0")
        for b in ("beta1", "beta2"):
            need(0 <= getattr(self, b) < 1, b, "must be in [0, 1)")
        need(self.lr_schedule in ("constant", "cosine"), "lr_schedule", "must be constant or cosine")
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        for name in ("grad_clip", "collapse_db", "max_minutes"):
            need(math.isfinite(getattr(self, name)) and getattr(self, name) >= 0, name, "must be a finite number >= 0")
        for name in ("adv_start", "adv_ramp", "crop_fraction"):
            need(0 <= getattr(self, name) <= 1, name, "must be a fraction of the run in [0, 1]")
        need(0 <= self.ema < 1, "ema", "must be in [0, 1) (0 turns the average off)")
        need(self.max_bad_steps >= 1, "max_bad_steps", "must be >= 1")
        need(self.loss_jump == 0 or (math.isfinite(self.loss_jump) and self.loss_jump > 1), "loss_jump",
             "must be > 1 (a factor over the running level), or 0 to turn the guard off")
        need(self.max_val_images >= 0, "max_val_images", "must be >= 0")
        need(self.best_metric in ("ssim", "psnr", "l1", "lpips"), "best_metric", "must be ssim, psnr, l1 or lpips")
        need(self.val_lpips_images >= 0, "val_lpips_images", "must be >= 0")
        need(self.best_metric != "lpips" or self.val_lpips_images > 0, "best_metric",
             "lpips needs --val-lpips-images > 0")
        need(self.grid_images >= 1, "grid_images", "must be >= 1")
        need(self.device == "auto" or self.device in ("cpu", "mps") or self.device.startswith("cuda"), "device", "must be auto, cpu, cuda, cuda:N or mps")
        need(self.precision in ("auto", "fp32", "bf16", "fp16"), "precision", "must be auto, fp32, bf16 or fp16")
        need(self.threads >= 0, "threads", "must be >= 0")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        need("/" not in self.run_name and self.run_name not in (".", ".."), "run_name", "must be a plain folder name")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """Rebuild from a saved dict; unknown keys are an error so a typo never passes silently."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict) -> "Config":
        """A config saved by a run (config.json, a checkpoint): fields it lacks because they were added
        later take the value every such run had (SAVED_BEFORE), not today's defaults."""
        return cls.from_dict({**SAVED_BEFORE, **values})


class UserError(Exception):
    """Base of every error the user must fix (a flag, a file, a folder): each CLI ends on these with its
    message and exit code 2, never a traceback."""


class WriteError(UserError, OSError):
    """An output that cannot be written; the message starts with 'cannot write' and says why."""


def make_folder(folder: str, what: str):
    """Create an output folder (and its parents), or end in 'cannot write WHAT' saying why."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in parents(folder) if os.path.exists(p) and not os.path.isdir(p)), None)
        why = f"{blocker} is a file, not a folder" if blocker else (e.strerror or str(e))
        raise WriteError(f"cannot write {what}: {why}") from None


def atomic_write(path: str, write) -> str:
    """write(tmp) makes the file under a temporary name beside `path` (same extension, for writers that pick the
    format by it), then it is renamed over `path`: a crash leaves the old file or the new one, never half of one."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.partial{ext}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_text(path: str, text: str) -> str:
    """Write a text file atomically (atomic_write)."""
    def write(tmp: str):
        with open(tmp, "w") as fh:
            fh.write(text)
    return atomic_write(path, write)


def parents(folder: str) -> list:
    """folder and each folder above it, nearest first."""
    out = [folder]
    while os.path.dirname(out[-1]) != out[-1]:
        out.append(os.path.dirname(out[-1]))
    return out



class ConfigError(UserError, ValueError):
    """A config value or flag the user must fix; the message names it."""


# Fields added after runs had been saved, with the value those runs had: a run from before the architecture
# switch is a U-Net trained on whole images, with the seed's discriminator.
SAVED_BEFORE = {"prefill": False, "gate": 0.0, "w_seam": 0.0, "arch": "unet", "crop": 0, "d_layers": 2, "d_norm": "batch", "mask_blur": 0.0, "w_fm": 0.0, "blur_up": False}

# Presets change only what differs from the field defaults (the default recipe, chosen on the
# validation split: docs/experiments.md). The seed's recipe as written is kept as its own preset.
SEED_RECIPE = {"arch": "unet", "prefill": False, "gate": 0.0, "w_seam": 0.0, "crop": 0, "d_layers": 2, "d_norm": "batch", "d_mask": False, "mask_blur": 0.0, "w_fm": 0.0,
               "adv_start": 0.0, "adv_ramp": 0.0, "mask": "square", "warmup_steps": 0, "nf": 64, "holes": 1, "w_adv": 1.0, "w_l2": 0.0, "lr_g": 2e-4, "lr_schedule": "constant",
               "ema": 0.0, "epochs": 20, "best_metric": "ssim",
               "d_scale": 1, "gan_hole_weight": 1.0, "grad_clip": 0.0}
PRESETS = {
    "default": {},
    "seed": SEED_RECIPE,
    "whole": {**SEED_RECIPE, "nf": 32, "epochs": 30, "loss_region": "whole"},
    "tiny": {"w_adv": 1.0, "d_layers": 2, "d_scale": 1, "adv_start": 0.0, "adv_ramp": 0.0, "w_fm": 0.0, "d_mask": False, "holes": 2, "image_size": 32, "crop": 0, "width": 8, "blocks": 2, "nf": 8, "d_nf": 8, "hole_size": 8, "hole_margin": 4, "ring": 2,
             "warmup_steps": 0, "epochs": 2, "batch_size": 4, "max_images": 40, "max_val_images": 8, "grid_images": 4,
             "workers": 0, "log_every": 2, "val_lpips_images": 0},  # LPIPS's 2.5 s load is most of a smoke run
}


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """One flag per Config field (--image-size for image_size), plus --preset and --config."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="named starting point (default: default)")
    parser.add_argument("--config", default=None, help="JSON file of config values (e.g. a run's config.json)")
    for f in fields(Config):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        # SUPPRESS keeps flags the user did not give out of the namespace, so presets and config
        # files are not overwritten by defaults; the default is shown in the help text instead.
        text = f"{f.metadata['help']} (default: {f.default!r})".replace("%", "%%")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type, f.type)
            parser.add_argument(flag, type=typ, default=argparse.SUPPRESS, help=text, metavar=f.name.upper())
    return parser


def resolve_config(args: argparse.Namespace) -> Config:
    """Apply preset, config file and flags in that order, then validate (no data touched yet)."""
    values = {}
    if args.config:
        try:
            with open(args.config) as fh:
                file_values = json.load(fh)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--config {args.config}: cannot read a JSON config ({e})") from None
        if not isinstance(file_values, dict):
            raise ConfigError(f"--config {args.config}: expected a JSON object of config values")
        values.update(file_values)
    preset = args.preset or values.get("preset", "default")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    resolved = {**PRESETS[preset], **values, "preset": preset}
    names = {f.name for f in fields(Config)}
    flags = {k: v for k, v in vars(args).items() if k in names and k != "preset"}
    resolved.update(flags)
    cfg = Config.from_dict(resolved)
    check_arch_args(cfg, set(flags))
    if not cfg.data_dir:
        cfg.data_dir = os.environ.get(DATA_ENV, "")
    return cfg.validate()


def check_arch_args(cfg: Config, given: set):
    """Reject a flag of another architecture's argument (e.g. --nf with --arch dilated), which would be
    ignored silently; checked before any data is read. Config files and presets may hold every
    architecture's arguments (a saved config does): only the architecture's own are used."""
    if cfg.arch not in ARCHITECTURES:
        return
    own = set(arch_arg_names(cfg.arch))
    foreign = sorted(n for n in given & {n for a in ARCHITECTURES for n in arch_arg_names(a)} if n not in own)
    if foreign:
        flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
        raise ConfigError(f"{flags}: not an argument of --arch {cfg.arch} (its arguments: "
                          f"{', '.join('--' + n.replace('_', '-') for n in arch_arg_names(cfg.arch))})")


# what a saved config holds about where a run ran and wrote, not about its recipe
NOT_RECIPE = ("data_dir", "out_dir", "run_name", "device", "precision", "threads", "workers", "cache_mb", "compile",
              "log_every", "preset", "init_from", "branch_from")


def flag_words(name: str, value) -> str:
    """How one config value is written on the command line: --crop 128, --prefill / --no-prefill."""
    flag = "--" + name.replace("_", "-")
    return (flag if value else "--no-" + flag[2:]) if isinstance(value, bool) else f"{flag} {value}"


def recipe_command(values: dict) -> str:
    """The main.py command line that trains a saved config's recipe: its data, its preset and every recipe value
    that differs from that preset (another architecture's arguments, unused, are left out)."""
    preset = values.get("preset", "default")
    base = {**Config().to_dict(), **PRESETS.get(preset, {})}
    foreign = {n for a in ARCHITECTURES for n in arch_arg_names(a)} - set(arch_arg_names(values.get("arch", "")))
    words = ["python main.py --data-dir", str(values.get("data_dir", ""))] + (
        [f"--preset {preset}"] if preset != "default" else [])
    for k, v in values.items():
        if k not in base or k in NOT_RECIPE or k in foreign or v == base[k]:
            continue
        words.append(flag_words(k, v))
    return " ".join(words)


def format_config(cfg: Config) -> str:
    return "\n".join(f"  {k:<16} {v}" for k, v in cfg.to_dict().items())


# --- device and precision: the one place that decides them ---

@dataclass
class Runtime:
    device: torch.device
    amp_dtype: "torch.dtype | None"  # autocast dtype, None for fp32
    scaler: "torch.amp.GradScaler | None"  # only for fp16
    channels_last: bool

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of the units that make bf16 autocast fast


def cpu_description() -> str:
    """'Intel(R) Xeon(R) Processor, 2 cores, amx_bf16 avx512_bf16': the CPU's model name and its bf16 units (or
    'no bf16 units'), for logs and benchmarks; figures from different CPUs do not compare."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    import platform
    units = " ".join(f for f in BF16_FLAGS if f in flags) or ("no bf16 units" if flags else "bf16 units unknown")
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores, {units}"


def cpu_has_bf16() -> bool:
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((check and check()) or (amx and amx()))


def choose_runtime(device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Runtime:
    """Pick device (CUDA > MPS > CPU for auto) and autocast precision that is fast and safe there."""
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: CUDA is not available on this machine (use --device cpu)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: MPS is not available on this machine (use --device cpu)")
    if precision == "auto":
        if dev.type == "cpu":  # bf16 autocast runs 1.8-3x fp32 where the units exist, ~500x slower where emulated
            precision = "bf16" if cpu_has_bf16() else "fp32"
        elif dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:  # MPS autocast support varies by macOS/torch version; fp32 is the safe choice
            precision = "fp32"
    if precision == "fp16" and dev.type == "cpu":
        raise ConfigError("--precision fp16 is not supported on CPU (use bf16 or fp32)")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(dev.type) if dtype is torch.float16 else None
    return Runtime(dev, dtype, scaler, channels_last)


def device_description(device: torch.device) -> str:
    """The CPU (model and bf16 units) or the GPU's name: which machine a figure or a run came from."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_description() if device.type == "cpu" else device.type
