"""Inpaint your own photos.

    python inpaint.py PHOTO --mask MASK.png -o OUT.png      # white (bright) mask pixels = hole
    python inpaint.py PHOTO --box x,y,w,h -o OUT.png
    python inpaint.py DIR --out OUTDIR                      # every NAME.ext with a NAME_mask.png beside it

Photos of any size: each hole is inpainted in a window around it, resized to the model's training size,
and only the hole's pixels are resized back and pasted, so every other pixel of the photo stays
bit-identical. --engine onnx runs an exported model (export.py) with onnxruntime.
"""
import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageOps
from scipy import ndimage

from checkpoints import CheckpointError, default_checkpoint, generator_from_checkpoint, load_checkpoint
from config import ConfigError, choose_runtime
from dataset import IMAGE_EXTS, IMAGE_ERRORS, to_rgb

DEFAULT_MAX_PIXELS = 40_000_000  # refuse larger photos instead of exhausting memory
CONTEXT = 4  # window side >= CONTEXT x the hole's extent: the hole keeps the share of context it had in training
MASK_SUFFIX = "_mask.png"


class InpaintError(RuntimeError):
    """Bad input the user must fix; the message names the file or flag."""


def read_image(path: str, max_pixels: int, what: str = "photo") -> Image.Image:
    """Open an image, refusing unreadable files and ones over the pixel budget before decoding them."""
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise InpaintError(f"{what} {path!r} not found") from None
    except IMAGE_ERRORS as e:
        raise InpaintError(f"{what} {path!r} is not a readable image ({type(e).__name__}: {e})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise InpaintError(f"{what} {path!r} is {w}x{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP "
                           "budget: downscale it or raise --max-pixels")
    try:
        im = ImageOps.exif_transpose(im)
        im.load()
    except IMAGE_ERRORS as e:
        raise InpaintError(f"{what} {path!r} could not be decoded ({type(e).__name__}: {e})") from None
    return im


def read_photo(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    return np.asarray(to_rgb(read_image(path, max_pixels)), dtype=np.uint8)  # H, W, 3


def read_mask(path: str, shape: tuple, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any image mode: white (grey > 127) = hole; for a layer with transparency, painted (opaque) = hole.
    Resized to the photo with nearest neighbour."""
    im = read_image(path, max_pixels, "mask")
    alpha = np.asarray(im.convert("RGBA"))[..., 3] if im.mode in ("RGBA", "LA", "PA", "P") else None
    if alpha is not None and (alpha < 255).any():
        grey = alpha  # a brush layer: painted pixels are opaque, the rest transparent
    else:
        grey = np.asarray(to_rgb(im).convert("L"))
        undecided = ((grey > 32) & (grey < 224)).mean()
        if undecided > 0.05:  # a photo passed as the mask, say
            raise InpaintError(f"mask {path!r} does not look like a mask: {undecided:.0%} of its pixels are neither "
                               "near-black nor near-white (white = hole, black = keep)")
    m = Image.fromarray((grey > 127).astype(np.uint8) * 255)
    if m.size != (shape[1], shape[0]):
        m = m.resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(m) > 127


def box_mask(box: str, shape: tuple) -> np.ndarray:
    try:
        x, y, w, h = (int(v) for v in box.split(","))
    except ValueError:
        raise InpaintError(f"--box {box!r}: expected four integers x,y,w,h") from None
    if w < 1 or h < 1 or x < 0 or y < 0 or x >= shape[1] or y >= shape[0]:
        raise InpaintError(f"--box {box!r}: must have w, h >= 1 and start inside the {shape[1]}x{shape[0]} photo")
    mask = np.zeros(shape[:2], bool)
    mask[y:y + h, x:x + w] = True
    return mask


def check_mask(mask: np.ndarray, source: str):
    if not mask.any():
        raise InpaintError(f"{source} marks no pixel as hole (white or opaque = hole): nothing to inpaint")
    if mask.all():
        raise InpaintError(f"{source} covers the whole photo: there is nothing left to inpaint from")


def window_for(bbox: tuple, shape: tuple, size: int) -> tuple:
    """(top, left, height, width) of the window around a hole's bounding box: square, at least the
    model size and CONTEXT x the hole's extent, shifted inside the photo; larger than the photo -> clipped."""
    top, left, bottom, right = bbox
    side = max(size, CONTEXT * max(bottom - top, right - left))
    h, w = min(side, shape[0]), min(side, shape[1])
    h, w = max(h, min(bottom - top, shape[0])), max(w, min(right - left, shape[1]))
    cy, cx = (top + bottom) // 2, (left + right) // 2
    t = int(np.clip(cy - h // 2, 0, shape[0] - h))
    le = int(np.clip(cx - w // 2, 0, shape[1] - w))
    return t, le, h, w


class Inpainter:
    """Loads a generator once (PyTorch checkpoint, or its ONNX export) and inpaints photos of any size."""

    def __init__(self, checkpoint: "str | None" = None, engine: str = "torch", onnx_path: "str | None" = None,
                 device: str = "auto", precision: str = "fp32"):
        self.checkpoint = checkpoint or default_checkpoint()
        model, cfg = generator_from_checkpoint(load_checkpoint(self.checkpoint))
        self.size = cfg.image_size
        self.engine = engine
        if engine == "onnx":
            import onnxruntime as ort
            onnx_path = onnx_path or os.path.splitext(self.checkpoint)[0] + ".onnx"
            if not os.path.isfile(onnx_path):
                raise InpaintError(f"--engine onnx: {onnx_path} not found; write it with "
                                   f"python export.py --checkpoint {self.checkpoint} -o {onnx_path}")
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        elif engine == "torch":
            self.rt = choose_runtime(device, precision, channels_last=True)
            self.model = model.to(self.rt.device, memory_format=self.rt.memory_format())
        else:
            raise InpaintError(f"--engine {engine!r}: choose torch or onnx")

    def run_model(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """size x size: uint8 image (H, W, 3) and bool mask -> generator output in [0, 1] (H, W, 3)."""
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 127.5 - 1  # 1, 3, S, S
        m = torch.from_numpy(mask)[None, None].float()                           # 1, 1, S, S
        if self.engine == "onnx":
            out = torch.from_numpy(self.session.run(None, {"image": x.numpy(), "mask": m.numpy()})[0])
        else:
            with torch.no_grad(), self.rt.autocast():
                out = self.model(x.to(self.rt.device).contiguous(memory_format=self.rt.memory_format()),
                                 m.to(self.rt.device)).float().cpu()
        return ((out[0].permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()

    def __call__(self, photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Inpaint every hole of `mask` (H, W bool) in `photo` (H, W, 3 uint8); other pixels unchanged."""
        out = photo.copy()
        todo = mask.copy()
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        for obj, sl in enumerate(ndimage.find_objects(labels), start=1):
            if not todo[sl].any():
                continue  # already filled as part of an earlier window
            t, le, h, w = window_for((sl[0].start, sl[1].start, sl[0].stop, sl[1].stop), photo.shape, self.size)
            win = (slice(t, t + h), slice(le, le + w))
            crop = Image.fromarray(out[win]).resize((self.size, self.size), Image.BICUBIC)
            # any model pixel touching a hole pixel is a hole: no hole pixel leaks into the input
            small_mask = np.asarray(Image.fromarray(todo[win].astype(np.uint8) * 255)
                                    .resize((self.size, self.size), Image.BILINEAR)) > 0
            generated = self.run_model(np.asarray(crop), small_mask)
            back = np.asarray(Image.fromarray((generated * 255 + 0.5).astype(np.uint8)).resize((w, h), Image.BICUBIC))
            paste = todo[win]  # every hole pixel inside this window is now filled
            out[win][paste] = back[paste]
            todo[win] = False
        return out


def write_image(array: np.ndarray, path: str):
    """Write atomically: a crash never leaves a half-written output file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.partial{ext or '.png'}"
    try:
        Image.fromarray(array).save(tmp)
        os.replace(tmp, path)
    except (OSError, ValueError) as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise InpaintError(f"cannot write {path}: {e}") from None


def folder_pairs(folder: str) -> list:
    """(photo, mask) paths for every NAME.ext with NAME_mask.png beside it."""
    names = sorted(os.listdir(folder))
    pairs = []
    for n in names:
        stem, ext = os.path.splitext(n)
        if ext.lower() in IMAGE_EXTS and not n.endswith(MASK_SUFFIX) and stem + MASK_SUFFIX in names:
            pairs.append((os.path.join(folder, n), os.path.join(folder, stem + MASK_SUFFIX)))
    if not pairs:
        raise InpaintError(f"no NAME.ext + NAME{MASK_SUFFIX} pairs in {folder}")
    return pairs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("photo", help="a photo, or a folder of NAME.ext + NAME_mask.png pairs")
    p.add_argument("--mask", help="mask image: white = hole (any mode; resized to the photo, nearest neighbour)")
    p.add_argument("--box", help="hole as x,y,w,h in photo pixels, instead of --mask")
    p.add_argument("-o", "--output", help="output image (single photo)")
    p.add_argument("--out", help="output folder (folder mode)")
    p.add_argument("--checkpoint", help="generator checkpoint (default: shipped weights, else newest run's best.pt)")
    p.add_argument("--engine", default="torch", choices=("torch", "onnx"))
    p.add_argument("--onnx", help="ONNX file for --engine onnx (default: the checkpoint's name with .onnx)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger photos and masks")
    p.add_argument("--compare", action="store_true",
                   help="write the photo with its hole painted white beside the result, instead of the result alone")
    args = p.parse_args(argv)
    try:
        if os.path.isdir(args.photo):
            if not args.out or args.mask or args.box:
                raise InpaintError("folder mode takes --out OUTDIR and reads NAME_mask.png beside each photo")
            pairs = folder_pairs(args.photo)
            inpainter = Inpainter(args.checkpoint, args.engine, args.onnx, args.device)
            from tqdm import tqdm
            for photo_path, mask_path in tqdm(pairs, desc="inpainting", unit="photo"):
                photo = read_photo(photo_path, args.max_pixels)
                mask = read_mask(mask_path, photo.shape, args.max_pixels)
                check_mask(mask, mask_path)
                name = os.path.splitext(os.path.basename(photo_path))[0] + ".png"
                write_image(inpainter(photo, mask), os.path.join(args.out, name))
            print(f"wrote {len(pairs)} images to {args.out}")
            return 0
        if not args.output or bool(args.mask) == bool(args.box):
            raise InpaintError("give exactly one of --mask MASK.png or --box x,y,w,h, and -o OUT.png")
        photo = read_photo(args.photo, args.max_pixels)
        mask = read_mask(args.mask, photo.shape, args.max_pixels) if args.mask else box_mask(args.box, photo.shape)
        check_mask(mask, args.mask or f"--box {args.box}")
        inpainter = Inpainter(args.checkpoint, args.engine, args.onnx, args.device)
        result = inpainter(photo, mask)
        if args.compare:
            before = np.where(mask[..., None], 255, photo).astype(np.uint8)
            gap = np.full((photo.shape[0], max(photo.shape[1] // 40, 4), 3), 255, np.uint8)
            result = np.concatenate([before, gap, result], axis=1)  # H, 2W + gap, 3
        write_image(result, args.output)
        print(f"wrote {args.output} ({photo.shape[1]}x{photo.shape[0]}, {int(mask.sum())} hole pixels, "
              f"model {inpainter.checkpoint})")
    except (InpaintError, CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
