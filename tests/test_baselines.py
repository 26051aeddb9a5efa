import numpy as np
import pytest
import torch

from baselines import BASELINES, mean_fill
from config import Config
from dataset import open_splits, split_files
from evaluation import evaluate_baseline
from masks import fixed_masks


def smooth_image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.3 * np.sin(3 * xx + c + rng.random()) * np.cos(2 * yy) for c in range(3)], -1)
    return img.astype(np.float32)


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_keep_known_pixels_and_fill_the_hole(name):
    img = smooth_image()
    mask = np.zeros((64, 64), bool)
    mask[20:36, 24:40] = True
    out = BASELINES[name](img, mask)
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    np.testing.assert_allclose(out[~mask], img[~mask], atol=1 / 255 + 1e-6)
    # on a smooth image every method does far better than leaving the hole black
    assert np.abs(out[mask] - img[mask]).mean() < 0.5 * np.abs(img[mask]).mean()


def test_mean_fill_uses_the_ring_colour():
    img = np.zeros((32, 32, 3), np.float32)
    img[..., 0] = 0.2
    img[10:20, 10:20] = 0.9  # far inside the hole: must not leak into the fill
    mask = np.zeros((32, 32), bool)
    mask[8:22, 8:22] = True
    out = mean_fill(img, mask)
    np.testing.assert_allclose(out[mask], np.array([0.2, 0, 0], np.float32)[None].repeat(mask.sum(), 0), atol=1e-6)


def test_smoother_methods_win_on_smooth_images():
    img = torch.from_numpy(smooth_image(64, 1)).permute(2, 0, 1)
    images = (img[None] * 255).round().to(torch.uint8).repeat(4, 1, 1, 1)
    masks = torch.zeros(4, 1, 64, 64)
    masks[..., 24:40, 24:40] = 1
    psnr = {n: float(evaluate_baseline(f, images, masks)["psnr"].mean()) for n, f in BASELINES.items()}
    assert psnr["biharmonic"] > psnr["mean fill"] + 5


def test_baselines_order_and_rough_values_on_real_faces(real_data):
    """The issue's reference protocol on the first 40 test images: biharmonic > OpenCV > mean fill."""
    cfg = Config(data_dir=real_data)
    split = split_files(cfg.data_dir)
    split["test"] = split["test"][:40]
    images = open_splits(cfg, split, ("test",))["test"].take(40)
    masks = fixed_masks(cfg, 40, "test", "square")
    res = {n: evaluate_baseline(f, images, masks) for n, f in BASELINES.items()}
    psnr = {n: float(r["psnr"].mean()) for n, r in res.items()}
    ssim = {n: float(r["ssim"].mean()) for n, r in res.items()}
    assert psnr["biharmonic"] > max(psnr["Telea"], psnr["Navier-Stokes"]) > psnr["mean fill"]
    assert ssim["biharmonic"] > max(ssim["Telea"], ssim["Navier-Stokes"]) > ssim["mean fill"]
    # reference (103 images): mean 17.1 dB / 0.35, Telea 19.9 / 0.54, NS 20.1 / 0.54, biharmonic 22.3 / 0.62
    for name, ref in (("mean fill", 17.1), ("Telea", 19.9), ("Navier-Stokes", 20.1), ("biharmonic", 22.3)):
        assert abs(psnr[name] - ref) < 2.0, (name, psnr[name])
    assert 0.25 < ssim["mean fill"] < 0.5 and 0.5 < ssim["biharmonic"] < 0.75


def test_stopping_an_evaluation_drops_the_queued_fills():
    """Ctrl-C in results.py while the workers have a mask set queued: the pool cancels what has not started
    instead of running every remaining fill before the KeyboardInterrupt gets through."""
    import time
    from results import process_pool
    futures = []
    with pytest.raises(KeyboardInterrupt):
        with process_pool(2) as pool:
            futures = [pool.submit(time.sleep, 0.2) for _ in range(40)]
            raise KeyboardInterrupt
    deadline = time.monotonic() + 30  # the pool's manager thread cancels them: each is done either way
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(f.cancelled() for f in futures) >= 30
    with process_pool(1) as pool:
        assert pool is None  # one job: the fills run in the main process
