"""Image discovery, train/val/test split, decoding, RAM cache or streaming, batch augmentation.

Images travel as uint8 (3, S, S) until they reach the device, where they become float in [-1, 1].
"""
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from config import DATA_ENV, UserError
from models import from_unit_range, to_unit_range

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
CELEBA_PARTITION = "list_eval_partition.txt"
CELEBA_IMAGES = "img_align_celeba"


class DataError(UserError, RuntimeError):
    """A problem with the image folder the user must fix; the message says where and how."""


def image_root(data_dir: str) -> str:
    """The folder holding the images: CelebA's img_align_celeba/ when present, else data_dir itself."""
    nested = os.path.join(data_dir, CELEBA_IMAGES)
    return nested if os.path.isdir(nested) else data_dir


def resolve_data_dir(flag: str = "", saved: str = "", needs: tuple = ()) -> tuple:
    """(folder, where it came from): the one rule every script follows. --data-dir, else $INPAINT_DATA_DIR,
    else the run's saved data_dir: the first that is a folder and holds the files in `needs` (a run's
    split). An explicit --data-dir is never second-guessed. The error names every place it tried."""
    candidates = [(flag, "--data-dir")] if flag else [
        (os.environ.get(DATA_ENV, ""), f"${DATA_ENV}"), (saved, "the run's saved data_dir")]
    tried = []
    for path, source in candidates:
        if not path:
            continue
        if not os.path.isdir(path):
            tried.append(f"{source} = {path!r} (not a folder)")
            continue
        missing = [n for n in needs if not os.path.isfile(os.path.join(image_root(path), n))]
        if not missing:
            return path, source
        tried.append(f"{source} = {path!r} (lacks {len(missing)} of the run's {len(needs)} images)")
    if not tried:
        raise DataError(f"no image folder given: pass --data-dir DIR or set ${DATA_ENV} "
                        "(e.g. the aligned CelebA folder img_align_celeba/ or its parent)")
    raise DataError("no usable image folder: tried " + "; ".join(tried) +
                    f". Pass --data-dir DIR (or set ${DATA_ENV}) to the folder that holds the images")


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


# Errors PIL raises for files that are not (complete) images.
IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


# Upscaling by up to this factor passes without a word: CelebA's aligned faces (178 px wide) reach the
# default 200 px at 1.12x, which costs nothing visible; much smaller images are worth a warning.
UPSCALE_QUIET = 1.25


def error_reason(e: Exception, path: str) -> str:
    """A short reason for a failed file, without repeating its path."""
    text = str(e)
    for quoted in (f"'{path}'", path):
        text = text.replace(quoted, "")
    return f"{type(e).__name__}: {text}".strip(" :")[:80]


def describe_skipped(what: str, bad: list, folder: str) -> str:
    """One warning line: how many files were skipped and a few of them with reasons."""
    shown = "; ".join(f"{name} ({reason})" for name, reason in bad[:3])
    more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"skipped {len(bad)} {what} in {folder}: {shown}{more}"


def scan_images(root: str, names: list, image_size: int = 0) -> list:
    """Keep the files whose header PIL can read (cheap: no pixel decoding); warn once about the rest,
    and once about images much smaller than image_size (upscaled by more than UPSCALE_QUIET)."""
    good, bad, small = [], [], []
    for name in names:
        try:
            with Image.open(os.path.join(root, name)) as im:
                w, h = im.size
            if w < 1 or h < 1:
                raise ValueError("empty image")
        except IMAGE_ERRORS as e:
            bad.append((name, error_reason(e, os.path.join(root, name))))
            continue
        good.append(name)
        if min(w, h) * UPSCALE_QUIET < image_size:
            small.append((name, f"{w}x{h}"))
    if bad:
        warnings.warn(describe_skipped("unreadable or non-image files", bad, root), stacklevel=2)
    if small:
        warnings.warn(f"{len(small)} images are upscaled more than {UPSCALE_QUIET}x to {image_size} px, "
                      f"so they will look soft (e.g. {', '.join(f'{n} {s}' for n, s in small[:3])})", stacklevel=2)
    return good


