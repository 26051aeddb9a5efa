"""Image discovery, train/val/test split, decoding, RAM cache or streaming, batch augmentation.

Images travel as uint8 (3, S, S) until they reach the device, where they become float in [-1, 1].
"""
import os

import numpy as np
import torch
from PIL import Image

from config import DATA_ENV

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_IMAGES = "img_align_celeba"


class DataError(RuntimeError):
    """A problem with the image folder the user must fix; the message says where and how."""


def image_root(data_dir: str) -> str:
    """The folder holding the images: CelebA's img_align_celeba/ when present, else data_dir itself."""
    nested = os.path.join(data_dir, CELEBA_IMAGES)
    return nested if os.path.isdir(nested) else data_dir


def find_images(data_dir: str) -> list:
    """Sorted image file names (relative to image_root) with a known extension, any case."""
    if not data_dir:
        raise DataError(f"no image folder given: pass --data-dir DIR or set ${DATA_ENV} "
                        "(e.g. the aligned CelebA folder img_align_celeba/ or its parent)")
    root = image_root(data_dir)
    if not os.path.isdir(root):
        raise DataError(f"image folder {root!r} does not exist: point --data-dir (or ${DATA_ENV}) at "
                        "a folder of jpg/png/webp images, e.g. CelebA's img_align_celeba/")
    names = sorted(n for n in os.listdir(root) if n.lower().endswith(IMAGE_EXTS)
                   and os.path.isfile(os.path.join(root, n)))
    if not names:
        raise DataError(f"no images (jpg/jpeg/png/webp) found in {root!r}: point --data-dir (or ${DATA_ENV}) "
                        "at a folder of face images, e.g. CelebA's img_align_celeba/")
    return names


def read_celeba_partition(path: str) -> dict:
    """CelebA's list_eval_partition.txt: 'name.jpg 0|1|2' per line -> {name: 'train'|'val'|'test'}."""
    names = {"0": "train", "1": "val", "2": "test"}
    out = {}
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in names:
                raise DataError(f"{path}:{lineno}: expected 'FILE 0|1|2', got {line.strip()!r}")
            out[parts[0]] = names[parts[1]]
    return out


def split_files(data_dir: str, val_fraction: float = 0.1, test_fraction: float = 0.1,
                max_images: int = 0) -> dict:
    """{'train': [...], 'val': [...], 'test': [...]} of file names relative to image_root(data_dir).

    With CelebA's partition file its assignment is used; otherwise the sorted list is cut into
    contiguous train / val / test blocks (like CelebA's own partition: no identity straddles much).
    """
    names = find_images(data_dir)
    if max_images:
        names = names[:max_images]
    partition_file = os.path.join(data_dir, CELEBA_PARTITION)
    if os.path.isfile(partition_file):
        part = read_celeba_partition(partition_file)
        split = {s: [n for n in names if part.get(n) == s] for s in ("train", "val", "test")}
    else:
        n = len(names)
        n_train = int(n * (1 - val_fraction - test_fraction) + 1e-9)
        n_val = int(n * val_fraction + 1e-9)
        split = {"train": names[:n_train], "val": names[n_train:n_train + n_val],
                 "test": names[n_train + n_val:]}
    if len(split["train"]) < 2 or len(split["val"]) < 1 or len(split["test"]) < 1:
        raise DataError(f"{data_dir!r}: {len(names)} images give train/val/test = "
                        f"{len(split['train'])}/{len(split['val'])}/{len(split['test'])}; "
                        "need at least 2/1/1 (add images or change --val-fraction/--test-fraction)")
    return split


def load_image(path: str, size: int) -> torch.Tensor:
    """Decode, convert to RGB, centre-crop to a square, resize: uint8 tensor 3, size, size."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # 3, S, S


class ImageFiles(torch.utils.data.Dataset):
    """The images of one split, decoded on demand (uint8, 3, S, S)."""

    def __init__(self, root: str, names: list, size: int):
        self.root, self.names, self.size = root, list(names), size

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        return load_image(os.path.join(self.root, self.names[i]), self.size)

    def nbytes(self) -> int:
        return len(self) * 3 * self.size * self.size


class ImageSource:
    """Serves uint8 batches of a split from a RAM cache when it fits the budget, else from disk."""

    def __init__(self, files: ImageFiles, cache_mb: int, workers: int = 0):
        self.files, self.workers = files, workers
        self.cache = None
        if files.nbytes() <= cache_mb * 2 ** 20:
            self.cache = torch.stack([files[i] for i in range(len(files))])  # N, 3, S, S uint8

    def __len__(self):
        return len(self.files)

    def batches(self, order: torch.Tensor, batch_size: int, drop_last: bool):
        """Yield uint8 batches (B, 3, S, S) of the images at positions `order`."""
        n = len(order) - len(order) % batch_size if drop_last else len(order)
        chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        if self.cache is not None:
            for idx in chunks:
                yield self.cache[idx]
            return
        loader = torch.utils.data.DataLoader(
            self.files, batch_sampler=[c.tolist() for c in chunks], num_workers=self.workers,
            persistent_workers=False, pin_memory=torch.cuda.is_available())
        yield from loader

    def take(self, n: int) -> torch.Tensor:
        """The first n images as one uint8 tensor (validation / test sets)."""
        n = min(n, len(self))
        if self.cache is not None:
            return self.cache[:n]
        return torch.stack([self.files[i] for i in range(n)])


def to_model_range(batch: torch.Tensor, device, memory_format=torch.contiguous_format) -> torch.Tensor:
    """uint8 B, 3, H, W -> float32 in [-1, 1] on device."""
    x = batch.to(device, non_blocking=True).float().div_(127.5).sub_(1)
    return x.contiguous(memory_format=memory_format)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x.float() + 1) / 2


def augment(x: torch.Tensor, rng: np.random.Generator, hflip: bool, color_jitter: float) -> torch.Tensor:
    """Random horizontal flips and brightness/contrast jitter on a [-1, 1] batch (B, 3, H, W)."""
    b = x.shape[0]
    if hflip:
        flip = torch.from_numpy(rng.random(b) < 0.5).to(x.device).view(b, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if color_jitter > 0:
        gain = torch.from_numpy(rng.uniform(1 - color_jitter, 1 + color_jitter, (2, b)).astype(np.float32)).to(x.device)
        bright, contrast = gain[0].view(b, 1, 1, 1), gain[1].view(b, 1, 1, 1)
        u = (x + 1) / 2 * bright
        mean = u.mean(dim=(1, 2, 3), keepdim=True)
        x = ((u - mean) * contrast + mean).clamp(0, 1) * 2 - 1
    return x


def open_splits(cfg, split: dict, which=("train", "val", "test")) -> dict:
    """ImageSource per requested split, sharing the cache budget in split order."""
    root = image_root(cfg.data_dir)
    budget = cfg.cache_mb
    sources = {}
    for name in which:
        files = ImageFiles(root, split[name], cfg.image_size)
        sources[name] = ImageSource(files, budget, cfg.workers)
        if sources[name].cache is not None:
            budget -= files.nbytes() // 2 ** 20
    return sources


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of an epoch, a function of (seed, epoch) alone so resume is exact."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g)
