"""A web page for inpainting your own photos: upload, paint the hole (or type a box), press Inpaint.

    pip install -r requirements-app.txt
    python app.py                       # prints the local URL; listens on 127.0.0.1 only
    python app.py --checkpoint out/RUN/best.pt --port 7860

The model list holds the shipped weights and every run under out/ (--runs DIR); each model is loaded once, at
start (one that cannot be is listed with the reason). Uploads are checked from their header before gradio decodes
them: photos over --max-pixels and files that are not images are refused at once. Gradio's analytics
are switched off; --host 0.0.0.0 or --share open the page to others and say so.
"""
import argparse
import io
import os
import sys
import warnings

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import numpy as np  # noqa: E402

from PIL import Image  # noqa: E402

from checkpoints import SHIPPED_WEIGHTS  # noqa: E402
from config import UserError  # noqa: E402
from dataset import IMAGE_ERRORS  # noqa: E402
from inpaint import (DEFAULT_MAX_PIXELS, InpaintError, Inpainter, box_mask, check_mask, check_max_pixels,  # noqa: E402
                     megapixels)

BRUSH_SIZES = (2, 60, 12)  # px: min, max, default; thin enough to paint over one eye without the other
REFUSED = "refused"  # the editor value's key for an upload that was checked and not decoded: what is wrong with it
LOCAL = ("127.0.0.1", "localhost", "::1")


def model_choices(checkpoint: "str | None", runs_dir: str) -> dict:
    """{label: checkpoint}: the given checkpoint first, then the shipped weights, then each run's best.pt."""
    choices = {}
    if checkpoint:
        choices[f"{checkpoint} (given)"] = checkpoint
    if os.path.isfile(SHIPPED_WEIGHTS):
        choices["shipped weights (weights/generator.pt)"] = SHIPPED_WEIGHTS
    if os.path.isdir(runs_dir):
        for run in sorted(os.listdir(runs_dir)):
            best = os.path.join(runs_dir, run, "best.pt")
            if os.path.isfile(best) and best != checkpoint:
                choices[f"run {run} (best.pt)"] = best
    if not choices:
        raise InpaintError(f"no model: no --checkpoint, no shipped weights and no run under {runs_dir}/; "
                           "train one with python main.py")
    return choices


class Models:
    """Loads each chosen model once and keeps it; one that cannot be loaded keeps its reason instead."""

    def __init__(self, choices: dict, device: str):
        self.choices, self.device, self.loaded, self.problems = choices, device, {}, {}

    def __call__(self, label: str) -> Inpainter:
        if label not in self.choices:
            raise InpaintError(f"unknown model {label!r}: reload the page")
        if label in self.problems:
            raise InpaintError(self.problems[label])
        if label not in self.loaded:
            try:
                self.loaded[label] = Inpainter(self.choices[label], device=self.device)
            except UserError as e:
                self.problems[label] = str(e)
                raise
        return self.loaded[label]

    def load_all(self) -> list:
        """Load every listed model now, so the list can say which cannot be used and why; the usable labels."""
        for label in self.choices:
            try:
                self(label)
            except UserError:
                pass
        usable = [label for label in self.choices if label not in self.problems]
        if not usable:
            raise InpaintError("no usable model:\n" + "\n".join(f"  {p}" for p in self.problems.values()))
        return usable

    def dropdown_choices(self) -> list:
        """(shown name, label) pairs: a model that cannot be used is listed with its reason."""
        return [(f"{label}: cannot be used ({self.problems[label]})" if label in self.problems else label, label)
                for label in self.choices]


def photo_shape(value) -> "tuple | None":
    """(height, width) of the editor's uploaded photo, None before an upload (or after it was cleared)."""
    background = (value or {}).get("background")
    return None if background is None else np.asarray(background).shape[:2]


def photo_size_problem(value, max_pixels: int) -> str:
    """'' when the uploaded photo fits the budget, else what to do about it."""
    shape = photo_shape(value)
    if shape is None:
        return ""
    return size_problem(shape[1], shape[0], max_pixels)


