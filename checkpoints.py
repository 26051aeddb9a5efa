"""Atomic checkpoint writes, weights-only loads, and rebuilding models from a saved config."""
import os
import pickle
import tempfile
from dataclasses import fields

import torch

from config import Config, UserError
from models import Discriminator, arch_arg_names, build_from_args, complete_args


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be written or trusted; the message names the file."""


def atomic_save(obj, path: str):
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash or SIGKILL at any moment leaves either the old file or the new one, never a mix.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as e:
        raise CheckpointError(f"cannot write {path}: {e.strerror} (is {folder} writable?)") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write {path}: {e.strerror or e}; the previous file there is intact") from None
        raise


def load_checkpoint(path: str, map_location="cpu") -> dict:
    """Load with weights_only=True: tensors and plain data only, so no code in the file can run. Anything that
    is not a readable checkpoint of this project ends in a CheckpointError naming the file and what is wrong."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} not found")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        raise CheckpointError(f"cannot read checkpoint {path!r}: the file is empty (0 bytes), so it was never "
                              "written completely; use another checkpoint or train again")
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a legacy pickle
        raise CheckpointError(f"cannot read checkpoint {path!r}: it is not a PyTorch checkpoint (it starts with "
                              f"{head[:16]!r}, where torch.save writes a zip archive); pass a last.pt / best.pt "
                              "or weights/generator.pt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler" in ln), str(e).splitlines()[0])
        raise CheckpointError(f"refusing to load {path!r}: it holds objects other than tensors and plain "
                              f"data, which could run code when unpickled; nothing in it was run. "
                              f"({reason})") from None
    except Exception as e:  # a damaged archive raises anything from EOFError to KeyError
        raise CheckpointError(f"cannot read checkpoint {path!r}: it is damaged or truncated "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'the file ends early'})") from None
    check_contents(ckpt, path)
    return ckpt


def check_contents(ckpt, path: str):
    """A checkpoint is a dict with the generator's weights and the config (or model_args) that built it."""
    problem = ""
    if not isinstance(ckpt, dict):
        problem = f"it holds a {type(ckpt).__name__}, not a checkpoint (a dict with 'generator' and 'config')"
    elif not isinstance(ckpt.get("generator"), dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["generator"].values()):
        problem = "it has no 'generator' weights (a dict of tensors)"
    elif not isinstance(ckpt.get("config"), dict) and not isinstance(ckpt.get("model_args"), dict):
        problem = "it has neither the 'config' nor the 'model_args' that say which network the weights belong to"
    if problem:
        raise CheckpointError(f"checkpoint {path!r} is not one this project wrote: {problem}; pass a run's "
                              "last.pt / best.pt or weights/generator.pt")


def load_generator(path: str, map_location="cpu", average: bool = True) -> tuple:
    """(generator, config, checkpoint) of the checkpoint at path (average=False: the trained weights, not their
    moving average); a generator this version cannot build from it (an unknown architecture, arguments or
    weights that do not fit it) is a CheckpointError naming the file."""
    ckpt = load_checkpoint(path, map_location)
    try:
        g, cfg = generator_from_checkpoint(ckpt if average else {k: v for k, v in ckpt.items() if k != "generator_ema"})
    except UserError as e:
        raise CheckpointError(f"checkpoint {path!r}: {e}") from None
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        what = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {path!r} does not hold a generator this version can build "
                              f"({type(e).__name__}: {' '.join(what[:3])[:400]})") from None
    return g, cfg, ckpt


def model_args(cfg: Config) -> dict:
    """The generator's own constructor arguments, saved beside its weights (nanoGPT's model_args):
    loading a generator needs only these, so renaming a training field never breaks old weights."""
    return {"arch": cfg.arch, **{name: getattr(cfg, name) for name in arch_arg_names(cfg.arch)}}


def build_generator(cfg: Config) -> torch.nn.Module:
    return build_from_args(model_args(cfg))


def build_discriminator(cfg: Config) -> Discriminator:
    return Discriminator(nf=cfg.d_nf, in_channels=4 if cfg.d_mask else 3, layers=cfg.d_layers, norm=cfg.d_norm,
                         scale=cfg.d_scale)


# The seed's discriminator as saved before its layers were grouped into blocks (net.K -> net.block.K).
OLD_DISCRIMINATOR_KEYS = {"net.0.": "net.0.0.", "net.2.": "net.1.0.", "net.3.": "net.1.1.", "net.5.": "net.2."}


def upgrade_discriminator(weights: dict) -> dict:
    """A discriminator state dict in today's key layout (old checkpoints of the seed's one are renamed)."""
    if "net.5.weight" not in weights:
        return weights
    rename = lambda k: next((new + k[len(old):] for old, new in OLD_DISCRIMINATOR_KEYS.items() if k.startswith(old)), k)
    return {rename(k): v for k, v in weights.items()}


def saved_config(ckpt: dict) -> Config:
    """The checkpoint's config; fields this version no longer has are dropped (old weights keep loading),
    fields added since take the value those runs had (config.SAVED_BEFORE)."""
    known = {f.name for f in fields(Config)}
    return Config.from_saved({k: v for k, v in ckpt["config"].items() if k in known})


def saved_model_args(ckpt: dict) -> dict:
    """The generator's architecture and constructor arguments a checkpoint was saved with: {"arch": name,
    **arguments}. Checkpoints written before the registry saved no "arch" (U-Nets, all of them), and those
    before model_args existed only their config."""
    if ckpt.get("model_args"):
        return complete_args(ckpt["model_args"])
    return model_args(saved_config(ckpt))


