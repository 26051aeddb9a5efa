"""Train the GAN face inpainter.

    python main.py --data-dir ../shared/data_celeb               # default recipe
    python main.py --preset tiny --data-dir DIR                  # seconds-long smoke run
    python main.py --resume out/RUN                              # continue a stopped run
    python main.py --branch-from out/RUN/last.pt --w-adv 0 ...   # a new run that starts as a copy of RUN

Every flag is a field of config.Config (python main.py --help lists them).
"""
import copy
import csv
import functools
import json
import math
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from checkpoints import (TrainingState, atomic_save, build_discriminator, build_generator,
                         load_checkpoint, load_generator, model_args, saved_model_args)
from config import (Config, ConfigError, UserError, atomic_write, build_parser, choose_runtime, cpu_has_bf16,
                    device_description, flag_words, format_config, make_folder, resolve_config, write_text)
from dataset import DataError, augment, open_splits, random_crops, resolve_data_dir, split_files
from distributed import Distributed
from baselines import mean_fill
from evaluation import evaluate_baseline, evaluate_generator
from losses import RECONSTRUCTION, Adversarial, adversarial_part, reconstruction_losses
from masks import dilate, fixed_masks, rng_for, training_holes
from metrics import METRICS
from models import count_parameters, from_unit_range, inpaint, parameter_table, to_model_range, to_unit_range
from plots import masked_view, save_grid, save_training_plot

# Flags that may change when resuming: they affect speed or length, not what one step computes.
RESUMABLE_OVERRIDES = {"epochs", "max_minutes", "device", "precision", "threads", "workers", "cache_mb", "log_every",
                       "data_dir", "compile", "channels_last"}


def train_keys(gan: "Adversarial | None") -> tuple:
    """The running means logged per epoch: the GAN's active terms (when it is on) and every RECONSTRUCTION term."""
    return (gan.keys if gan is not None else ()) + tuple(RECONSTRUCTION)


class TrainingStopped(RuntimeError):
    """Training ended early on purpose (signal, or too many bad steps); last.pt is consistent."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


WARM_WINDOWS = 3  # log windows that only set the divergence guard's level
LEVEL_DECAY = 0.9  # the level is an exponential mean of the windows: it follows a falling loss within ~10 windows


@dataclass
class DivergenceGuard:
    """Watches the training loss between validations, which a diverging run can pass in its first minutes:
    a log window (cfg.log_every steps) whose mean hole L1 is over `jump` times the running level of the windows
    before it is a divergence. Keeps the training state (on the CPU) as of the window before the last that
    passed: a runaway's first steps can pass a window (blur-v1's, at 2.8x the level, ended on broken weights),
    so the run stops with a last.pt from before the jump's window and the one before it."""
    jump: float
    level: float = 0.0
    windows: int = 0
    snapshot: tuple = ()  # (checkpoint dict, step) written to last.pt when the run stops on a guard
    newest: tuple = ()  # (checkpoint dict, step) of the last window that passed: the next snapshot once another passes

    def keep(self, state: dict, where: str):
        """A window passed at `where`: its state waits one window; the state it replaces becomes the snapshot
        (none after the first window since the start or the last save: last.pt, if any, is then the older one)."""
        if self.newest:
            self.snapshot = self.newest
        self.newest = (state, where)

    def saved(self):
        """last.pt was just written: it is newer than anything kept, which must never replace it."""
        self.snapshot = self.newest = ()

    def jumped(self, l1: float) -> bool:
        """True when this window's l1 left the level (or is not finite); otherwise it joins the level."""
        if not math.isfinite(l1) or (self.jump and self.windows >= WARM_WINDOWS and l1 > self.jump * self.level):
            return True
        self.level = l1 if self.windows == 0 else LEVEL_DECAY * self.level + (1 - LEVEL_DECAY) * l1
        self.windows += 1
        return False


def cpu_copy(obj):
    """A deep copy of a checkpoint dict with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class StopFlag:
    """First SIGINT/SIGTERM asks to stop after the current step; a second one exits at once.

    Exiting at once is safe because checkpoints are only ever replaced by an atomic rename.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            print(f"\nsecond {signal.Signals(signum).name}: exiting now (checkpoints on disk are intact)",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step and saving last.pt "
              "(press Ctrl-C again to exit at once)", file=sys.stderr, flush=True)


def all_finite(loss: torch.Tensor) -> bool:
    return bool(torch.isfinite(loss))


def discriminator_step(gan: Adversarial, d, opt_d, real, composite, mask, rt, clip: float = 0.0,
                       finite=all_finite) -> "dict | None":
    """One discriminator update: real images -> real, composites (detached: no gradient reaches the
    generator) -> fake, plus its penalties. Returns the detached logged values, or None when the loss was
    NaN/inf (then nothing changed)."""
    with rt.autocast():
        loss_d, values = gan.discriminator_loss(d, real, composite, mask)
    if not finite(loss_d):
        return None
    opt_d.zero_grad(set_to_none=True)
    backward_and_step(loss_d, opt_d, rt, clip)
    return {k: v.detach() for k, v in values.items()}


def reconstruction_region(cfg: Config, mask: torch.Tensor) -> torch.Tensor:
    """B, 1, H, W: where the reconstruction losses look (the hole and its context ring, or every pixel)."""
    return dilate(mask, cfg.ring) if cfg.loss_region == "hole_ring" else torch.ones_like(mask)


def reconstruction_weights(cfg: Config, mask: torch.Tensor, adv_scale: float,
                           weights: "torch.Tensor | None" = None) -> torch.Tensor:
    """B, 1, H, W: the reconstruction region, its hole pixels weighted down towards cfg.gan_hole_weight as the
    adversarial schedule rises (called only with the GAN on: the twin keeps the full pixel loss); with weights
    (B, 1, 1, 1 from Adversarial.sample_weights) each sample's only that share of the way."""
    share = adv_scale if weights is None else adv_scale * weights
    hole_weight = 1.0 + share * (cfg.gan_hole_weight - 1.0)
    region = reconstruction_region(cfg, mask)
    if not torch.is_tensor(hole_weight) and hole_weight == 1.0:
        return region
    return region - (1.0 - hole_weight) * mask  # the hole lies inside the region


