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


def start_app(checkpoint: "str | None", port: int, timeout: float = 120, extra: tuple = ()) -> subprocess.Popen:
    """Start app.py and return once it prints its local URL."""
    model = ["--checkpoint", checkpoint] if checkpoint else []  # default: the shipped weights
    server = subprocess.Popen([sys.executable, "app.py", *model, "--port", str(port), *extra], cwd=ROOT,
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


class Page:
    """app.py's page in headless Chromium, driven as a user would."""

    def __init__(self, playwright, url: str):
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport={"width": 1200, "height": 1250})
        self.page.goto(url, wait_until="networkidle")

    def upload(self, photo: str, timeout_ms: int = 60_000):
        """Upload `photo` and wait for the page's answer, which names the photo's size (ready, or too large)."""
        w, h = Image.open(photo).size
        self.page.locator("#editor input[type=file]").set_input_files(photo)
        self.wait_for_status(f"{w}x{h}", timeout_ms)
        self.page.wait_for_timeout(300)

    def set_brush(self, size: int):
        box = self.page.locator("#brush input[type=number]")
        box.fill(str(size))
        box.press("Enter")
        self.page.wait_for_timeout(1500)  # the server sends the editor its new brush

    def choose_model(self, label: str):
        self.page.locator("#model input").click()
        self.page.get_by_role("option", name=label).click()
        self.page.wait_for_timeout(300)

    def paint(self, stroke: float = 0.2, height: float = 0.5):
        """A horizontal stroke centred across the editor, `stroke` x its width long, at `height` x its height
        from the top (0.5 on an aligned CelebA photo crosses both eyes)."""
        tool = self.page.locator('#editor button[aria-label="Brush"]')
        if "highlight" not in (tool.get_attribute("class") or ""):  # the editor re-rendered without a tool
            tool.click()
            self.page.wait_for_timeout(300)
        box = self.page.locator("#editor canvas").first.bounding_box()
        cx, cy, half = box["x"] + box["width"] / 2, box["y"] + height * box["height"], stroke * box["width"] / 2
        self.page.mouse.move(cx - half, cy)
        self.page.mouse.down()
        self.page.mouse.move(cx + half, cy, steps=6)
        self.page.mouse.up()
        self.page.wait_for_timeout(300)

    def status(self) -> str:
        return self.page.locator("#status").inner_text()

    def inpaint(self, timeout_ms: int = 60_000) -> np.ndarray:
        """Press Inpaint and return the new result image as the page serves it."""
        old = self.page.locator("#result img").get_attribute("src") if self.page.locator("#result img").count() else None
        self.page.click("#inpaint")
        try:
            self.page.wait_for_function("(old) => { const i = document.querySelector('#result img');"
                                        " return i && i.src && i.src !== old; }", arg=old, timeout=timeout_ms)
        except Exception as e:
            self.page.screenshot(path=os.path.join(os.environ.get("TMPDIR", "/tmp"), "app_failed.png"))
            raise RuntimeError(f"no new result after pressing Inpaint; the page says {self.status()!r}") from e
        self.page.wait_for_timeout(500)
        return _fetch_png(self.page, self.page.locator("#result img").get_attribute("src"))

    def paint_and_inpaint(self, stroke: float = 0.2, height: float = 0.5, tries: int = 2) -> np.ndarray:
        """Paint a stroke (Page.paint) and press Inpaint. The editor can re-render just after a stroke (the server
        sending it a new brush) and drop it; the page then says its mask is empty, and the stroke is painted again."""
        for attempt in range(1, tries + 1):
            self.paint(stroke, height)
            try:
                return self.inpaint(timeout_ms=60_000 if attempt == tries else 15_000)
            except RuntimeError:
                if attempt == tries or "no pixel as hole" not in self.status():
                    raise
                print(f"the editor dropped stroke {attempt}; painting it again", file=sys.stderr)

    def wait_for_status(self, text: str, timeout_ms: int = 60_000):
        self.page.wait_for_function("(t) => document.querySelector('#status').innerText.includes(t)", arg=text,
                                    timeout=timeout_ms)

    def press_and_wait_for_status(self, text: str, timeout_ms: int = 60_000):
        self.page.click("#inpaint")
        self.wait_for_status(text, timeout_ms)

    def close(self):
        self.browser.close()


def drive_page(url: str, photo: str, screenshot: "str | None" = None, stroke: float = 0.2,
               brush: "int | None" = None, height: float = 0.5) -> np.ndarray:
    """Upload `photo`, paint a horizontal stroke (Page.paint), press Inpaint and return the result."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        page = Page(p, url)
        if brush:
            page.set_brush(brush)
        page.upload(photo)
        result = page.paint_and_inpaint(stroke, height)
        if screenshot:
            page.page.screenshot(path=screenshot, full_page=True)
        page.close()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("photo")
    p.add_argument("--checkpoint", default=None, help="default: the shipped weights")
    p.add_argument("-o", "--output", required=True, help="screenshot PNG")
    p.add_argument("--port", type=int, default=7870)
    p.add_argument("--brush", type=int, default=None, help="brush size in photo pixels (default: the page's)")
    p.add_argument("--stroke", type=float, default=0.2, help="stroke length as a fraction of the photo's width")
    p.add_argument("--height", type=float, default=0.5,
                   help="where the stroke runs, as a fraction of the photo's height from the top (0.5: an aligned "
                   "CelebA face's eyes)")
    args = p.parse_args(argv)
    server = start_app(args.checkpoint, args.port)
    try:
        drive_page(f"http://127.0.0.1:{args.port}", args.photo, args.output, args.stroke, args.brush, args.height)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
