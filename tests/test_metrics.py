import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import metrics
from losses import edge_loss, l1_loss, seam_loss, ssim_loss


def pair(seed, shape=(3, 48, 56), noise=0.15):
    rng = np.random.default_rng(seed)
    a = rng.random(shape).astype(np.float32)
    b = np.clip(a + noise * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return a, b


@pytest.mark.parametrize("seed", range(3))
def test_gaussian_ssim_agrees_with_skimage(seed):
    a, b = pair(seed)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=True,
                                data_range=1, channel_axis=0)
    r = metrics.SSIM_RADIUS["gaussian"]
    ours = metrics.ssim_map(torch.from_numpy(a)[None], torch.from_numpy(b)[None], "gaussian")[..., r:-r, r:-r].mean()
    assert abs(float(ours) - ref) < 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_image_ssim_agrees_with_skimage_default(seed):
    a, b = pair(seed)
    ref = structural_similarity(a, b, data_range=1, channel_axis=0)
    assert abs(float(metrics.image_ssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None])) - ref) < 1e-4


def hole_case(seed, top=14, left=20, h=12, w=16):
    a, b = pair(seed)
    m = np.zeros(a.shape[1:], bool)
    m[top:top + h, left:left + w] = True
    b = np.where(m, b, a)  # outside the hole the images agree, as for an inpainting
    return a, b, m, torch.from_numpy(m.astype(np.float32))[None, None]


@pytest.mark.parametrize("seed", range(3))
def test_hole_ssim_is_skimage_on_the_bounding_box_plus_margin(seed):
    a, b, m, mt = hole_case(seed)
    k = metrics.HOLE_SSIM_MARGIN
    crop = (slice(None), slice(14 - k, 26 + k), slice(20 - k, 36 + k))
    ref = structural_similarity(a[crop], b[crop], data_range=1, channel_axis=0)
    ours = metrics.hole_ssim(torch.from_numpy(b)[None], torch.from_numpy(a)[None], mt)
    assert abs(float(ours) - ref) < 1e-4


@pytest.mark.parametrize("seed", range(3))
def test_hole_psnr_and_l1_agree_with_numpy(seed):
    a, b, m, mt = hole_case(seed)
    ref_psnr = peak_signal_noise_ratio(a[:, m], b[:, m], data_range=1)
    ref_l1 = np.abs(a[:, m] - b[:, m]).mean()
    ta, tb = torch.from_numpy(a)[None], torch.from_numpy(b)[None]
    assert abs(float(metrics.hole_psnr(tb, ta, mt)) - ref_psnr) < 1e-3
    assert abs(float(metrics.hole_l1(tb, ta, mt)) - ref_l1) < 1e-6
    assert abs(float(metrics.image_psnr(tb, ta)) - peak_signal_noise_ratio(a, b, data_range=1)) < 1e-3


def test_sobel_magnitude_agrees_with_scipy():
    a, _ = pair(0)
    ours = metrics.sobel_magnitude(torch.from_numpy(a)[None])[0].numpy()
    for c in range(3):
        gx = ndimage.sobel(a[c], axis=1, mode="nearest") / 4
        gy = ndimage.sobel(a[c], axis=0, mode="nearest") / 4
        np.testing.assert_allclose(ours[c], np.sqrt(gx ** 2 + gy ** 2 + 1e-12), atol=1e-5)


def test_hole_edge_agrees_with_numpy():
    a, b, m, mt = hole_case(1)
    ga = metrics.sobel_magnitude(torch.from_numpy(a)[None])[0].numpy()
    gb = metrics.sobel_magnitude(torch.from_numpy(b)[None])[0].numpy()
    ref = np.abs(ga - gb)[:, m].mean()
    assert abs(float(metrics.hole_edge(torch.from_numpy(b)[None], torch.from_numpy(a)[None], mt)) - ref) < 1e-6


