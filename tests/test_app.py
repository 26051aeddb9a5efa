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


def test_handler_inpaints_only_the_painted_pixels(checkpoint):
    gr = need("gradio")
    from app import make_handler
    from inpaint import Inpainter
    handle = make_handler(Inpainter(checkpoint, device="cpu"))
    photo = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    painted = np.zeros((70, 90), bool)
    painted[20:30, 30:60] = True
    original, result = handle(editor_value(photo, painted))
    assert np.array_equal(original, photo) and result.shape == photo.shape
    assert np.array_equal(result[~painted], photo[~painted]) and not np.array_equal(result[painted], photo[painted])
    with pytest.raises(gr.Error, match="upload a photo"):
        handle({"background": None, "layers": [], "composite": None})
    with pytest.raises(gr.Error, match="no pixel as hole"):
        handle(editor_value(photo, np.zeros((70, 90), bool)))
    with pytest.raises(gr.Error, match="budget"):
        make_handler(Inpainter(checkpoint, device="cpu"), max_pixels=100)(editor_value(photo, painted))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_in_headless_chromium(checkpoint, tmp_path):
    need("gradio")
    need("playwright.sync_api")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from app_screenshot import CHROMIUM, drive_page, start_app
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} missing; .ci/run installs Debian's chromium")
        pytest.skip("apt-get install chromium to run the browser test")
    size = 96
    photo = (np.random.default_rng(1).random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    port = free_port()
    server = start_app(checkpoint, port)
    try:
        result = drive_page(f"http://127.0.0.1:{port}", str(tmp_path / "photo.png"), str(tmp_path / "page.png"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result.shape == photo.shape
    changed = (result != photo).any(-1)
    rows, cols = np.nonzero(changed.any(1))[0], np.nonzero(changed.any(0))[0]
    assert changed.sum() > 200, "the stroke changed nothing"
    # only near the stroke: a horizontal band through the middle, the top and bottom untouched
    assert rows.min() > 0.15 * size and rows.max() < 0.85 * size, (rows.min(), rows.max())
    assert cols.max() - cols.min() > 0.4 * size
