"""Inpaint your own photos.

    python inpaint.py PHOTO --mask MASK.png -o OUT.png      # white (bright) mask pixels = hole
    python inpaint.py PHOTO --box x,y,w,h -o OUT.png
    python inpaint.py DIR --out OUTDIR                      # every NAME.ext with a NAME_mask.png beside it

Photos of any size: each hole is inpainted in a window around it, resized to the model's training size,
and only the hole's pixels are resized back and pasted, so every other pixel of the photo stays
bit-identical in a lossless output (.png, .webp written lossless); a .jpg output is re-encoded (with the
source's quality tables when it was a JPEG) and says so. Grey photos come back grey and transparency is
kept. A folder run processes every pair and lists the failed ones at the end (exit 1 if any).
--engine onnx runs an exported model (export.py) with onnxruntime.
"""
import argparse
import os
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin
from scipy import ndimage

from checkpoints import default_checkpoint, load_generator
from config import UserError, atomic_write, choose_runtime, make_folder
from dataset import IMAGE_EXTS, IMAGE_ERRORS, to_rgb
from models import inpaint, to_model_range, to_uint8

DEFAULT_MAX_PIXELS = 40_000_000  # refuse larger photos instead of exhausting memory
PILLOW_LIMIT = 2 * Image.MAX_IMAGE_PIXELS  # Pillow refuses to open larger images (a decompression bomb guard)
CONTEXT = 4  # window side >= CONTEXT x the hole's extent: the hole keeps the share of context it had in training
MASK_SUFFIX = "_mask.png"
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # written back as grey


class InpaintError(UserError, RuntimeError):
    """Bad input the user must fix; the message names the file or flag."""


def megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} MP" if n >= 100_000 else f"{n:,} pixels"


def check_max_pixels(value: int):
    if not 1 <= value <= PILLOW_LIMIT:
        raise InpaintError(f"--max-pixels {value}: must be between 1 and {PILLOW_LIMIT:,} ({megapixels(PILLOW_LIMIT)}, "
                           "the largest image Pillow opens)")


