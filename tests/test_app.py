"""The web page: its handler called directly, and the real page driven in headless Chromium."""
import importlib
import os
import socket
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

IN_CI = bool(os.environ.get("CI"))


def need(module):
    """Import an optional dependency; in CI a missing one is a failure, not a skip."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{module} is not installed; .ci/run installs requirements-app.txt")
        pytest.skip(f"pip install -r requirements-app.txt to test the web page ({module} missing)")


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    return os.path.join(tiny_run[0], "best.pt")


def editor_value(photo, painted):
    layer = np.zeros((*photo.shape[:2], 4), np.uint8)
    layer[painted] = (255, 255, 255, 255)
    return {"background": photo, "layers": [layer], "composite": photo}


def test_handler_inpaints_only_the_painted_pixels_and_the_box(checkpoint):
    need("gradio")
    from app import Models, make_handler
    handle = make_handler(Models({"tiny": checkpoint}, "cpu"))
    photo = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    painted = np.zeros((70, 90), bool)
    painted[20:30, 30:60] = True
    (before, after), result, status = handle(editor_value(photo, painted), "", "tiny")
    assert np.array_equal(before, photo) and np.array_equal(after, result) and result.shape == photo.shape
    assert np.array_equal(result[~painted], photo[~painted]) and not np.array_equal(result[painted], photo[painted])
    assert "300 pixels" in status and "tiny" in status
    _, boxed, _ = handle(editor_value(photo, painted), "5,50,10,8", "tiny")
    hole = painted.copy()
    hole[50:58, 5:15] = True
    assert np.array_equal(boxed[~hole], photo[~hole]) and not np.array_equal(boxed[50:58, 5:15], photo[50:58, 5:15])


@pytest.mark.parametrize("value, box, expect", [
    ({"background": None, "layers": [], "composite": None}, "", "upload a photo"),
    ("empty", "", "no pixel as hole"),
    ("painted", "1,2,3", "the box '1,2,3': expected four integers"),
])
def test_user_mistakes_become_messages_not_exceptions(checkpoint, value, box, expect):
    need("gradio")
    from app import Models, make_handler
    photo = np.zeros((40, 40, 3), np.uint8)
    painted = np.zeros((40, 40), bool)
    painted[5:9, 5:9] = value == "painted"
    if isinstance(value, str):
        value = editor_value(photo, painted)
    outputs = make_handler(Models({"tiny": checkpoint}, "cpu"))(value, box, "tiny")
    assert expect in outputs[-1]


def test_oversized_photo_is_refused_with_a_downscale_hint(checkpoint):
    need("gradio")
    from app import Models, make_handler, photo_size_problem, upload_message
    photo = np.zeros((70, 90, 3), np.uint8)
    message = photo_size_problem({"background": photo}, max_pixels=1000)
    assert "90x70 = 6,300 pixels" in message and "downscale" in message and "35 px" in message
    assert upload_message({"background": photo}, 1000).startswith("**Too large:**")
    assert upload_message({"background": photo}, 10_000).startswith("**Photo 90x70:** paint over")  # it fits
    assert upload_message(None, 1000) == ""  # the photo was cleared
    painted = np.ones((70, 90), bool)
    painted[0] = False
    assert "downscale" in make_handler(Models({"tiny": checkpoint}, "cpu"), 1000)(editor_value(photo, painted))[-1]


def test_model_list_holds_the_given_the_shipped_and_every_run(tiny_run, tmp_path):
    from app import model_choices
    from checkpoints import SHIPPED_WEIGHTS
    runs = tmp_path / "runs"
    os.makedirs(runs / "a")
    for f in ("best.pt", "last.pt"):
        os.link(os.path.join(tiny_run[0], f), runs / "a" / f)
    os.makedirs(runs / "empty")
    choices = model_choices("x.pt", str(runs))
    assert list(choices.values()) == ["x.pt", SHIPPED_WEIGHTS, str(runs / "a" / "best.pt")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def band(result, photo):
    """(rows, cols) extent of the pixels the page changed."""
    changed = (result != photo).any(-1)
    rows, cols = np.nonzero(changed.any(1))[0], np.nonzero(changed.any(0))[0]
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1, changed


def test_page_in_headless_chromium(checkpoint, tmp_path):
    """Upload too large a photo (message at once), press Inpaint with nothing painted (message, no traceback),
    paint a thin then a thick stroke (the brush-size control), then switch model (the result changes)."""
    need("gradio")
    need("playwright.sync_api")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from app_screenshot import CHROMIUM, Page, start_app
    from playwright.sync_api import sync_playwright
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} missing; .ci/run installs Debian's chromium")
        pytest.skip("apt-get install chromium to run the browser test")
    size = 64
    photo = (np.random.default_rng(1).random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(tmp_path / "huge.png")  # 9,216 px > the 5,000 budget
    port = free_port()
    server = start_app(checkpoint, port, extra=("--max-pixels", "5000", "--runs", str(tmp_path / "no-runs")))
    try:
        with sync_playwright() as p:
            page = Page(p, f"http://127.0.0.1:{port}")
            page.upload(str(tmp_path / "huge.png"))
            assert "Too large" in page.status() and "downscale" in page.status()
            page.upload(str(tmp_path / "photo.png"))
            assert f"Photo {size}x{size}" in page.status()
            page.press_and_wait_for_status("no pixel as hole")
            page.set_brush(3)
            thin_rows, thin_cols, _ = band(page.paint_and_inpaint(), photo)
            page.set_brush(12)
            thick = page.paint_and_inpaint()
            thick_rows, _, changed = band(thick, photo)
            page.choose_model("shipped weights (weights/generator.pt)")
            other = page.inpaint()
            status = page.status()
            page.close()
    finally:
        server.terminate()
        log = server.stdout.read()
        server.wait(timeout=30)
    assert thin_cols > 0.4 * size and thin_rows < 0.2 * size, (thin_rows, thin_cols)
    assert thick_rows > 2 * thin_rows, (thin_rows, thick_rows)
    assert 0.15 * size < np.nonzero(changed.any(1))[0].min() and np.nonzero(changed.any(1))[0].max() < 0.85 * size
    assert "shipped weights" in status and not np.array_equal(other[changed], thick[changed])
    assert np.array_equal(other[~changed], photo[~changed])
    assert "Traceback" not in log, log