def size_problem(w: int, h: int, max_pixels: int) -> str:
    if w * h <= max_pixels:
        return ""
    side = int((max_pixels / (h * w)) ** 0.5 * max(h, w))
    return (f"This photo is {w}x{h} = {megapixels(w * h)}, over this page's {megapixels(max_pixels)} budget: "
            f"downscale it (longest side at most {side} px) and upload it again.")


def upload_problem(file, max_pixels: int) -> str:
    """'' when an uploaded file (a path or its bytes) is an image within the pixel budget, else what is wrong
    with it. The size comes from the header, before anything is decoded, so a small file that would
    decode to hundreds of megapixels costs no memory; then the image is decoded once to find truncation."""
    source = io.BytesIO(file) if isinstance(file, (bytes, bytearray)) else file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if size_problem(*im.size, max_pixels):
                    return size_problem(*im.size, max_pixels)
                im.load()
    except Image.DecompressionBombError as e:
        return f"This photo is far too large to open ({e}): downscale it and upload it again."
    except IMAGE_ERRORS as e:
        return f"This file is not an image this page can read ({type(e).__name__}: {e}): upload a JPEG, PNG or WebP photo."
    return ""


def checked_editor(max_pixels: int, **kwargs):
    """The page's photo editor: a gradio ImageMask whose uploads are checked by upload_problem before gradio
    decodes them. A bad one is never decoded: its value carries REFUSED (what is wrong) instead of a photo, which
    the upload's status line and the Inpaint button turn into a message, plus one line in the server log."""
    import gradio as gr
    editor = gr.ImageMask(**kwargs)
    # wrapped on the instance: a subclass of a gradio component would make gradio write an app.pyi stub here
    decode = editor.preprocess

    def preprocess(payload):
        background = getattr(payload, "background", None)
        if payload is not None and payload.id is not None:  # sent in pieces: the assembled blobs
            cached = editor.blob_storage.get(payload.id)
            background = cached.background if cached else None
        problem = "" if background is None else upload_problem(getattr(background, "path", background), max_pixels)
        if problem:
            print(f"upload refused: {problem}", file=sys.stderr, flush=True)
            # a value, not gr.Error: an error would stop the upload event before the status line says why
            return {"background": None, "layers": [], "composite": None, REFUSED: problem}
        return decode(payload)

    editor.preprocess = preprocess
    return editor