def read_image(path: str, max_pixels: int, what: str = "photo") -> tuple:
    """(image, its JPEG settings or {}): refuses unreadable files and ones over the pixel budget before decoding."""
    budget = f"over the {megapixels(max_pixels)} budget: downscale it or raise --max-pixels"
    try:
        with warnings.catch_warnings():  # our own budget check below says it better than Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except FileNotFoundError:
        raise InpaintError(f"{what} {path!r} not found") from None
    except Image.DecompressionBombError as e:
        raise InpaintError(f"{what} {path!r} is over {megapixels(PILLOW_LIMIT)}, the largest image Pillow opens "
                           f"({e}): downscale it") from None
    except IMAGE_ERRORS as e:
        raise InpaintError(f"{what} {path!r} is not a readable image ({type(e).__name__}: {e})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise InpaintError(f"{what} {path!r} is {w}x{h} = {megapixels(w * h)}, {budget}")
    jpeg = {}
    try:
        if im.format == "JPEG":  # read before exif_transpose, which returns a format-less copy
            jpeg = {"qtables": im.quantization, "subsampling": JpegImagePlugin.get_sampling(im)}
        im = ImageOps.exif_transpose(im)
        im.load()
    except IMAGE_ERRORS as e:
        raise InpaintError(f"{what} {path!r} could not be decoded ({type(e).__name__}: {e})") from None
    return im, jpeg


@dataclass
class Photo:
    """A photo as the model sees it (RGB) plus what is needed to write the result back like the source."""
    rgb: np.ndarray              # H, W, 3 uint8: the model's input (transparent parts over white)
    raw: np.ndarray              # H, W (grey) or H, W, 3: the source's own channels, kept outside the hole
    alpha: "np.ndarray | None"   # H, W uint8, written back unchanged
    jpeg: dict                   # the source's JPEG quantization tables and subsampling ({} if not a JPEG)

    def like_source(self, result: np.ndarray, mask: np.ndarray) -> Image.Image:
        """The inpainted RGB result in the source's mode: grey stays grey, the alpha is kept, and every
        pixel outside the hole is the source's own."""
        fill = np.asarray(Image.fromarray(result).convert("L")) if self.raw.ndim == 2 else result
        out = self.raw.copy()
        out[mask] = fill[mask]
        im = Image.fromarray(out)
        if self.alpha is not None:
            im.putalpha(Image.fromarray(self.alpha))
        return im


def read_photo(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    im, jpeg = read_image(path, max_pixels)
    rgb = np.asarray(to_rgb(im), dtype=np.uint8)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    rgba = np.asarray(im.convert("RGBA")) if has_alpha else None
    if im.mode in GREY_MODES:
        raw = np.asarray(to_rgb(im.convert("L") if im.mode == "LA" else im).convert("L"))
    else:
        raw = rgba[..., :3] if rgba is not None else rgb
    return Photo(rgb, raw, None if rgba is None else rgba[..., 3].copy(), jpeg)


def read_mask(path: str, shape: tuple, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any image mode: white (grey > 127) = hole; for a layer with transparency, painted (opaque) = hole.
    Resized to the photo with nearest neighbour."""
    im, _ = read_image(path, max_pixels, "mask")
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


def box_mask(box: str, shape: tuple, what: str = "--box") -> np.ndarray:
    """The hole of an 'x,y,w,h' box; a box reaching past the photo's edges (x or y negative, say) is clipped to it."""
    try:
        x, y, w, h = (int(v) for v in box.split(","))
    except ValueError:
        raise InpaintError(f"{what} {box!r}: expected four integers x,y,w,h") from None
    top, left, bottom, right = max(y, 0), max(x, 0), min(y + h, shape[0]), min(x + w, shape[1])
    if w < 1 or h < 1 or top >= bottom or left >= right:
        raise InpaintError(f"{what} {box!r}: must have w, h >= 1 and overlap the {shape[1]}x{shape[0]} photo")
    mask = np.zeros(shape[:2], bool)
    mask[top:bottom, left:right] = True
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
        model, cfg, _ = load_generator(self.checkpoint)
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
        """size x size: uint8 image (H, W, 3) and bool mask -> the inpainted uint8 image (H, W, 3)."""
        x = to_model_range(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None])  # 1, 3, S, S
        m = torch.from_numpy(mask)[None, None].float()                                # 1, 1, S, S
        if self.engine == "onnx":  # the exported graph is inpaint(): it returns the composite
            out = torch.from_numpy(self.session.run(None, {"image": x.numpy(), "mask": m.numpy()})[0])
        else:
            with torch.no_grad(), self.rt.autocast():
                _, out = inpaint(self.model, x.to(self.rt.device).contiguous(memory_format=self.rt.memory_format()),
                                 m.to(self.rt.device))
        return to_uint8(out[0].cpu()).permute(1, 2, 0).numpy()

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
            back = np.asarray(Image.fromarray(generated).resize((w, h), Image.BICUBIC))
            paste = todo[win]  # every hole pixel inside this window is now filled
            out[win][paste] = back[paste]
            todo[win] = False
        return out


def save_options(im: Image.Image, jpeg: dict, path: str) -> tuple:
    """(image, save options, warnings) for writing `im` to `path`; lossless where the format allows."""
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower())
    notes, options = [], {}
    if fmt == "JPEG":
        if im.mode in ("LA", "RGBA"):
            im = im.convert(im.mode[:-1])
            notes.append(f"{path}: JPEG has no transparency, the photo's alpha is dropped (write .png to keep it)")
        options = jpeg or {"quality": 95, "subsampling": 0}
        how = "with the source photo's quality tables" if jpeg else "at quality 95"
        notes.append(f"{path}: JPEG is lossy, so pixels outside the hole change slightly when re-encoded ({how}); "
                     "write .png for a result that is bit-identical outside the hole")
    elif fmt == "WEBP":
        options = {"lossless": True, "exact": True}  # exact: keep RGB under transparent pixels too
    return im, options, notes


def write_image(image: "np.ndarray | Image.Image", path: str, jpeg: "dict | None" = None) -> list:
    """Write atomically (a crash never leaves a half-written output file); returns warnings to show."""
    make_folder(os.path.dirname(os.path.abspath(path)), path)
    png_if_unnamed = None if os.path.splitext(path)[1] else "PNG"  # else PIL picks the format by the extension
    try:
        im = image if isinstance(image, Image.Image) else Image.fromarray(image)
        im, options, notes = save_options(im, jpeg or {}, path)
        atomic_write(path, lambda tmp: im.save(tmp, format=png_if_unnamed, **options))
    except (OSError, ValueError, KeyError) as e:
        raise InpaintError(f"cannot write {path}: {e}") from None
    return notes


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


def output_names(pairs: list) -> tuple:
    """({photo path: output file name}, notes): NAME.png for each photo (PNG: lossless), or NAME_EXT.png for
    photos that share a NAME (a.jpg and a.png both -> a_jpg.png, a_png.png), so no two results share a name."""
    stems = {}
    for photo, _ in pairs:
        stem, ext = os.path.splitext(os.path.basename(photo))
        stems.setdefault(stem, []).append((photo, ext))
    names, notes = {}, []
    for stem, photos in stems.items():
        for photo, ext in photos:
            names[photo] = f"{stem}.png" if len(photos) == 1 else f"{stem}_{ext[1:].lower()}.png"
        if len(photos) > 1:
            notes.append(f"{' and '.join(os.path.basename(p) for p, _ in photos)} share the name {stem}: their results "
                         f"are {', '.join(names[p] for p, _ in photos)}")
    clashes = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clashes:
        raise InpaintError(f"two photos would give the result {', '.join(clashes)}: rename one of them")
    return names, notes


def check_outputs(folder: str, out: str, names: dict):
    """Refuse an --out that would write over any image of the input folder (--out = the folder itself, say)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise InpaintError(f"cannot write --out {out}: it is a file, not a folder")
    inputs = {os.path.realpath(os.path.join(folder, n)) for n in os.listdir(folder)
              if os.path.splitext(n)[1].lower() in IMAGE_EXTS}
    hit = sorted(n for n in names.values() if os.path.realpath(os.path.join(out, n)) in inputs)
    if hit:
        raise InpaintError(f"--out {out} would write over images of {folder} ({', '.join(hit[:5])}"
                           f"{', ...' if len(hit) > 5 else ''}): choose another --out folder")


def inpaint_folder(args) -> int:
    """Every NAME.ext + NAME_mask.png pair of a folder; a bad pair is reported at the end, never stops the rest.
    Nothing is read before the outputs are known to overwrite no input and to have one name each."""
    if not args.out or args.mask or args.box:
        raise InpaintError("folder mode takes --out OUTDIR and reads NAME_mask.png beside each photo")
    pairs = folder_pairs(args.photo)
    names, notes = output_names(pairs)
    check_outputs(args.photo, args.out, names)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    inpainter = Inpainter(args.checkpoint, args.engine, args.onnx, args.device)
    from tqdm import tqdm
    failed = []
    for photo_path, mask_path in tqdm(pairs, desc="inpainting", unit="photo"):
        try:
            photo = read_photo(photo_path, args.max_pixels)
            mask = read_mask(mask_path, photo.rgb.shape, args.max_pixels)
            check_mask(mask, mask_path)
            write_image(photo.like_source(inpainter(photo.rgb, mask), mask), os.path.join(args.out, names[photo_path]))
        except UserError as e:  # a bad pair, an output that cannot be written: recorded, the rest go on
            failed.append(str(e))
    print(f"wrote {len(pairs) - len(failed)} of {len(pairs)} images to {args.out}")
    if failed:
        print(f"error: {len(failed)} of {len(pairs)} pairs failed:\n" + "\n".join(f"  {f}" for f in failed),
              file=sys.stderr)
        return 1
    return 0


def inpaint_one(args) -> int:
    if not args.output or bool(args.mask) == bool(args.box):
        raise InpaintError("give exactly one of --mask MASK.png or --box x,y,w,h, and -o OUT.png")
    photo = read_photo(args.photo, args.max_pixels)
    shape = photo.rgb.shape
    mask = read_mask(args.mask, shape, args.max_pixels) if args.mask else box_mask(args.box, shape)
    check_mask(mask, args.mask or f"--box {args.box}")
    inpainter = Inpainter(args.checkpoint, args.engine, args.onnx, args.device)
    result = inpainter(photo.rgb, mask)
    if args.compare:
        before = np.where(mask[..., None], 255, photo.rgb).astype(np.uint8)
        gap = np.full((shape[0], max(shape[1] // 40, 4), 3), 255, np.uint8)
        result = np.concatenate([before, gap, result], axis=1)  # H, 2W + gap, 3: an RGB figure
    else:
        result = photo.like_source(result, mask)
    for note in write_image(result, args.output, photo.jpeg):
        print(f"warning: {note}", file=sys.stderr)
    print(f"wrote {args.output} ({shape[1]}x{shape[0]}, {int(mask.sum())} hole pixels, model {inpainter.checkpoint})")
    return 0


def joined_box(argv: list) -> list:
    """'--box -10,-10,50,50' as '--box=-10,-10,50,50': argparse would take a value starting with '-' for a flag."""
    out, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        out.append(f"--box={rest.pop(0)}" if arg == "--box" and rest and rest[0].startswith("-") else arg)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("photo", help="a photo, or a folder of NAME.ext + NAME_mask.png pairs")
    p.add_argument("--mask", help="mask image: white = hole (any mode; resized to the photo, nearest neighbour)")
    p.add_argument("--box", help="hole as x,y,w,h in photo pixels, instead of --mask")
    p.add_argument("-o", "--output", help="output image (single photo); .png keeps every other pixel exactly")
    p.add_argument("--out", help="output folder (folder mode)")
    p.add_argument("--checkpoint", help="generator checkpoint (default: shipped weights, else newest run's best.pt)")
    p.add_argument("--engine", default="torch", choices=("torch", "onnx"))
    p.add_argument("--onnx", help="ONNX file for --engine onnx (default: the checkpoint's name with .onnx)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger photos and masks")
    p.add_argument("--compare", action="store_true",
                   help="write the photo with its hole painted white beside the result, instead of the result alone")
    args = p.parse_args(joined_box(sys.argv[1:] if argv is None else argv))
    try:
        check_max_pixels(args.max_pixels)
        return inpaint_folder(args) if os.path.isdir(args.photo) else inpaint_one(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
