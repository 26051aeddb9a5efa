"""A web page for inpainting your own photos: upload, paint the hole with the brush, press Inpaint.

    pip install -r requirements-app.txt
    python app.py                       # prints the local URL; listens on 127.0.0.1 only
    python app.py --checkpoint out/RUN/best.pt --port 7860

The model is loaded once and runs on the CPU by default. Gradio's analytics are switched off.
"""
import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import numpy as np  # noqa: E402

from checkpoints import CheckpointError  # noqa: E402
from inpaint import DEFAULT_MAX_PIXELS, InpaintError, Inpainter, check_mask  # noqa: E402


def editor_inputs(value, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple:
    """Gradio ImageMask value -> (photo H, W, 3 uint8, hole mask H, W bool).

    The value holds the uploaded photo as 'background' and the brush strokes as RGBA 'layers';
    every painted (non-transparent) layer pixel is hole.
    """
    if not value or value.get("background") is None:
        raise InpaintError("upload a photo first")
    background = np.asarray(value["background"])
    if background.ndim == 2:
        background = np.stack([background] * 3, axis=-1)
    h, w = background.shape[:2]
    if h * w > max_pixels:
        raise InpaintError(f"the photo is {w}x{h} = {w * h / 1e6:.0f} MP, over the {max_pixels / 1e6:.0f} MP budget")
    photo = background[..., :3].astype(np.uint8)
    mask = np.zeros((h, w), bool)
    for layer in value.get("layers") or []:
        layer = np.asarray(layer)
        if layer.shape[:2] != (h, w):
            continue  # a layer that does not cover the photo cannot be a mask of it
        mask |= (layer[..., 3] > 0) if layer.ndim == 3 and layer.shape[2] == 4 else (layer.max(axis=-1) > 0)
    check_mask(mask, "the painted mask")
    return photo, mask


def make_handler(inpainter: Inpainter, max_pixels: int = DEFAULT_MAX_PIXELS):
    """The Inpaint button's callback: editor value -> (original, inpainted)."""
    import gradio as gr

    def handle(value):
        try:
            photo, mask = editor_inputs(value, max_pixels)
            return photo, inpainter(photo, mask)
        except InpaintError as e:
            raise gr.Error(str(e)) from None
    return handle


def build_demo(inpainter: Inpainter, max_pixels: int = DEFAULT_MAX_PIXELS):
    import gradio as gr
    with gr.Blocks(title="Face inpainting") as demo:
        gr.Markdown("## Face inpainting\nUpload a photo, paint over what should go, press **Inpaint**.")
        # PNG, not the default webp: a lossy round trip would blur the painted mask's edges
        editor = gr.ImageMask(label="photo: paint the hole", type="numpy", image_mode="RGB", format="png",
                              sources=["upload", "clipboard"], layers=False, elem_id="editor",
                              brush=gr.Brush(default_size="auto", colors=["#ffffff"], color_mode="fixed"))
        button = gr.Button("Inpaint", variant="primary", elem_id="inpaint")
        with gr.Row():
            original = gr.Image(label="original", type="numpy", format="png", interactive=False, elem_id="original",
                                height=360)
            result = gr.Image(label="inpainted", type="numpy", format="png", interactive=False, elem_id="result",
                              height=360, buttons=["download"])
        button.click(make_handler(inpainter, max_pixels), inputs=editor, outputs=[original, result])
    return demo


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--checkpoint", help="generator checkpoint (default: shipped weights, else newest run's best.pt)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger photos")
    args = p.parse_args(argv)
    try:
        inpainter = Inpainter(args.checkpoint, device=args.device)
    except (InpaintError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"model: {inpainter.checkpoint}", flush=True)
    build_demo(inpainter, args.max_pixels).launch(server_name=args.host, server_port=args.port, share=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