def test_mean_ci95_matches_numpy():
    v = np.random.default_rng(0).random(50)
    mean, half = metrics.mean_ci95(v)
    assert abs(mean - v.mean()) < 1e-12 and abs(half - 1.96 * v.std(ddof=1) / np.sqrt(50)) < 1e-12


def test_edge_loss_properties():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    w = torch.ones(2, 1, 32, 32)
    assert edge_loss(x, x, w) == 0
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    # blur weakens edges: penalised; a constant shift keeps every edge: not penalised
    assert edge_loss(blurred, x, w) > 0.05
    assert edge_loss(x + 0.3, x, w) < 1e-5
    assert l1_loss(x + 0.3, x, w) == pytest.approx(0.3, abs=1e-5)
    # the weight map restricts where the loss looks
    w0 = torch.zeros_like(w)
    w0[..., 8:16, 8:16] = 1
    y = x.clone()
    y[..., 20:, 20:] += 0.5
    assert edge_loss(y, x, w0) == 0 and l1_loss(y, x, w0) == 0


def test_ssim_loss_zero_for_identical_and_positive_otherwise():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    w = torch.ones(2, 1, 32, 32)
    assert abs(float(ssim_loss(x, x, w))) < 1e-5
    assert ssim_loss(x.flip(-1), x, w) > 0.5


@pytest.mark.parametrize("hole, margin", [(32, 16), (8, 0), (60, 0)])
def test_ssim_loss_on_crops_equals_the_full_image_computation(hole, margin):
    from metrics import masked_mean
    from masks import dilate, rng_for, square_masks
    torch.manual_seed(hole)
    x = torch.rand(6, 3, 100, 100) * 2 - 1
    p = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    w = dilate(square_masks(6, 100, hole, margin, rng_for(hole)), 4)  # margin 0: holes touch the border
    full = 1 - masked_mean(metrics.ssim_map((p + 1) / 2, (x + 1) / 2, "gaussian"), w, dim=None)
    assert abs(float(ssim_loss(p, x, w)) - float(full)) < 1e-5


def stroke_case(size=64):
    """A smooth photo (a ramp), a vertical 6-px stroke, its exact fill and the same fill with a darker outline."""
    ramp = torch.linspace(0.2, 0.8, size).view(1, 1, 1, size).expand(1, 3, size, size).clone()
    mask = torch.zeros(1, 1, size, size)
    mask[..., 29:35] = 1
    outlined = ramp.clone()
    outlined[..., [29, 34]] -= 0.2  # the fill's first and last columns drawn darker: an outline along the stroke
    return ramp, mask, outlined


def test_seam_scores_a_drawn_outline_above_the_exact_fill():
    photo, mask, outlined = stroke_case()
    exact, drawn = metrics.seam(photo, photo, mask), metrics.seam(outlined, photo, mask)
    assert float(exact) == 0 and float(drawn) > 1  # x100: grey levels in [0, 1]
    # only the band counts: the same outline 10 px away from the hole is not a seam of this hole
    far = photo.clone()
    far[..., 10] -= 0.2
    assert float(metrics.seam(far, photo, mask)) == 0


def test_seam_loss_is_the_seam_of_the_composite_and_moves_only_hole_pixels():
    photo, mask, outlined = stroke_case()
    raw = outlined.clone()
    raw[..., :29] += 0.3  # outside the hole: the composite never shows it, so neither loss nor gradient sees it
    raw.requires_grad_(True)
    loss = seam_loss(raw, photo, mask)
    assert abs(float(loss) * 100 - float(metrics.seam(outlined, photo, mask))) < 1e-4
    assert float(seam_loss(photo, photo, mask)) == 0
    (grad,) = torch.autograd.grad(loss, raw)
    assert grad[..., 29:35].abs().sum() > 0 and float((grad * (1 - mask)).abs().sum()) == 0


