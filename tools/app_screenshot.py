"""Drive app.py's page in headless Chromium: upload a photo, paint a stroke, press Inpaint.

    python tools/app_screenshot.py PHOTO --checkpoint out/RUN/best.pt -o report_images/app.png

Used by tests/test_app.py (the browser test) and to make the README's screenshot.
"""
import argparse
import base64
import io
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def start_app(checkpoint: "str | None", port: int, timeout: float = 120) -> subprocess.Popen:
    """Start app.py and return once it prints its local URL."""
    model = ["--checkpoint", checkpoint] if checkpoint else []  # default: the shipped weights
    server = subprocess.Popen([sys.executable, "app.py", *model, "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    start, log = time.time(), ""
    while f"127.0.0.1:{port}" not in log:
        line = server.stdout.readline()
        if (not line and server.poll() is not None) or time.time() - start > timeout:
            server.kill()
            raise RuntimeError(f"app.py did not start:\n{log}")
        log += line
    return server


def _fetch_png(page, url: str) -> np.ndarray:
    data = page.evaluate("""async (u) => { const r = await fetch(u); const b = new Uint8Array(await r.arrayBuffer());
        let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s); }""", url)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def drive_page(url: str, photo: str, screenshot: "str | None" = None, stroke: float = 0.2) -> np.ndarray:
    """Upload `photo`, paint a horizontal stroke through its middle (stroke x the editor's width long),
    press Inpaint and return the inpainted image as the page serves it."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1150})
        page.goto(url, wait_until="networkidle")
        page.locator("#editor input[type=file]").set_input_files(photo)
        page.wait_for_timeout(1500)
        box = page.locator("#editor canvas").first.bounding_box()
        cx, cy, half = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, stroke * box["width"] / 2
        page.mouse.move(cx - half, cy)
        page.mouse.down()
        page.mouse.move(cx + half, cy, steps=25)
        page.mouse.up()
        page.wait_for_timeout(300)
        page.click("#inpaint")
        page.locator("#result img").wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        result = _fetch_png(page, page.locator("#result img").get_attribute("src"))
        if screenshot:
            page.screenshot(path=screenshot)
        browser.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("photo")
    p.add_argument("--checkpoint", default=None, help="default: the shipped weights")
    p.add_argument("-o", "--output", required=True, help="screenshot PNG")
    p.add_argument("--port", type=int, default=7870)
    args = p.parse_args(argv)
    server = start_app(args.checkpoint, args.port)
    try:
        drive_page(f"http://127.0.0.1:{args.port}", args.photo, args.output)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
