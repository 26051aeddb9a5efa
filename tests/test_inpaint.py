"""inpaint.py (any photo size, folder mode, bad input) and export.py (ONNX agrees with PyTorch)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_script, small_generator
from inpaint import Inpainter, box_mask, read_mask, window_for
from models import ARCHITECTURES


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    return os.path.join(tiny_run[0], "best.pt")


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    arr = (rng.random((90, 130, 3)) * 255).astype(np.uint8)  # larger than the tiny model's 32 px, not square
    path = tmp_path_factory.mktemp("photo") / "face.jpg"
    Image.fromarray(arr).save(path, quality=95)
    return str(path)


def load(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_box_inpainting_changes_only_the_hole(checkpoint, photo_path, tmp_path):
    out = tmp_path / "out.png"
    run_script("inpaint.py", photo_path, "--box", "40,30,12,10", "-o", str(out), "--checkpoint", checkpoint)
    before, after = load(photo_path), load(out)
    hole = np.zeros(before.shape[:2], bool)
    hole[30:40, 40:52] = True
    assert after.shape == before.shape
    assert np.array_equal(after[~hole], before[~hole])  # every other pixel bit-identical
    assert not np.array_equal(after[hole], before[hole])


def test_compare_writes_input_and_result_side_by_side(checkpoint, photo_path, tmp_path):
    out = tmp_path / "cmp.png"
    run_script("inpaint.py", photo_path, "--box", "40,30,12,10", "-o", str(out), "--checkpoint", checkpoint,
               "--compare")
    both, photo = load(out), load(photo_path)
    assert both.shape[0] == 90 and both.shape[1] > 2 * 130
    assert (both[30:40, 40:52] == 255).all() and np.array_equal(both[:, :40], photo[:, :40])


def test_mask_file_any_size_and_several_holes(checkpoint, photo_path, tmp_path):
    mask = np.zeros((45, 65), np.uint8)  # half the photo's size: resized with nearest neighbour
    mask[5:10, 5:12] = 255
    mask[30:40, 45:60] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = tmp_path / "out.png"
    run_script("inpaint.py", photo_path, "--mask", str(tmp_path / "m.png"), "-o", str(out), "--checkpoint", checkpoint)
    before, after = load(photo_path), load(out)
    hole = np.asarray(Image.fromarray(mask).resize((130, 90), Image.NEAREST)) > 127
    changed = (after != before).any(-1)
    assert not changed[~hole].any() and changed[hole].mean() > 0.5


def test_windows_keep_context_and_stay_inside():
    assert window_for((10, 10, 20, 20), (1000, 1000), 200) == (0, 0, 200, 200)
    t, le, h, w = window_for((500, 600, 600, 700), (1000, 1000), 200)
    assert h == w == 400 and t <= 500 and t + h >= 600 and le <= 600 and le + w >= 700
    assert window_for((0, 0, 50, 300), (100, 300), 200) == (0, 0, 100, 300)  # clipped to the photo


def test_alpha_layer_mask_and_photo_rejected_as_mask(tmp_path):
    layer = np.zeros((20, 20, 4), np.uint8)
    layer[5:9, 5:9] = (255, 0, 0, 255)  # a red brush stroke on a transparent layer
    Image.fromarray(layer).save(tmp_path / "layer.png")
    assert read_mask(str(tmp_path / "layer.png"), (20, 20)).sum() == 16
    noise = (np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "photo.png")
    with pytest.raises(Exception, match="does not look like a mask"):
        read_mask(str(tmp_path / "photo.png"), (20, 20))


@pytest.mark.parametrize("case, expect", [
    ("unreadable", "not a readable image"),
    ("empty_mask", "marks no pixel as hole"),
    ("full_mask", "covers the whole photo"),
    ("photo_mask", "does not look like a mask"),
    ("missing_ckpt", "not found"),
    ("too_big", "over the"),
    ("bad_box", "--box"),
])
def test_bad_input_fails_clearly_and_writes_nothing(checkpoint, photo_path, tmp_path, case, expect):
    photo, ckpt = photo_path, checkpoint
    args = []
    if case == "unreadable":
        (tmp_path / "x.jpg").write_text("no image")
        photo, args = str(tmp_path / "x.jpg"), ["--box", "1,1,4,4"]
    elif case in ("empty_mask", "full_mask"):
        Image.fromarray(np.full((90, 130), 0 if case == "empty_mask" else 255, np.uint8)).save(tmp_path / "m.png")
        args = ["--mask", str(tmp_path / "m.png")]
    elif case == "photo_mask":
        args = ["--mask", photo_path]
    elif case == "missing_ckpt":
        ckpt, args = str(tmp_path / "nope.pt"), ["--box", "1,1,4,4"]
    elif case == "too_big":
        args = ["--box", "1,1,4,4", "--max-pixels", "1000"]
    elif case == "bad_box":
        args = ["--box", "1,2,3"]
    out = tmp_path / "out.png"
    proc = run_script("inpaint.py", photo, *args, "-o", str(out), "--checkpoint", ckpt, check=False)
    assert proc.returncode == 2 and expect in proc.stderr, proc.stderr
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if "partial" in f]


def test_folder_mode(checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c", "d"):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
        mask = np.zeros((40, 48), np.uint8)
        mask[10:20, 10:20] = 255
        Image.fromarray(mask).save(tmp_path / f"{name}_mask.png")
    (tmp_path / "b.png").write_bytes(b"not an image")  # a bad pair early on: the ones after it still run
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(tmp_path / "c_mask.png")  # an empty mask
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(tmp_path / "e.png")  # no mask: skipped
    proc = run_script("inpaint.py", str(tmp_path), "--out", str(tmp_path / "done"), "--checkpoint", checkpoint,
                      check=False)
    assert proc.returncode == 1, proc.stderr
    assert sorted(os.listdir(tmp_path / "done")) == ["a.png", "d.png"] and "wrote 2 of 4 images" in proc.stdout
    assert "2 of 4 pairs failed" in proc.stderr
    assert "b.png' is not a readable image" in proc.stderr and "c_mask.png marks no pixel as hole" in proc.stderr


def test_jpeg_output_keeps_the_source_quality_and_warns(checkpoint, photo_path, tmp_path):
    before = load(photo_path)
    hole = np.zeros(before.shape[:2], bool)
    hole[30:40, 40:52] = True
    kept = tmp_path / "out.jpg"
    proc = run_script("inpaint.py", photo_path, "--box", "40,30,12,10", "-o", str(kept), "--checkpoint", checkpoint)
    assert "JPEG is lossy" in proc.stderr and "source photo's quality tables" in proc.stderr
    Image.fromarray(before).save(tmp_path / "default.jpg")  # what a plain save (quality 75) would do
    kept_err = np.abs(load(kept).astype(int) - before)[~hole].mean()
    plain_err = np.abs(load(tmp_path / "default.jpg").astype(int) - before)[~hole].mean()
    assert kept_err < plain_err / 2, (kept_err, plain_err)
    with Image.open(photo_path) as src, Image.open(kept) as out:
        assert out.quantization == src.quantization


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA"])
def test_grey_and_transparent_photos_keep_their_mode_and_alpha(checkpoint, tmp_path, mode):
    rng = np.random.default_rng(2)
    photo = Image.fromarray((rng.random((48, 56, 3)) * 255).astype(np.uint8)).convert(mode[0] if mode != "RGBA" else "RGB")
    if mode in ("RGBA", "LA"):
        alpha = (rng.random((48, 56)) > 0.3).astype(np.uint8) * 255
        photo.putalpha(Image.fromarray(alpha))
    photo.save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    run_script("inpaint.py", str(tmp_path / "in.png"), "--box", "20,10,12,14", "-o", str(out), "--checkpoint", checkpoint)
    result = Image.open(out)
    assert result.mode == mode
    a, b = np.asarray(photo), np.asarray(result)
    hole = np.zeros((48, 56), bool)
    hole[10:24, 20:32] = True
    assert np.array_equal(a[~hole], b[~hole])  # every other pixel (and all of the alpha) unchanged
    if mode != "L":
        assert np.array_equal(a[..., -1], b[..., -1])


@pytest.fixture(scope="module")
def onnx_model(checkpoint, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="pip install -r requirements-onnx.txt")
    path = str(tmp_path_factory.mktemp("onnx") / "g.onnx")
    run_script("export.py", "--checkpoint", checkpoint, "-o", path)
    return path


@pytest.mark.parametrize("b, h, w", [(1, 32, 32), (2, 48, 64), (3, 104, 40)])
def test_onnx_matches_pytorch_on_sizes_divisible_by_8(onnx_model, checkpoint, b, h, w):
    import onnxruntime as ort
    from checkpoints import generator_from_checkpoint, load_checkpoint
    g, _ = generator_from_checkpoint(load_checkpoint(checkpoint))
    x = torch.rand(b, 3, h, w) * 2 - 1
    m = (torch.rand(b, 1, h, w) > 0.7).float()
    from models import inpaint
    with torch.no_grad():
        ref = inpaint(g.float(), x, m)[1].numpy()  # the export is the whole inpaint: known pixels kept
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": x.numpy(), "mask": m.numpy()})[0]
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-4


@pytest.mark.parametrize("arch, extra", [pytest.param(a, e, id=f"{a}-{name}") for a in sorted(ARCHITECTURES) for name, e in
                                          (("plain", {}), ("prefill-gate", {"prefill": True, "gate": 0.01}))]
                         + [pytest.param("dilated", {"prefill": True, "gate": 0.01, "blur_up": True}, id="dilated-blur-up")])
def test_onnx_export_matches_pytorch_for_every_architecture(arch, extra, tmp_path):
    pytest.importorskip("onnxruntime", reason="pip install -r requirements-onnx.txt")
    import onnxruntime as ort
    from export import export_onnx
    from models import inpaint
    torch.manual_seed(0)
    g = small_generator(arch, **extra).eval()
    with torch.no_grad():
        g.attention.gamma.fill_(0.5)  # attention starts as the identity: make the export carry it
        for p in g.parameters():  # a prefill network's last layer starts at zero: make the export carry it too
            p.add_(torch.randn_like(p) * 0.01)
    path = export_onnx(g, str(tmp_path / "g.onnx"), 32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for b, h, w in [(1, 32, 32), (2, 48, 64)]:
        x, m = torch.rand(b, 3, h, w) * 2 - 1, (torch.rand(b, 1, h, w) > 0.7).float()
        with torch.no_grad():
            ref = inpaint(g, x, m)[1].numpy()
        out = session.run(None, {"image": x.numpy(), "mask": m.numpy()})[0]
        assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-4


def test_inpaint_with_the_onnx_engine(onnx_model, checkpoint, photo_path, tmp_path):
    out_onnx, out_torch = tmp_path / "onnx.png", tmp_path / "torch.png"
    common = [photo_path, "--box", "40,30,12,10", "--checkpoint", checkpoint]
    run_script("inpaint.py", *common, "-o", str(out_onnx), "--engine", "onnx", "--onnx", onnx_model)
    run_script("inpaint.py", *common, "-o", str(out_torch), "--device", "cpu")
    diff = np.abs(load(out_onnx).astype(int) - load(out_torch).astype(int))
    assert diff.max() <= 2  # fp32 both ways; rounding to uint8 may differ by one step


@pytest.mark.parametrize("colour", [(200, 60, 40), (40, 90, 210)])
def test_inpainter_in_process_fills_with_the_surrounding_colour(colour):
    """The shipped model's fill follows the context (a generator returning its input would leave the
    hole at the masked value, mid-grey, for every photo)."""
    inp = Inpainter(None, device="cpu")  # the shipped weights: trained, unlike the tiny test run
    photo = np.empty((64, 64, 3), np.uint8)
    photo[:] = colour
    mask = box_mask("24,24,10,10", photo.shape)
    out = inp(photo, mask)
    assert out.dtype == np.uint8 and out.shape == photo.shape and np.array_equal(out[~mask], photo[~mask])
    error = np.abs(out[mask].astype(int) - colour).mean()
    grey_error = np.abs(128 - np.array(colour)).mean()
    assert error < 0.5 * grey_error, (error, grey_error)
