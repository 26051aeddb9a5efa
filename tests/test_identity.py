"""Face-identity preservation (dlib's descriptor): the same face is distance 0, other people are far, a fill
that wipes out half the face moves it further than a small square, and the columns reach results.py's table."""
import math
import os

import pytest
import torch

import identity
from baselines import mean_fill
from config import Config, ConfigError
from dataset import open_splits, split_files
from evaluation import Judge, evaluate_baseline
from masks import fixed_masks


@pytest.fixture
def faces(real_data):
    if not identity.available():
        if os.environ.get("CI"):
            pytest.fail("dlib is not installed: .ci/run must pip install -r requirements-identity.txt")
        pytest.skip("pip install -r requirements-identity.txt to run the identity tests")
    cfg = Config(data_dir=real_data)
    split = split_files(cfg.data_dir, cfg.val_fraction, cfg.test_fraction, 0, cfg.image_size)
    n = 16
    return cfg, open_splits(cfg, {**split, "test": split["test"][:n]}, ("test",))["test"].take(n)


def test_the_same_face_is_distance_zero_and_other_people_are_far(faces):
    _, images = faces
    fi = identity.FaceIdentity()
    x = images.float() / 255
    refs = fi.reference(x)
    assert sum(r is not None for r in refs) >= 14  # CelebA's aligned faces are found at 200 px
    same = fi.distances(x, refs)
    others = fi.distances(x.roll(1, 0), refs)  # each face against the next file's: other people
    found = ~torch.isnan(same)
    assert same[found].abs().max() < 1e-6
    assert others[found].mean() > identity.SAME_PERSON and (others[found] > identity.SAME_PERSON).float().mean() > 0.8


def test_the_judge_measures_identity_only_on_registered_faces_and_big_holes_cost_more(faces):
    cfg, images = faces
    judge = Judge(perceptual=False, identity=True)
    judge.add_identity_faces(images[:12])
    small = evaluate_baseline(mean_fill, images, fixed_masks(cfg, len(images), "test", "square"), judge)["identity"]
    big = evaluate_baseline(mean_fill, images, fixed_masks(cfg, len(images), "test", "boxes", (0.4, 0.5)), judge)["identity"]
    assert torch.isnan(small[12:]).all() and torch.isnan(big[12:]).all()  # not registered: not measured
    both = ~torch.isnan(small[:12]) & ~torch.isnan(big[:12])
    assert both.sum() >= 10 and big[:12][both].mean() > small[:12][both].mean() + 0.05


def test_results_summary_has_identity_columns_and_the_flag_fails_clearly_without_dlib(monkeypatch):
    import results
    per_method = {"a": {"psnr": torch.tensor([20.0, 21.0, 22.0]), "identity": torch.tensor([0.3, float("nan"), 0.7]),
                        "seconds_per_image": 0.01}}
    s = results.summarize(per_method)["a"]
    assert math.isclose(s["identity"][0], 0.5) and math.isclose(s["same_person"][0], 0.5)  # NaN rows left out
    assert "ID distance" in results.markdown_table({"a": s}) and "same person %" in results.markdown_table({"a": s})
    monkeypatch.setattr(identity, "available", lambda: False)
    assert results.identity_images(None) == 0  # off by default without dlib
    with pytest.raises(ConfigError, match="requirements-identity.txt"):
        results.identity_images(100)
