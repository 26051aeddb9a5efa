"""Atomic checkpoint writes, weights-only loads, and rebuilding models from a saved config."""
import os
import pickle
import tempfile

import torch

from config import Config
from models import Discriminator, Generator


class CheckpointError(RuntimeError):
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
    """Load with weights_only=True: tensors and plain data only, so no code in the file can run."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler" in ln), str(e).splitlines()[0])
        raise CheckpointError(f"refusing to load {path!r}: it holds objects other than tensors and plain "
                              f"data, which could run code when unpickled; nothing in it was run. "
                              f"({reason})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path!r}: {e}") from None


def build_generator(cfg: Config) -> Generator:
    return Generator(nf=cfg.nf, attention=cfg.attention, prefill=cfg.prefill)


def build_discriminator(cfg: Config) -> Discriminator:
    return Discriminator(nf=cfg.d_nf)


def generator_from_checkpoint(ckpt: dict) -> tuple:
    """(generator, config) rebuilt from the checkpoint's own saved config: no flags re-passed.

    The moving average of the weights is the generator when the run kept one (it is what validated)."""
    cfg = Config.from_dict(ckpt["config"])
    g = build_generator(cfg)
    g.load_state_dict(ckpt.get("generator_ema", ckpt["generator"]))
    return g.eval(), cfg


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
