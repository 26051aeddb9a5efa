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


def summary(ours_psnr, bih_psnr, ours_lpips, pm_lpips, ssim=0.72):
    s = {m: {"psnr": (bih_psnr, 0.1), "lpips": (pm_lpips + 0.01, 0.001), "ssim": (0.6, 0.01)} for m in
         ("mean fill", "Telea", "Navier-Stokes", "biharmonic")}
    s["PatchMatch"] = {"psnr": (bih_psnr - 1, 0.1), "lpips": (pm_lpips, 0.001), "ssim": (0.6, 0.01)}
    s["ours"] = {"psnr": (ours_psnr, 0.1), "lpips": (ours_lpips, 0.001), "ssim": (ssim, 0.01)}
    return s


def test_goal_lines_name_the_worst_bucket_and_say_which_goals_are_met():
    import results
    summaries = {"square": {"all": summary(24.0, 21.0, 0.010, 0.011)},
                 "strokes": {"all": summary(23.5, 22.0, 0.05, 0.06), "0-10%": summary(24.0, 25.0, 0.01, 0.012),
                             "10-20%": summary(23.0, 21.0, 0.05, 0.04)}}
    rows = {goal: (measured, met) for goal, measured, met in results.goal_rows(summaries)}
    assert rows["squares: hole PSNR ≥ biharmonic + 2.5 dB"] == ("+3.00 dB", True)
    assert rows["squares: hole SSIM ≥ 0.70"][1] is True
    assert rows["strokes: hole PSNR ≥ biharmonic in every bucket"] == ("worst 0-10%: -1.00 dB", False)
    assert rows["strokes: pooled hole PSNR ≥ biharmonic + 1 dB"] == ("+1.50 dB", True)
    assert rows["strokes: LPIPS < the best classical fill's in every bucket"] == ("worst 10-20%: +0.0100", False)
    assert rows["square: LPIPS < the best classical fill's in every bucket"][1] is True
    table = results.headline_table(summaries)
    assert "| square | **24.00** | 21.00 | 20.00 |" in table and "| strokes | **23.50** |" in table


def test_results_prints_identity_for_every_method(faces, tmp_path):
    from conftest import run_script
    cfg, _ = faces
    proc = run_script("results.py", "weights", "--data-dir", cfg.data_dir, "--max-images", "6", "--masks", "square",
                      "--no-perceptual", "--identity-images", "4", "--jobs", "1", "--cache-dir", str(tmp_path / "c"),
                      "--out", str(tmp_path / "res"))
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| method |"))
    assert "ID distance" in header and "same person %" in header
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "ms" not in line and "---" not in line]
    assert {r.split("|")[1].strip() for r in rows} >= {"biharmonic", "PatchMatch", "ours"}