def split_files(data_dir: str, val_fraction: float = 0.1, test_fraction: float = 0.1,
                max_images: int = 0, image_size: int = 0) -> dict:
    """{'train': [...], 'val': [...], 'test': [...]} of file names relative to image_root(data_dir).

    Files whose header cannot be read are skipped (one warning). With CelebA's partition file its
    assignment is used; otherwise the sorted list is cut into contiguous train / val / test blocks
    (like CelebA's own partition: no identity straddles much).
    """
    names = find_images(data_dir)
    if max_images:
        names = names[:max_images]
    names = scan_images(image_root(data_dir), names, image_size)
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


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: palette, grey, alpha, CMYK, and 16/32-bit images scaled to 0..255."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("P", "PA", "LA", "RGBA"):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)  # transparent regions become white, not black
    return im.convert("RGB")


def load_image(path: str, size: int) -> torch.Tensor:
    """Decode, convert to RGB, centre-crop to a square, resize: uint8 tensor 3, size, size."""
    with Image.open(path) as im:
        im = to_rgb(ImageOps.exif_transpose(im))
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

    def load(self, i) -> torch.Tensor:
        return load_image(os.path.join(self.root, self.names[i]), self.size)

    def __getitem__(self, i):
        """Streaming access: a file that fails to decode mid-epoch (e.g. a truncated JPEG whose header
        was fine) is replaced by the next good one with a warning, never a crash."""
        for k in range(len(self)):
            j = (i + k) % len(self)
            try:
                return self.load(j)
            except IMAGE_ERRORS as e:
                warnings.warn(f"skipping {os.path.join(self.root, self.names[j])}: {e}", stacklevel=2)
        raise DataError(f"no image in {self.root} could be decoded")

    def nbytes(self) -> int:
        return len(self) * 3 * self.size * self.size


class ImageSource:
    """Serves uint8 batches of a split from a RAM cache when it fits the budget, else from disk.

    With lazy=True the cache is filled as images are first served (a training run starts at once and
    its first epoch decodes each image once, in step); otherwise the whole split is decoded up front.
    """

    def __init__(self, files: ImageFiles, cache_mb: int, workers: int = 0, lazy: bool = False):
        self.files, self.workers = files, workers
        self.cache = self.filled = None
        if files.nbytes() > cache_mb * 2 ** 20:
            return
        if lazy:  # pages are only committed when written, so the budget is reserved, not touched
            self.cache = torch.empty(len(files), 3, files.size, files.size, dtype=torch.uint8)
            self.filled = torch.zeros(len(files), dtype=torch.bool)
            return
        decoded, kept, bad = [], [], []
        for i, name in enumerate(files.names):
            try:
                decoded.append(files.load(i))
                kept.append(name)
            except IMAGE_ERRORS as e:  # e.g. truncated JPEGs: the header scan cannot see those
                bad.append((name, error_reason(e, os.path.join(files.root, name))))
        if bad:
            warnings.warn(describe_skipped("images that failed to decode", bad, files.root), stacklevel=2)
            files.names = kept
        if not decoded:
            raise DataError(f"none of the {len(bad)} images in {files.root} could be decoded")
        self.cache = torch.stack(decoded)  # N, 3, S, S uint8

    def _fill(self, idx: torch.Tensor):
        """Decode the not yet cached images among idx (a file that fails is replaced by the next good
        one, with a warning, as when streaming)."""
        if self.filled is None:
            return
        for i in idx[~self.filled[idx]].tolist():
            try:
                self.cache[i] = self.files.load(i)
            except IMAGE_ERRORS as e:  # e.g. a truncated JPEG whose header was fine
                path = os.path.join(self.files.root, self.files.names[i])
                warnings.warn(f"{path} failed to decode ({error_reason(e, path)}); the next image takes its place",
                              stacklevel=2)
                self.cache[i] = self.files[(i + 1) % len(self.files)]
            self.filled[i] = True

    def __len__(self):
        return len(self.files)

    def batches(self, order: torch.Tensor, batch_size: int, drop_last: bool):
        """Yield uint8 batches (B, 3, S, S) of the images at positions `order`."""
        n = len(order) - len(order) % batch_size if drop_last else len(order)
        chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        if self.cache is not None:
            for idx in chunks:
                self._fill(idx)
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
            self._fill(torch.arange(n))
            return self.cache[:n]
        return torch.stack([self.files[i] for i in range(n)])

    @property
    def names(self) -> list:
        """File names of the images served, in order (without any that failed to decode)."""
        return self.files.names