def test_detail_is_one_for_the_photo_below_it_for_a_blur_and_nan_without_an_interior():
    torch.manual_seed(0)
    photo = torch.rand(1, 3, 64, 64)
    box = torch.zeros(1, 1, 64, 64)
    box[..., 16:48, 16:48] = 1
    flat = photo.clone()
    flat[..., 16:48, 16:48] = photo[..., 16:48, 16:48].mean()
    assert abs(float(metrics.detail(photo, photo, box)) - 1) < 1e-6
    assert float(metrics.detail(flat, photo, box)) < 0.05
    thin = torch.zeros(1, 1, 64, 64)
    thin[..., 30:34] = 1  # 4 px wide: no pixel is 3 px from the photo
    assert torch.isnan(metrics.detail(photo, photo, thin)).all()


def test_grid_is_near_one_for_a_texture_and_rises_for_a_faint_8_px_pattern_that_detail_misses():
    """A smooth random texture in a 64-px box scores ~1 (no lock); the same texture plus an 8-px checkerboard
    at 0.4 of its contrast scores ~3, though its detail moves by under 10 %; a 4-px pattern (the next
    upsampling's period) locks to the 8-px phases too; a hole too small to tell is NaN."""
    torch.manual_seed(0)
    photo = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 100, 100), 5, stride=1)  # 4, 3, 96, 96
    box = torch.zeros(4, 1, 96, 96)
    box[..., 16:80, 16:80] = 1
    y, x = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    for period in (8, 4):
        pattern = ((y // (period // 2) + x // (period // 2)) % 2).float() - 0.5  # a checkerboard of period px
        locked = photo + 0.4 * photo.std() * pattern
        clean, gridded = metrics.grid(photo, box), metrics.grid(locked, box)
        assert (clean < 1.2).all() and (gridded > 2.5).all(), (period, clean, gridded)
    assert abs(float(metrics.detail(locked, photo, box).mean()) - 1) < 0.1
    small = torch.zeros(4, 1, 96, 96)
    small[..., 40:56, 40:56] = 1  # 256 pixels: 4 a phase
    assert torch.isnan(metrics.grid(photo, small)).all()


def test_detail_is_averaged_over_images_in_logs_so_one_flat_original_does_not_decide_it():
    """399 fills at 0.8 of the photo's texture and one over a near-flat backdrop at 60x: the arithmetic mean says
    0.95 (inside the 0.8-1.2 goal), the geometric one stays at ~0.81; halving and doubling cancel; a flat fill's 0
    and a thin stroke's NaN do not break it."""
    values = torch.tensor([0.8] * 399 + [60.0])
    assert metrics.mean_ci95(values)[0] > 0.94
    mean, ci = metrics.METRICS["detail"].average(values)
    assert 0.80 < mean < 0.82 and 0 < ci < 0.02
    assert abs(metrics.geometric_mean_ci95(torch.tensor([0.5, 2.0, 0.5, 2.0]))[0] - 1) < 1e-9
    assert abs(metrics.geometric_mean_ci95(torch.tensor([0.0, 0.0, float("nan")]))[0] - metrics.RATIO_FLOOR) < 1e-12
    assert metrics.METRICS["psnr"].average(values) == metrics.mean_ci95(values)


def test_every_metric_declares_its_direction_once():
    psnr, lpips, detail = metrics.METRICS["psnr"], metrics.METRICS["lpips"], metrics.METRICS["detail"]
    assert psnr.better(21.0, 20.0) and not psnr.better(20.0, 21.0) and psnr.better(1.0, None)
    assert lpips.better(0.1, 0.2) and lpips.best([0.3, 0.1, 0.2]) == 0.1
    assert detail.best([0.5, 1.1, 1.4]) == 1.1 and detail.header == "detail →1"
    assert metrics.METRICS["kid"].format(0.01234, 0.001) == "12.34 ± 1.00"
    assert not psnr.better(float("nan"), 20.0)