def generator_step(gan: "Adversarial | None", d, opt_g, raw, composite, batch, mask, cfg: Config, rt, adv_scale: float,
                   finite=all_finite, weights: "torch.Tensor | None" = None) -> "dict | None":
    """One generator update on the weighted RECONSTRUCTION terms (over hole + ring, or the whole image) plus,
    with the GAN, its generator terms at adv_scale (the schedule's share, 0-1) of their configured weights, each
    sample's by its weight (B, 1, 1, 1 from gan.sample_weights, or None for 1 each).
    Returns the detached logged values, or None when the loss was NaN/inf (then nothing changed)."""
    region = reconstruction_region(cfg, mask) if gan is None else reconstruction_weights(cfg, mask, adv_scale, weights)
    loss_g, values = reconstruction_losses(raw, batch, region, mask, cfg)
    if gan is not None:
        adv = {k: torch.zeros((), device=batch.device) for k in gan.g_terms}
        if adv_scale > 0:
            # The discriminator is frozen for this step (its weights get no gradient from the generator's
            # loss); the plain module, not its DDP wrapper, since DDP expects every forward to backward.
            plain_d = getattr(d, "module", d)
            plain_d.requires_grad_(False)
            with rt.autocast():
                loss_adv, adv = gan.generator_loss(plain_d, batch, composite, mask, adv_scale, weights)
            plain_d.requires_grad_(True)
            loss_g = loss_g + loss_adv
        values = {**adv, **values}
    if not finite(loss_g):
        return None
    opt_g.zero_grad(set_to_none=True)
    backward_and_step(loss_g, opt_g, rt, cfg.grad_clip)
    return {k: v.detach() for k, v in values.items()}


def train_step(batch, mask, nets, opts, gan: "Adversarial | None", cfg: Config, rt, finite=all_finite,
               adv_scale: float = 1.0, kinds: "list | None" = None) -> "dict | None":
    """The generator's output computed once; with the GAN (gan, built once by build_state; d and opt_d are
    None without it) one discriminator update while the schedule's adv_scale is > 0, then one generator update
    (its GAN terms per sample by the holes' kinds, when given and --gan-kind-weights names them).
    Returns detached losses on the device (train_keys(gan)), or None when a loss was NaN/inf. Under DDP,
    `finite` asks every rank, so all of them skip together; nets may be DDP-wrapped."""
    g, d = nets
    opt_g, opt_d = opts
    with rt.autocast():
        raw, composite = inpaint(g, batch, mask)  # float32: losses in fp32
    d_values = {}
    if gan is not None:
        d_values = {k: torch.zeros((), device=batch.device) for k in gan.d_terms}
        if adv_scale > 0:
            d_values = discriminator_step(gan, d, opt_d, batch, composite, mask, rt, cfg.grad_clip, finite)
            if d_values is None:
                return None
    weights = None if gan is None else gan.sample_weights(kinds, batch.device)
    out = generator_step(gan, d, opt_g, raw, composite, batch, mask, cfg, rt, adv_scale, finite, weights)
    return None if out is None else {**out, **d_values}


def learning_rate_factor(cfg: Config, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rates at global step `step` of `total_steps`: a linear warm-up over
    cfg.warmup_steps, times the schedule.

    Computed from the step count rather than kept as scheduler state, so resuming (even with a new
    --epochs, which stretches the remaining schedule) needs nothing saved."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step / total_steps, 1.0)))
    return warm


def adversarial_scale(cfg: Config, progress: float) -> float:
    """The schedule's share (0-1) of the adversarial terms' configured weights (cfg.w_adv, cfg.w_fm) at
    `progress` (0 -> 1) through the run: 0 before cfg.adv_start (the reconstruction warm-up), then rising
    linearly to 1 over cfg.adv_ramp."""
    if progress < cfg.adv_start:
        return 0.0
    return min(1.0, (progress - cfg.adv_start) / cfg.adv_ramp) if cfg.adv_ramp else 1.0


def ema_decay(cfg: Config, step: int) -> float:
    """The averaging decay at global step `step`: ramps up as (1 + step) / (10 + step) to cfg.ema, so
    the average forgets the random initial weights within the first few hundred steps."""
    return min(cfg.ema, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float):
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (the generator has no buffers)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def backward_and_step(loss, opt, rt, clip: float = 0.0):
    """Backward, optionally clip the gradient norm of opt's parameters to `clip`, step (fp16: scaled)."""
    params = [p for group in opt.param_groups for p in group["params"]]
    if rt.scaler is None:
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    else:
        rt.scaler.scale(loss).backward()
        if clip:
            rt.scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(params, clip)
        rt.scaler.step(opt)
        rt.scaler.update()


def write_metrics_csv(history: list, path: str):
    """Every row under one header: the columns of all rows in order of first appearance (a column added
    during a run, e.g. validation LPIPS once its weights are installed, is empty in the rows before it)."""
    def write(tmp: str):
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
            writer.writeheader()
            writer.writerows(history)
    atomic_write(path, write)


def append_csv_row(path: str, row: dict):
    """One row appended to a CSV log under the file's header (a column it lacks stays empty: a twin without the
    GAN's columns appending to its GAN parent's log); a row with a column the header lacks rewrites the file
    under the union of both."""
    header = []
    if os.path.exists(path):
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
    if header and not set(row) <= set(header):
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        write_metrics_csv(rows + [row], path)
        return
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header or list(row))
        if not header:
            writer.writeheader()
        writer.writerow(row)