def augment(x: torch.Tensor, rng: np.random.Generator, hflip: bool, color_jitter: float) -> torch.Tensor:
    """Random horizontal flips and brightness/contrast jitter on a [-1, 1] batch (B, 3, H, W)."""
    b = x.shape[0]
    if hflip:
        flip = torch.from_numpy(rng.random(b) < 0.5).to(x.device).view(b, 1, 1, 1)
        x = torch.where(flip, x.flip(-1), x)
    if color_jitter > 0:
        gain = torch.from_numpy(rng.uniform(1 - color_jitter, 1 + color_jitter, (2, b)).astype(np.float32)).to(x.device)
        bright, contrast = gain[0].view(b, 1, 1, 1), gain[1].view(b, 1, 1, 1)
        u = to_unit_range(x) * bright
        mean = u.mean(dim=(1, 2, 3), keepdim=True)
        x = from_unit_range(((u - mean) * contrast + mean).clamp(0, 1))
    return x


MIN_CROP_HOLE = 0.01  # a training window must show at least this fraction of hole pixels, if any of its tries do
CROP_TRIES = 8  # random windows tried per image


def random_crops(images: torch.Tensor, masks: torch.Tensor, size: int, rng: np.random.Generator) -> tuple:
    """The same random size x size window of each image (B, C, H, W) and of its holes (B, 1, H, W), at
    native scale: holes are drawn on the whole image first, so strokes and faces keep the size they have at
    evaluation. Of CROP_TRIES random windows per image the first with >= MIN_CROP_HOLE hole pixels is kept
    (else the one with the most), so a step is never spent on windows without holes. Returns
    (B, C, size, size, B, 1, size, size)."""
    b, _, h, w = masks.shape
    if size >= h and size >= w:
        return images, masks
    tops = torch.from_numpy(rng.integers(0, h - size + 1, (b, CROP_TRIES)))   # B, T
    lefts = torch.from_numpy(rng.integers(0, w - size + 1, (b, CROP_TRIES)))  # B, T
    # hole pixels in each window from the summed-area table of the masks
    table = F.pad(masks[:, 0].float().cpu().cumsum(1).cumsum(2), (1, 0, 1, 0))  # B, H + 1, W + 1
    bi = torch.arange(b)[:, None]
    holes = (table[bi, tops + size, lefts + size] - table[bi, tops, lefts + size]
             - table[bi, tops + size, lefts] + table[bi, tops, lefts])           # B, T
    enough = holes >= MIN_CROP_HOLE * size * size
    pick = torch.where(enough.any(1), enough.float().argmax(1), holes.argmax(1))  # B: the first good try
    top, left = tops[bi[:, 0], pick].tolist(), lefts[bi[:, 0], pick].tolist()
    crop = lambda t: torch.stack([t[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(zip(top, left))])
    return crop(images), crop(masks)


def open_splits(cfg, split: dict, which=("train", "val", "test"), lazy=("train",)) -> dict:
    """ImageSource per requested split, sharing the cache budget in split order; the `lazy` ones fill
    their cache as they are first read (training starts without decoding 17k images first)."""
    root = image_root(cfg.data_dir)
    budget = cfg.cache_mb
    sources = {}
    for name in which:
        files = ImageFiles(root, split[name], cfg.image_size)
        sources[name] = ImageSource(files, budget, cfg.workers, lazy=name in lazy)
        if sources[name].cache is not None:
            budget -= files.nbytes() // 2 ** 20
    return sources


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of an epoch, a function of (seed, epoch) alone so resume is exact."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g)