def generator_from_checkpoint(ckpt: dict) -> tuple:
    """(generator, config) rebuilt from the checkpoint's own model_args (or, in checkpoints from before
    they were saved, its config): no flags re-passed.

    The moving average of the weights is the generator when the run kept one (it is what validated)."""
    cfg = saved_config(ckpt)
    g = build_from_args(saved_model_args(ckpt))
    g.load_state_dict(ckpt.get("generator_ema", ckpt["generator"]))
    return g.eval(), cfg


class TrainingState:
    """Everything a run needs to continue: the generator, the discriminator (None without the adversarial
    loss), their optimizers, the moving average, the step counters and the metric history.
    state_dict() / load_state_dict() are the one definition of the training checkpoint format (last.pt,
    best.pt)."""

    def __init__(self, cfg: Config, g, d, opt_g, opt_d, g_ema=None, scaler=None, gan=None):
        self.cfg, self.g, self.d, self.opt_g, self.opt_d, self.g_ema, self.scaler = cfg, g, d, opt_g, opt_d, g_ema, scaler
        self.gan = gan  # the run's losses.Adversarial, built once with d (None without the adversarial loss)
        self.epoch = self.step_in_epoch = self.bad_steps = self.images_seen = 0
        self.train_seconds = 0.0
        self.history, self.best, self.partial = [], None, {}
        self.machines = []  # "CPU or GPU description; precision" of each machine the run trained on, in order

    def state_dict(self, world_size: int = 1) -> dict:
        """`partial` carries a stopped epoch's running loss sums, so a mid-epoch resume logs the same means."""
        return {"config": self.cfg.to_dict(), "model_args": model_args(self.cfg), "generator": self.g.state_dict(),
                **({"generator_ema": self.g_ema.state_dict()} if self.g_ema is not None else {}),
                **({"discriminator": self.d.state_dict(), "opt_d": self.opt_d.state_dict()} if self.d is not None else {}),
                "opt_g": self.opt_g.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else {},
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "history": self.history,
                "best": self.best, "bad_steps": self.bad_steps, "partial_epoch": self.partial,
                "images_seen": self.images_seen, "train_seconds": self.train_seconds, "machines": self.machines,
                "world_size": world_size, "torch_version": str(torch.__version__)}

    def load_state_dict(self, ckpt: dict):
        self.g.load_state_dict(ckpt["generator"])
        if self.g_ema is not None:
            self.g_ema.load_state_dict(ckpt["generator_ema"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        if self.d is not None:  # a checkpoint from before the discriminator was optional may hold an unused one
            self.d.load_state_dict(upgrade_discriminator(ckpt["discriminator"]))
            self.opt_d.load_state_dict(ckpt["opt_d"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.step_in_epoch = ckpt["epoch"], ckpt["step_in_epoch"]
        self.history, self.best, self.bad_steps = ckpt["history"], ckpt["best"], ckpt.get("bad_steps", 0)
        self.partial = ckpt.get("partial_epoch") or {}
        self.images_seen, self.train_seconds = ckpt.get("images_seen", 0), ckpt.get("train_seconds", 0.0)
        self.machines = list(ckpt.get("machines", []))


def shipped_state(path: str) -> tuple:
    """(the shipped weights' format (weights/generator.pt), the checkpoint) of the checkpoint at path: the
    generator that validated (the moving average when kept) in fp16, its model_args and config, the run's history."""
    g, cfg, ckpt = load_generator(path)
    weights = {k: v.half() for k, v in g.state_dict().items()}
    return {"config": cfg.to_dict(), "model_args": saved_model_args(ckpt), "generator": weights, "epoch": ckpt["epoch"],
            "history": ckpt["history"], "machines": ckpt.get("machines", []), "torch_version": str(torch.__version__)}, ckpt


def newest_run(out_dir: str) -> "str | None":
    """The most recently modified run folder under out_dir that holds a checkpoint."""
    if not os.path.isdir(out_dir):
        return None
    runs = [os.path.join(out_dir, d) for d in os.listdir(out_dir)
            if os.path.isfile(os.path.join(out_dir, d, "last.pt"))]
    return max(runs, key=lambda p: os.path.getmtime(os.path.join(p, "last.pt")), default=None)


def run_checkpoint(run_dir: "str | None", checkpoint: str) -> str:
    """`checkpoint` itself when it is a file, else RUN_DIR/<checkpoint>.pt (best, last); it must exist."""
    path = checkpoint if os.path.isfile(checkpoint) else os.path.join(run_dir or "", f"{checkpoint}.pt")
    last = os.path.join(run_dir or "", "last.pt")
    if checkpoint == "best" and not os.path.isfile(path) and os.path.isfile(last):
        print(f"{run_dir} has no best.pt yet (stopped before its first validation): using its last.pt", flush=True)
        return last
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} not found: pass --checkpoint best, last or a .pt path")
    return path


SHIPPED_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "generator.pt")


def default_checkpoint(out_dir: str = "out") -> str:
    """The shipped weights when present, else best.pt of the newest run under out_dir."""
    if os.path.isfile(SHIPPED_WEIGHTS):
        return SHIPPED_WEIGHTS
    run = newest_run(out_dir)
    if run is None:
        raise CheckpointError("no checkpoint: pass --checkpoint FILE.pt, or train one with python main.py")
    return os.path.join(run, "best.pt")