def editor_inputs(value, box: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple:
    """Gradio ImageMask value (+ an optional 'x,y,w,h' box) -> (photo H, W, 3 uint8, hole mask H, W bool).

    The value holds the uploaded photo as 'background' and the brush strokes as RGBA 'layers';
    every painted (non-transparent) layer pixel is hole, and so is the box.
    """
    if value and value.get(REFUSED):
        raise InpaintError(value[REFUSED])
    if not value or value.get("background") is None:
        raise InpaintError("upload a photo first")
    problem = photo_size_problem(value, max_pixels)
    if problem:
        raise InpaintError(problem)
    background = np.asarray(value["background"])
    if background.ndim == 2:
        background = np.stack([background] * 3, axis=-1)
    h, w = background.shape[:2]
    photo = background[..., :3].astype(np.uint8)
    mask = box_mask(box, (h, w), "the box") if box and box.strip() else np.zeros((h, w), bool)
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.shape[:2] != (h, w):
            continue  # a layer that does not cover the photo cannot be a mask of it
        mask |= (layer[..., 3] > 0) if layer.ndim == 3 and layer.shape[2] == 4 else (layer.max(axis=-1) > 0)
    check_mask(mask, "the painted mask" + (" and box" if box and box.strip() else ""))
    return photo, mask


def make_handler(models: Models, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The Inpaint button's callback: (editor value, box, model label) -> (before/after, inpainted, status).
    A user's mistake becomes a message on the page, not an exception (no traceback in the server log)."""
    import gradio as gr

    def handle(value, box="", label=None):
        try:
            photo, mask = editor_inputs(value, box, max_pixels)
            label = label or next(iter(models.choices))
            result = models(label)(photo, mask)
        except UserError as e:
            gr.Warning(str(e))
            return gr.skip(), gr.skip(), f"**Not inpainted:** {e}"
        return (photo, result), result, (f"Inpainted {int(mask.sum())} pixels of a {photo.shape[1]}x{photo.shape[0]} "
                                         f"photo with {label}.")
    return handle


def brush(size: int):
    import gradio as gr
    return gr.Brush(default_size=int(size), colors=["#ffffff"], color_mode="fixed")


def build_demo(models: Models, max_pixels: int = DEFAULT_MAX_PIXELS):
    import gradio as gr
    labels = [label for label in models.choices if label not in models.problems]
    with gr.Blocks(title="Face inpainting") as demo:
        gr.Markdown("## Face inpainting\nUpload a photo, paint over what should go (or type a box), press "
                    "**Inpaint**. Drag the slider on the result to compare before and after.")
        with gr.Row():
            model = gr.Dropdown(models.dropdown_choices(), value=labels[0], label="model", elem_id="model")
            size = gr.Slider(*BRUSH_SIZES[:2], value=BRUSH_SIZES[2], step=1, label="brush size (px)", elem_id="brush")
            box = gr.Textbox(label="box x,y,w,h (optional, photo pixels)", placeholder="e.g. 60,120,80,30",
                             elem_id="box")
        # PNG, not the default webp: a lossy round trip would blur the painted mask's edges
        editor = checked_editor(max_pixels, label="photo: paint the hole", type="numpy", image_mode="RGB",
                                format="png", sources=["upload", "clipboard"], layers=False, elem_id="editor",
                                brush=brush(BRUSH_SIZES[2]))
        button = gr.Button("Inpaint", variant="primary", elem_id="inpaint")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            compare = gr.ImageSlider(label="before / after", type="numpy", format="png", elem_id="compare",
                                     max_height=420)
            result = gr.Image(label="inpainted", type="numpy", format="png", interactive=False, elem_id="result",
                              height=420, buttons=["download"])
        size.change(lambda s: gr.ImageMask(brush=brush(s)), inputs=size, outputs=editor)
        # one queue for both: an upload's message never lands after (and over) a later click's result
        editor.upload(lambda v: upload_message(v, max_pixels), inputs=editor, outputs=status, show_progress="hidden",
                      concurrency_id="editor")
        button.click(make_handler(models, max_pixels), inputs=[editor, box, model],
                     outputs=[compare, result, status], show_progress="full", concurrency_id="editor")
    return demo


def upload_message(value, max_pixels: int) -> str:
    import gradio as gr
    refused = (value or {}).get(REFUSED, "")
    problem = refused or photo_size_problem(value, max_pixels)
    if problem:
        gr.Warning(problem)
        return f"**{'Too large' if 'downscale' in problem else 'Not an image'}:** {problem}"
    shape = photo_shape(value)
    if shape is None:
        return ""
    h, w = shape
    return f"**Photo {w}x{h}:** paint over what should go (or type a box), then press **Inpaint**."


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--checkpoint", help="the model selected first (default: the shipped weights)")
    p.add_argument("--runs", default="out", help="list every run under this folder as a model (default: out)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger photos")
    args = p.parse_args(argv)
    try:
        models = Models(model_choices(args.checkpoint, args.runs), args.device)
        check_max_pixels(args.max_pixels)
        usable = models.load_all()  # now: a broken checkpoint is listed with its reason, not found on a click
        given = f"{args.checkpoint} (given)"
        if given in models.problems:
            raise InpaintError(models.problems[given])
        first = usable[0]
        for label, problem in models.problems.items():
            print(f"warning: model {label} cannot be used: {problem}", file=sys.stderr, flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {models.choices[first]} (+{len(models.choices) - 1} more to choose from on the page)", flush=True)
    if args.host not in LOCAL or args.share:
        print(f"warning: the page is open to {'anyone with the link' if args.share else 'your network'} "
              f"({args.host}{', --share' if args.share else ''}); photos people upload reach this machine",
              file=sys.stderr, flush=True)
    build_demo(models, args.max_pixels).launch(server_name=args.host, server_port=args.port, share=args.share,
                                               show_error=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