def copy_csv_log(source: str, path: str, images: int):
    """steps.csv of a branch: the copied run's rows up to the images it had seen at the branch point."""
    if os.path.exists(source):
        shutil.copyfile(source, path)
        trim_csv_log(path, images)


def trim_csv_log(path: str, images: int):
    """Drop the rows of steps.csv past `images` (steps a killed process logged after its last checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in rows if int(r["images"]) <= images]
    if len(kept) < len(rows):
        write_metrics_csv(kept, path) if kept else os.remove(path)


def make_run_dir(cfg: Config) -> tuple:
    """(run folder, whether this call created it)."""
    name = cfg.run_name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(cfg.out_dir, name)
    created = not os.path.exists(run_dir)
    if os.path.exists(os.path.join(run_dir, "last.pt")):
        raise ConfigError(f"run folder {run_dir} already holds a run: use --resume {run_dir} "
                          "or choose another --run-name")
    make_folder(run_dir, f"the run folder {run_dir} (--out-dir)")
    try:
        probe = os.path.join(run_dir, ".write_test")
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"cannot write the run folder {run_dir}: {e.strerror}; "
                          "choose a writable --out-dir") from None
    return run_dir, created


def remove_if_no_checkpoint(run_dir: str):
    """A start that failed before its first checkpoint leaves nothing behind (config.json and split.json only)."""
    if os.path.isdir(run_dir) and not any(f.endswith(".pt") for f in os.listdir(run_dir)):
        shutil.rmtree(run_dir, ignore_errors=True)


def write_json(obj, path: str):
    write_text(path, json.dumps(obj, indent=2))


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def first_steps_line(cfg: Config, dist: Distributed, images_per_s: float, launched: float, steps_left: int) -> str:
    """What the first steps measured: when training started, its speed, and the run's length at that speed."""
    left = steps_left * cfg.batch_size / max(images_per_s, 1e-9)  # every process takes its batch per step
    budget = f"; --max-minutes stops it after {duration(60 * cfg.max_minutes)}" if cfg.max_minutes else ""
    return (f"training started {time.perf_counter() - launched:.0f} s after launch at {images_per_s * dist.world:.2f} "
            f"img/s: {steps_left:,} steps of {cfg.batch_size * dist.world} left, about {duration(left)} at this speed"
            f"{budget} (validation extra; measured on this machine as loaded now)")


def log(dist: Distributed, *args, **kw):
    """print on rank 0 only."""
    if dist.is_main:
        print(*args, **kw, flush=True)


def prepare_run(cfg: Config, dist: Distributed, run_dir: "str | None", resume: "dict | None") -> tuple:
    """(run folder, split, whether the folder is new): rank 0 creates it and writes config.json and split.json.
    A branch (resume without a run folder) takes the split of the run it copies."""
    if resume:
        source = run_dir or os.path.dirname(os.path.abspath(cfg.branch_from))
        with open(os.path.join(source, "split.json")) as fh:
            split = json.load(fh)
    else:  # read the data first: a start that fails on it leaves no run folder behind
        split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, cfg.max_images, cfg.image_size)
    created, branch = False, resume is not None and run_dir is None
    if run_dir is None:
        run_dir, created = dist.broadcast(make_run_dir(cfg) if dist.is_main else None)
    split_path = os.path.join(run_dir, "split.json")
    if dist.is_main:
        write_json(cfg.to_dict(), os.path.join(run_dir, "config.json"))
        if not resume or branch:
            write_json(split, split_path)
        if branch:  # its training curve starts as the copied run's
            copy_csv_log(os.path.join(source, "steps.csv"), os.path.join(run_dir, "steps.csv"), resume["images_seen"])
    return run_dir, split, created


def load_data(cfg: Config, split: dict, dist: Distributed) -> tuple:
    """(training ImageSource, fixed validation images, their fixed holes)."""
    log(dist, f"data: {cfg.data_dir} -> train/val/test = {len(split['train'])}/{len(split['val'])}/{len(split['test'])}")
    t0 = time.perf_counter()
    sources = open_splits(cfg, split, ("train", "val"))
    train_src = sources["train"]
    where = "streaming from disk" if train_src.cache is None else (
        "RAM cache, filled as the first epoch reads it" if train_src.filled is not None else "RAM cache")
    log(dist, f"images opened in {time.perf_counter() - t0:.1f}s ({where})")
    if len(train_src) < cfg.batch_size * dist.world:
        raise DataError(f"the training split has {len(train_src)} images, fewer than --batch-size {cfg.batch_size}"
                        f" x {dist.world} processes")
    n_val = len(sources["val"]) if not cfg.max_val_images else min(cfg.max_val_images, len(sources["val"]))
    return train_src, sources["val"].take(n_val), fixed_masks(cfg, n_val, "val")


def train(cfg: Config, run_dir: "str | None" = None, resume: "dict | None" = None,
          on_epoch=None) -> dict:
    """Train per cfg into run_dir (a new folder when None); resume from a loaded last.pt dict.

    Under torchrun (WORLD_SIZE > 1) every process trains on its share of each epoch with
    DistributedDataParallel (batch_size per process); rank 0 alone writes, prints and validates.
    on_epoch(epoch, row) is called after each validation (tune.py uses it for pruning).
    Returns the final history row plus the run folder.
    """
    launched = time.perf_counter()
    rt = choose_runtime(cfg.device, cfg.precision, cfg.channels_last)
    dist = Distributed(rt.device.type)
    rt.device = dist.device(rt.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    created, lock = False, None
    try:
        lock = run_dir and hold_run_folder(run_dir, dist)  # a resume: before anything in the folder is touched
        run_dir, split, created = prepare_run(cfg, dist, run_dir, resume)
        lock = lock or hold_run_folder(run_dir, dist)
        log(dist, f"run folder: {run_dir}\ndevice {rt.device} ({device_description(rt.device)}), precision "
                  f"{rt.precision}, channels_last "
                  f"{rt.channels_last}, threads {torch.get_num_threads()}, processes {dist.world}\n"
                  f"config:\n{format_config(cfg)}")
        train_src, val_images, val_masks = load_data(cfg, split, dist)
        return _train_loop(cfg, rt, dist, run_dir, train_src, val_images, val_masks, resume, on_epoch, launched)
    except BaseException:
        if created and dist.is_main:
            remove_if_no_checkpoint(run_dir)
        raise
    finally:
        if lock:
            lock.close()
        dist.close()


def hold_run_folder(run_dir: str, dist: Distributed):
    """An exclusive lock on the run folder (rank 0) for as long as this process trains there, or a UserError
    naming the process that holds it: a second process resuming a running run would trim its training log
    and race its checkpoints. The lock ends with the process, however it ends. None where there are no locks."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    if not dist.is_main:
        return None
    fh = open(os.path.join(run_dir, ".training.lock"), "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        pid = fh.read().strip()
        fh.close()
        raise UserError(f"{run_dir} is being trained by another process{f' (pid {pid})' if pid else ''}: let it "
                        "stop first (after Ctrl-C it finishes its step and saves last.pt), then resume") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def initial_weights(cfg: Config) -> dict:
    """The generator weights of cfg.init_from (the moving average when it kept one), in fp32; its network
    must be the one cfg builds."""
    source, _, ckpt = load_generator(cfg.init_from)
    saved, built = saved_model_args(ckpt), model_args(cfg)
    if saved != built:
        fix = " ".join(flag_words(k, v) for k, v in saved.items() if built.get(k) != v)
        raise ConfigError(f"--init-from {cfg.init_from}: its generator is {saved}, this run builds {built}; "
                          f"pass the matching --arch and its arguments ({fix})")
    return {k: v.float() for k, v in source.state_dict().items()}


def build_state(cfg: Config, rt, dist: Distributed, resume: "dict | None") -> TrainingState:
    """The networks (the same initial weights on every rank), their optimizers and the moving average,
    restored from `resume` when given."""
    torch.manual_seed(cfg.seed)
    g = build_generator(cfg)
    if cfg.init_from and not resume:  # a resume has its own weights
        g.load_state_dict(initial_weights(cfg))
    g = g.to(rt.device, memory_format=rt.memory_format())
    log(dist, "generator parameters: " + ", ".join(f"{k} {v:,}" for k, v in parameter_table(g).items()))
    gan = adversarial_part(cfg)  # the one place the GAN is switched on or off; the run follows state.gan
    d = opt_d = None  # the discriminator exists only with it
    if gan is not None:
        d = build_discriminator(cfg)
        log(dist, f"discriminator parameters: {count_parameters(d):,}")
        if dist.enabled and rt.device.type == "cuda":
            d = torch.nn.SyncBatchNorm.convert_sync_batchnorm(d)  # batch statistics over all GPUs
        d = d.to(rt.device, memory_format=rt.memory_format())
        opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    # The moving average starts as a copy of the initial weights; validation, best.pt selection and
    # inference use it (checkpoint key generator_ema) while training continues on g.
    g_ema = copy.deepcopy(g).requires_grad_(False) if cfg.ema > 0 else None
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    state = TrainingState(cfg, g, d, opt_g, opt_d, g_ema, rt.scaler, gan)
    if resume:
        state.load_state_dict(resume)
        log(dist, f"resuming at epoch {state.epoch + 1}, step {state.step_in_epoch}")
    note_machine(state, cfg, rt, dist)
    return state


def note_machine(state: TrainingState, cfg: Config, rt, dist: Distributed):
    """Record the machine and precision this sitting trains on; say so when a resume lands on another kind (bf16
    units or not), whose speed and rounding differ, and warn where the configured precision would be emulated."""
    here = f"{device_description(rt.device)}; {rt.precision}"
    if state.machines[-1:] != [here]:
        if state.machines:
            how = "picked by --precision auto for this machine" if cfg.precision == "auto" else "as configured"
            log(dist, f"this run trained on {state.machines[-1]} and goes on on {here} ({how}): epoch timings from "
                      "here on are this machine's, and the steps are not bit-identical to a resume on the first one")
        state.machines.append(here)
    if rt.device.type == "cpu" and rt.precision == "bf16" and not cpu_has_bf16():
        log(dist, "warning: this CPU has no bf16 units, so bf16 autocast is emulated (~500x slower than where it "
                  "has them): stop with Ctrl-C and resume with --precision auto (fp32 here)")


@dataclass
class Run:
    """What every epoch of one training run shares."""
    cfg: Config
    rt: object
    dist: Distributed
    run_dir: str
    train_src: object
    state: TrainingState
    launched: float
    stop: "StopFlag | None" = None
    nets: tuple = ()  # (generator, discriminator) as stepped: compiled and/or DDP-wrapped
    finite: object = all_finite
    mean_fill_psnr: "float | None" = None  # the collapse guard's floor, measured at the first validation
    timed_from: tuple = ()  # (time, images) after this process's first step, for the first speed estimate
    lpips: "torch.nn.Module | None" = None  # validation LPIPS (rank 0; None when off or not installed)

    def __post_init__(self):
        self.start_epoch = self.state.epoch  # the epoch this process started (or resumed) in
        self.start_step = self.state.step_in_epoch  # and the step in it (0 unless resumed mid-epoch)
        self.started, self.seconds_before = time.perf_counter(), self.state.train_seconds
        if self.dist.is_main:
            trim_csv_log(os.path.join(self.run_dir, "steps.csv"), self.state.images_seen)
        # Compiling the generator alone: compiling the whole step trips an inductor stride assertion in
        # replication_pad2d_backward (torch 2.13, channels_last). Wrappers share g's and d's parameters.
        g = torch.compile(self.state.g) if self.cfg.compile else self.state.g
        d = self.state.d
        if self.dist.enabled:
            ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
            g = torch.nn.parallel.DistributedDataParallel(g, device_ids=ids)
            d = d and torch.nn.parallel.DistributedDataParallel(d, device_ids=ids)
            self.finite = lambda loss: self.dist.all_true(bool(torch.isfinite(loss)), self.rt.device)
        self.nets = (g, d)
        self.keys = train_keys(self.state.gan)
        self.steps_per_epoch = len(self.train_src) // (self.cfg.batch_size * self.dist.world)
        self.last_path = os.path.join(self.run_dir, "last.pt")
        self.resume_cmd = f"python main.py --resume {shlex.quote(self.run_dir)}"
        self.guard = DivergenceGuard(self.cfg.loss_jump)

    def checkpoint(self, epoch: int, step_in_epoch: int, partial: "dict | None" = None) -> dict:
        self.state.epoch, self.state.step_in_epoch, self.state.partial = epoch, step_in_epoch, partial or {}
        self.state.train_seconds = self.elapsed()
        return self.state.state_dict(self.dist.world)

    def save(self, path: str, epoch: int, step_in_epoch: int, partial: "dict | None" = None):
        atomic_save(self.checkpoint(epoch, step_in_epoch, partial), path)
        if path == self.last_path:
            self.guard.saved()

    def keep_snapshot(self) -> str:
        """Before stopping on a guard: write the divergence guard's last healthy state to last.pt (rank 0) and
        say what last.pt now holds."""
        if not self.guard.snapshot:
            return (f"{self.last_path} holds the last checkpoint saved before it" if os.path.exists(self.last_path)
                    else "no checkpoint was written (the run had not passed two log windows yet)")
        state, where = self.guard.snapshot
        if self.dist.is_main:
            atomic_save(state, self.last_path)
        return f"{self.last_path} holds the run as of {where}, before it"

    def elapsed(self) -> float:
        """Seconds this run has trained (steps, validation, saving), over every process that resumed it."""
        return self.seconds_before + time.perf_counter() - self.started

    def should_stop(self) -> bool:
        """A signal arrived, or --max-minutes of training are spent (the same on every rank)."""
        late = bool(self.cfg.max_minutes) and self.elapsed() >= 60 * self.cfg.max_minutes
        return self.dist.any_true(self.stop.signum is not None or late, self.rt.device)

    def stopped(self, where: str) -> TrainingStopped:
        if self.stop.signum is None:  # the time budget
            return TrainingStopped(f"--max-minutes {self.cfg.max_minutes:g} reached after {where} "
                                   f"({duration(self.elapsed())} trained); saved {self.last_path}. Continue with:\n"
                                   f"  {self.resume_cmd} --max-minutes MORE", 0)
        signum = self.stop.signum
        return TrainingStopped(f"stopped by {signal.Signals(signum).name} after {where}; saved {self.last_path}. "
                               f"Resume with:\n  {self.resume_cmd}", 128 + signum)


def training_input(cfg: Config, rt, batch, rng, crop: "int | None" = None) -> tuple:
    """(images in [-1, 1], holes, the holes' kinds) of one step from a uint8 batch: augmented, holes drawn on
    the whole image, then with a crop (default cfg.crop) the same random window of both (B, 3 | 1, crop, crop),
    in the run's memory format; kinds: a list of B of square, boxes, strokes."""
    crop = cfg.crop if crop is None else crop
    x = augment(to_model_range(batch, rt.device, rt.memory_format()), rng, cfg.hflip, cfg.color_jitter)
    m, kinds = training_holes(cfg, len(x), rng)
    m = m.to(rt.device)
    if crop:
        x, m = random_crops(x, m, crop, rng)
    return (*(t.contiguous(memory_format=rt.memory_format()) for t in (x, m)), kinds)


def training_step(run: Run, epoch: int, step: int, batch) -> "dict | None":
    """Holes, augmentation and learning rate of this step (pure functions of seed, epoch, step, rank), one
    update, and the moving average; None when the step was skipped for a NaN/inf loss."""
    cfg, rt, state = run.cfg, run.rt, run.state
    rng = rng_for(cfg.seed, epoch, step, run.dist.rank) if run.dist.enabled else rng_for(cfg.seed, epoch, step)
    global_step, total = epoch * run.steps_per_epoch + step, cfg.epochs * run.steps_per_epoch
    x, m, kinds = training_input(cfg, rt, batch, rng, cfg.crop if global_step < cfg.crop_fraction * total else 0)
    factor = learning_rate_factor(cfg, global_step, total)
    for opt, base in ((state.opt_g, cfg.lr_g), (state.opt_d, cfg.lr_d)):
        for group in opt.param_groups if opt is not None else ():
            group["lr"] = base * factor
    out = train_step(x, m, run.nets, (state.opt_g, state.opt_d), state.gan, cfg, rt, run.finite,
                     adversarial_scale(cfg, global_step / total), kinds)
    if out is not None and state.g_ema is not None:
        update_ema(state.g_ema, state.g, ema_decay(cfg, global_step))
    return out


def count_bad_step(run: Run, step: int, epoch: int, consecutive: int, bar):
    run.state.bad_steps += 1
    if run.dist.is_main:
        tqdm.write(f"step {step} of epoch {epoch + 1}: NaN/inf loss, update skipped "
                   f"({consecutive} in a row, {run.state.bad_steps} in total)")
    if consecutive >= run.cfg.max_bad_steps:
        bar.close()
        raise TrainingStopped(
            f"stopping: {consecutive} consecutive steps had NaN/inf losses (--max-bad-steps "
            f"{run.cfg.max_bad_steps}); {run.keep_snapshot()}. Lower --lr-g/--lr-d or try --precision fp32 "
            "before resuming.", 3)


def watch_divergence(run: Run, epoch: int, step: int, window: list, sums: dict, counts: dict, bar):
    """At the end of each log window: stop the run if its hole L1 jumped (DivergenceGuard), else keep its
    state as the guard's snapshot. window: [sum of the window's L1 (a tensor), good steps]; reset here. Every
    rank has the same good steps (the finiteness check is collective), so all take the same branch."""
    if not run.cfg.loss_jump or (step + 1) % run.cfg.log_every:
        return
    if not window[1]:  # only skipped (NaN) steps: the NaN guard's business, and no state worth keeping
        return
    l1 = run.dist.mean({"l1": window[0] / window[1]})["l1"].item()
    window[:] = [0.0, 0]
    level = run.guard.level
    if run.dist.any_true(run.guard.jumped(l1), run.rt.device):
        bar.close()
        raise TrainingStopped(
            f"stopping: the training loss jumped at step {step + 1} of epoch {epoch + 1}: hole L1 {l1:.4f} over the "
            f"last {run.cfg.log_every} steps, {l1 / max(level, 1e-12):.1f}x its running level {level:.4f} "
            f"(--loss-jump {run.cfg.loss_jump:g}): the generator is diverging. {run.keep_snapshot()}. Start a new "
            "run with a lower --lr-g, a longer --warmup-steps or --grad-clip (resuming would repeat the same steps).", 3)
    if run.dist.is_main:
        partial = {"sums": {k: v.item() for k, v in sums.items()}, "counts": dict(counts)}
        run.guard.keep(cpu_copy(run.checkpoint(epoch, step + 1, partial)), f"step {step + 1} of epoch {epoch + 1}")


def report_progress(run: Run, bar, epoch: int, step: int, done: int, seen: int, t_epoch: float, sums: dict, counts: dict):
    """Rank 0's progress: after this process's second step (the first warms up), the run's speed and
    expected length; every log_every steps the progress bar's running means and time left in the run, and a
    row of steps.csv (the training curve against images seen and minutes trained)."""
    cfg, now = run.cfg, time.perf_counter()
    steps_left = (cfg.epochs - epoch) * run.steps_per_epoch - step - 1
    if epoch == run.start_epoch and done == 1:
        run.timed_from = (now, seen)
    if epoch == run.start_epoch and done == min(2, run.steps_per_epoch):
        t0, n0 = run.timed_from if done > 1 else (t_epoch, 0)
        tqdm.write(first_steps_line(cfg, run.dist, (seen - n0) / max(now - t0, 1e-9), run.launched, steps_left))
    if (step + 1) % cfg.log_every and step + 1 != run.steps_per_epoch:
        return
    # host syncs: this, every log_every steps; and each step the finiteness check of each loss
    # (one without the GAN, two with it; an all-reduce under DDP) and the stop flag's all-reduce
    means = {k: (v / max(counts[k], 1)).item() for k, v in sums.items()}
    ips = seen / (now - t_epoch)
    gan = {"G": f"{means['gan_g']:.3f}", "D": f"{means['gan_d']:.3f}"} if run.state.gan is not None else {}
    bar.set_postfix(**gan, L1=f"{means['l1']:.4f}", ips=f"{ips:.2f}",
                    run_left=duration(steps_left * cfg.batch_size / max(ips, 1e-9)))
    append_csv_row(os.path.join(run.run_dir, "steps.csv"), {
        "epoch": epoch + 1, "step": step + 1, "images": run.state.images_seen,
        "minutes": round(run.elapsed() / 60, 3), **{k: round(v, 6) for k, v in means.items()}})


def resumed_sums(run: Run, first: int) -> tuple:
    """The running loss sums and good-step counts an epoch starts from: zeros, or after a mid-epoch resume the
    saved ones. A term the run did not log when it stopped (added to the code since) starts at this step,
    with a count of its own; a term no longer logged is dropped."""
    device, keys = run.rt.device, run.keys
    saved = run.state.partial if first else {}
    sums, counts = saved.get("sums", {}), saved.get("counts") or dict.fromkeys(saved.get("sums", {}), saved.get("good", 0))
    return ({k: torch.tensor(float(sums.get(k, 0.0)), device=device) for k in keys},
            {k: int(counts.get(k, 0)) for k in keys})


def train_epoch(run: Run, epoch: int, first: int) -> tuple:
    """Steps `first`.. of one epoch; (mean training losses, images seen, seconds). A signal stops it after
    the current step with last.pt saved (raises TrainingStopped)."""
    cfg, dist, state = run.cfg, run.dist, run.state
    for net in run.nets:
        if net is not None:
            net.train()
    order = dist.epoch_order(len(run.train_src), cfg.seed, epoch)
    sums, counts = resumed_sums(run, first)
    consecutive_bad, window = 0, [0.0, 0]
    bar = tqdm(total=run.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               dynamic_ncols=True, mininterval=1.0, file=sys.stdout, disable=not dist.is_main)
    t_epoch, seen = time.perf_counter(), 0
    for step, batch in enumerate(run.train_src.batches(order[first * cfg.batch_size:], cfg.batch_size, True),
                                 start=first):
        out = training_step(run, epoch, step, batch)
        if out is None:
            consecutive_bad += 1
            count_bad_step(run, step, epoch, consecutive_bad, bar)
        else:
            consecutive_bad = 0
            window[0], window[1] = window[0] + out["l1"], window[1] + 1
            for k in run.keys:
                sums[k] += out[k]
                counts[k] += 1
        seen += len(batch)
        state.images_seen += len(batch) * dist.world
        bar.update(1)
        if dist.is_main:
            report_progress(run, bar, epoch, step, step + 1 - first, seen, t_epoch, sums, counts)
        watch_divergence(run, epoch, step, window, sums, counts, bar)
        if run.should_stop():  # every rank stops after the same step
            bar.close()
            partial = {"sums": {k: v.item() for k, v in dist.mean(sums).items()}, "counts": counts}
            if dist.is_main:
                run.save(run.last_path, epoch, step + 1, partial)
            dist.barrier()  # torchrun ends the other workers once one exits: let rank 0 finish saving
            raise run.stopped(f"step {step + 1} of epoch {epoch + 1}")
    bar.close()
    means = dist.mean({k: v / max(counts[k], 1) for k, v in sums.items()})
    return {f"train_{k}": v.item() for k, v in means.items()}, seen, time.perf_counter() - t_epoch


def validate(run: Run, epoch: int, val_images, val_masks, train_means: dict, seen: int, seconds: float) -> tuple:
    """(metrics row, validation outputs) of the moving average (else the generator) on the fixed holes."""
    state, critic = run.state, None
    if run.cfg.collapse_db and run.mean_fill_psnr is None:
        run.mean_fill_psnr = float(evaluate_baseline(mean_fill, val_images, val_masks)["psnr"].mean())
        print(f"collapse guard: mean fill scores {run.mean_fill_psnr:.2f} dB on the validation holes", flush=True)
    if state.gan is not None:
        state.d.eval()
        critic = functools.partial(state.gan.scores, state.d)
    val = evaluate_generator(state.g_ema if state.g_ema is not None else state.g, val_images, val_masks, run.rt,
                             run.cfg.batch_size, critic=critic, keep_outputs=True)
    if run.lpips is not None:  # the first images, the same every epoch
        k = min(run.cfg.val_lpips_images, len(val_images))
        with torch.no_grad():
            val["lpips"] = run.lpips(from_unit_range(val["composite"][:k]), to_model_range(val_images[:k]))
    gan = {f"val_{k}": val[k] for k in ("gan_g", "gan_d")} if state.gan is not None else {}
    row = {"epoch": epoch + 1, **train_means, **gan,
           **{f"val_{k}": float(val[k].mean()) for k in ("l1", "edge", "ssim", "psnr", "seam", "lpips") if k in val},
           **({} if val["grid"].isnan().all() else {"val_grid": float(val["grid"].nanmean())}),  # over holes large enough to show a lock
           "train_images_per_s": seen * run.dist.world / seconds, "seconds": seconds}
    gan_text = f"G {row['val_gan_g']:.3f}  D {row['val_gan_d']:.3f}  " if gan else ""
    lpips_text = f"LPIPS {row['val_lpips']:.4f}  " if "val_lpips" in row else ""
    grid_text = f"grid {row['val_grid']:.2f}  " if "val_grid" in row else ""
    print(f"epoch {epoch + 1}: val hole L1 {row['val_l1']:.4f}  PSNR {row['val_psnr']:.2f} dB  "
          f"SSIM {row['val_ssim']:.4f}  edge {row['val_edge']:.4f}  {grid_text}{lpips_text}{gan_text}"
          f"({row['train_images_per_s']:.2f} img/s)", flush=True)
    return row, val


def collapse_message(cfg: Config, history: list, row: dict, mean_fill_psnr: "float | None") -> str:
    """Why the run collapsed ('' when it did not): validation hole PSNR fell below mean fill's after an
    earlier epoch beat mean fill by cfg.collapse_db. Finite losses hide such a collapse from the NaN guard
    (docs/experiments.md: mixed holes at lr 1e-3 went to a constant output in epoch 7)."""
    if not cfg.collapse_db or mean_fill_psnr is None or not history:
        return ""
    best = max(h["val_psnr"] for h in history)
    if best < mean_fill_psnr + cfg.collapse_db or row["val_psnr"] >= mean_fill_psnr:
        return ""
    return (f"stopping: validation hole PSNR fell to {row['val_psnr']:.2f} dB, below mean fill's "
            f"{mean_fill_psnr:.2f} dB, after reaching {best:.2f} dB: the generator collapsed (--collapse-db "
            f"{cfg.collapse_db}).")


def write_epoch(run: Run, epoch: int, row: dict, val: dict, val_images, val_masks):
    """metrics.csv, the training plot, the sample grid, last.pt and (when validation improved) best.pt.
    When validation collapsed, the outputs show it but no checkpoint is written and the run stops."""
    cfg, state, run_dir = run.cfg, run.state, run.run_dir
    collapsed = collapse_message(cfg, state.history, row, run.mean_fill_psnr)
    state.history.append(row)
    write_metrics_csv(state.history, os.path.join(run_dir, "metrics.csv"))
    save_training_plot(state.history, os.path.join(run_dir, "training_plot.png"))
    k = min(cfg.grid_images, len(val_images))
    originals = to_unit_range(val_images[:k])
    os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
    save_grid({"original": originals, "masked": masked_view(originals, val_masks[:k]),
               "generated": val["raw"][:k], "inpainted": val["composite"][:k]},
              os.path.join(run_dir, "samples", f"epoch_{epoch + 1:03d}.png"))
    if collapsed:  # last.pt is where this sitting began when it resumed mid-epoch, else the previous epoch's end
        held = f"step {run.start_step} of epoch {epoch + 1}" if epoch == run.start_epoch and run.start_step else f"epoch {epoch}"
        raise TrainingStopped(f"{collapsed} {run.last_path} still holds {held} (before the collapse) and "
                              "best.pt the best epoch; start a new run with a lower --lr-g, a --warmup-steps or "
                              "--grad-clip (resuming would repeat the same steps).", 4)
    improved = METRICS[cfg.best_metric].better(row[f"val_{cfg.best_metric}"], state.best)
    if improved:
        state.best = row[f"val_{cfg.best_metric}"]
    run.save(run.last_path, epoch + 1, 0)
    if improved:
        run.save(os.path.join(run_dir, "best.pt"), epoch + 1, 0)
    if gan_starts_next(run, epoch):  # the twin's branch point: --branch-from RUN/gan_start.pt --w-adv 0
        run.save(os.path.join(run_dir, "gan_start.pt"), epoch + 1, 0)


def gan_starts_next(run: Run, epoch: int) -> bool:
    """Whether the adversarial terms, still off at the end of `epoch` (0-based), act during the next one."""
    if run.state.gan is None:
        return False
    total = run.cfg.epochs * run.steps_per_epoch
    scale_at_end = lambda e: adversarial_scale(run.cfg, ((e + 1) * run.steps_per_epoch - 1) / total)  # noqa: E731
    return scale_at_end(epoch) == 0 < scale_at_end(epoch + 1)


def validation_lpips(cfg: Config, dist: Distributed) -> "torch.nn.Module | None":
    """The LPIPS network validation reports with (rank 0), or None: off, or its weights not installed (said
    once; an error when best.pt is chosen by it)."""
    if not cfg.val_lpips_images or not dist.is_main:
        return None
    from perceptual import LPIPS, PerceptualWeightsError
    try:
        return LPIPS("alex").eval()
    except PerceptualWeightsError as e:
        if cfg.best_metric == "lpips":
            raise
        log(dist, f"validation LPIPS off ({e})")
        return None


def _train_loop(cfg, rt, dist, run_dir, train_src, val_images, val_masks, resume, on_epoch, launched) -> dict:
    run = Run(cfg, rt, dist, run_dir, train_src, build_state(cfg, rt, dist, resume), launched,
              lpips=validation_lpips(cfg, dist))
    state = run.state
    with StopFlag() as run.stop:
        for epoch in range(run.start_epoch, cfg.epochs):
            train_means, seen, seconds = train_epoch(run, epoch, run.start_step if epoch == run.start_epoch else 0)
            stopping = run.should_stop()
            if not dist.is_main:  # rank 0 validates, writes and saves; the others wait for it
                dist.barrier()
                if stopping:
                    raise TrainingStopped("stopped with rank 0", 128 + run.stop.signum if run.stop.signum else 0)
                continue
            row, val = validate(run, epoch, val_images, val_masks, train_means, seen, seconds)
            write_epoch(run, epoch, row, val, val_images, val_masks)
            dist.barrier()
            if on_epoch is not None:
                on_epoch(epoch + 1, row)
            if stopping:
                raise run.stopped(f"epoch {epoch + 1}")
    if dist.enabled:
        log(dist, f"parameters identical across {dist.world} processes: {dist.parameters_identical(state.g)}")
    best = state.best if state.best is not None else float("nan")
    log(dist, f"done: {run_dir} (best val {cfg.best_metric} {best:.4f}); evaluate with: python results.py {run_dir}")
    return {"run_dir": run_dir, **(state.history[-1] if state.history else {})}


def branch_checkpoint(cfg: Config) -> dict:
    """The checkpoint a --branch-from run starts as; its generator must be the one cfg builds, and a GAN branch
    needs the copied run's discriminator (a reconstruction-only branch drops it)."""
    _, _, ckpt = load_generator(cfg.branch_from)
    if "opt_g" not in ckpt:
        raise ConfigError(f"--branch-from {cfg.branch_from}: not a training checkpoint (last.pt or best.pt of a run)")
    if saved_model_args(ckpt) != model_args(cfg):
        raise ConfigError(f"--branch-from {cfg.branch_from}: its generator is {saved_model_args(ckpt)}, this run "
                          f"builds {model_args(cfg)}; pass the matching --arch and its arguments")
    if adversarial_part(cfg) is not None and "discriminator" not in ckpt:
        raise ConfigError(f"--branch-from {cfg.branch_from}: it has no discriminator to go on with; branch with "
                          "--w-adv 0, or start a new run")
    return ckpt


def config_for_resume(run_dir: str, args) -> tuple:
    """The saved config of run_dir with only the overrides that keep the run consistent."""
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    cfg = Config.from_saved(ckpt["config"])
    given = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and k != "preset"}
    bad = sorted(k for k, v in given.items() if k not in RESUMABLE_OVERRIDES and v != getattr(cfg, k))
    if bad or args.preset or args.config:
        names = ", ".join("--" + k.replace("_", "-") for k in bad) or "--preset/--config"
        raise ConfigError(f"cannot change {names} when resuming {run_dir}: the run continues with its saved "
                          f"config; start a new run instead (may change: "
                          f"{', '.join('--' + k.replace('_', '-') for k in sorted(RESUMABLE_OVERRIDES))})")
    for k, v in given.items():
        setattr(cfg, k, v)
    with open(os.path.join(run_dir, "split.json")) as fh:
        split = json.load(fh)
    # the one rule: --data-dir, else $INPAINT_DATA_DIR, else the saved path; the first holding the run's images
    cfg.data_dir, _ = resolve_data_dir(given.get("data_dir", ""), ckpt["config"].get("data_dir", ""),
                                       tuple(split["train"] + split["val"]))
    return cfg.validate(), ckpt


def main(argv=None) -> int:
    parser = build_parser(__doc__.splitlines()[1])
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its last.pt with its saved config")
    args = parser.parse_args(argv)
    try:
        if args.resume:
            cfg, ckpt = config_for_resume(args.resume, args)
            if ckpt["epoch"] >= cfg.epochs and ckpt["step_in_epoch"] == 0:
                print(f"{args.resume} already finished {ckpt['epoch']} epochs; pass --epochs N to train longer")
                return 0
            train(cfg, run_dir=args.resume, resume=ckpt)
        else:
            cfg = resolve_config(args)
            train(cfg, resume=branch_checkpoint(cfg) if cfg.branch_from else None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun the process group is closed by now, yet gloo's threads can still be torn down during
        # interpreter exit and abort a finished rank ("terminate called without an active exception", ~1 run in
        # 40, more under load): everything is saved and flushed, so leave without that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
