"""The shipped reference weights: present, the recorded hash, loadable weights-only, and useful."""
import json
import os
import re

import pytest
import torch

from conftest import ROOT

from baselines import BASELINES
from checkpoints import SHIPPED_WEIGHTS, default_checkpoint, generator_from_checkpoint, load_checkpoint
from config import choose_runtime, cpu_description
from dataset import open_splits, split_files
from evaluation import evaluate_baseline, evaluate_generator
from masks import fixed_masks
from package_weights import sha256


def recorded_hash() -> str:
    with open(os.path.join(ROOT, "weights", "README.md")) as fh:
        found = re.search(r"SHA-256\*\*: `([0-9a-f]{64})`", fh.read())
    assert found, "weights/README.md records no SHA-256"
    return found.group(1)


def test_shipped_weights_match_the_recorded_hash_and_size_limit():
    assert os.path.isfile(SHIPPED_WEIGHTS), "weights/generator.pt is missing"
    assert sha256(SHIPPED_WEIGHTS) == recorded_hash()
    assert os.path.getsize(SHIPPED_WEIGHTS) <= 10 * 1024 * 1024


def test_shipped_weights_are_the_default_and_load_weights_only():
    assert default_checkpoint(out_dir=os.path.join(ROOT, "no-such-folder")) == SHIPPED_WEIGHTS
    raw = torch.load(SHIPPED_WEIGHTS, map_location="cpu", weights_only=True)  # no pickled code
    assert all(v.dtype == torch.float16 for v in raw["generator"].values())
    g, cfg = generator_from_checkpoint(load_checkpoint(SHIPPED_WEIGHTS))
    assert raw["model_args"]["arch"] == cfg.arch and next(g.parameters()).dtype == torch.float32
    assert cfg.w_adv > 0, "the shipped generator was trained without the adversarial loss"


def test_shipped_generator_costs_at_most_30_gflop_per_256_px_image():
    from torch.utils.flop_counter import FlopCounterMode
    g, _ = generator_from_checkpoint(load_checkpoint(SHIPPED_WEIGHTS))
    x, m = torch.rand(1, 3, 256, 256) * 2 - 1, torch.zeros(1, 1, 256, 256)
    m[..., 100:140, 60:200] = 1
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        g(x, m)
    assert 0 < counter.get_total_flops() / 1e9 <= 30

def test_shipped_weights_inpaint_a_real_test_image_better_than_mean_fill(real_data):
    g, cfg = generator_from_checkpoint(load_checkpoint(SHIPPED_WEIGHTS))
    split = split_files(real_data, cfg.val_fraction, cfg.test_fraction, 0, cfg.image_size)
    cfg.data_dir = real_data
    image = open_splits(cfg, {**split, "test": split["test"][:1]}, ("test",))["test"].take(1)  # 1, 3, S, S
    mask = fixed_masks(cfg, 1, "test", "square")
    ours = evaluate_generator(g, image, mask, choose_runtime("cpu", "fp32"))
    mean_fill = evaluate_baseline(BASELINES["mean fill"], image, mask)
    assert float(ours["psnr"][0]) > float(mean_fill["psnr"][0]) + 1.0
    assert float(ours["l1"][0]) < float(mean_fill["l1"][0])


def test_packaging_writes_a_consistent_set_and_keeps_better_weights(tiny_run, faces_dir, tmp_path, monkeypatch,
                                                                     tmp_path_factory):
    import package_weights
    cache = str(tmp_path_factory.mktemp("cache"))  # the second packaging finds the first one's results there
    target = tmp_path / "weights"
    monkeypatch.setattr(package_weights, "WEIGHTS_DIR", str(target))
    monkeypatch.setattr(package_weights, "SHIPPED_WEIGHTS", str(target / "generator.pt"))
    assert package_weights.package(tiny_run[0], "best", faces_dir, force=False, cache_dir=cache) == 0
    assert sorted(os.listdir(target)) == ["README.md", "config.json", "generator.pt", "metrics.csv", "results.json"]
    readme = (target / "README.md").read_text()
    assert f"`{sha256(str(target / 'generator.pt'))}`" in readme
    assert f"`python main.py --data-dir {faces_dir} --preset tiny" in readme  # the run's own data and recipe
    assert "## Test split, boxes" in readme and "## Test split, strokes" in readme
    assert f"on {cpu_description()} in " in readme  # the machine the run trained on, and its precision
    check = json.load(open(target / "results.json"))["check"]
    assert check["kind"] == "square" and 0 < len(check["images"]) <= 16 and check["psnr"] > 5
    shipped = torch.load(target / "generator.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in shipped["generator"].values())
    assert shipped["model_args"]["arch"] == "dilated" and "generator dilated (width 8, blocks 2" in readme
    before = sha256(str(target / "generator.pt"))
    assert package_weights.package(tiny_run[0], "best", faces_dir, force=False, cache_dir=cache) == 1  # not better: kept
    assert sha256(str(target / "generator.pt")) == before and len(os.listdir(tmp_path)) == 1  # no staging left


def test_weights_are_compared_only_on_the_same_test_faces():
    from package_weights import keep_shipped
    def results(psnr: dict, faces: list) -> dict:
        return {"kinds": list(psnr), "check": {"images": faces},
                "sets": {k: {"all": {"ours": {"psnr": {"mean": v}}}} for k, v in psnr.items()}}
    old = results({"square": 24.0, "strokes": 20.0}, ["a.jpg"])
    assert keep_shipped(results({"square": 23.0, "boxes": 30.0, "strokes": 22.0}, ["a.jpg"]), old) is None
    assert "22.00 dB" in keep_shipped(results({"square": 23.0, "strokes": 21.0}, ["a.jpg"]), old)
    assert "other test faces" in keep_shipped(results({"square": 30.0, "strokes": 30.0}, ["b.jpg"]), old)


def test_shipped_weights_still_score_what_their_results_json_records(celeba):
    """The shipped file reproduces its recorded evaluation: the square-hole PSNR of the first test faces that
    weights/results.json names (package_weights.py records them), from the same faces and holes, in fp32."""
    g, cfg = generator_from_checkpoint(load_checkpoint(SHIPPED_WEIGHTS))
    check = json.load(open(os.path.join(ROOT, "weights", "results.json")))["check"]
    split = split_files(celeba, cfg.val_fraction, cfg.test_fraction, 0, cfg.image_size)
    names = split["test"][:len(check["images"])]
    assert names == check["images"], "the recorded faces are not the first test faces of this CelebA folder"
    cfg.data_dir = celeba
    images = open_splits(cfg, {**split, "test": names}, ("test",))["test"].take(len(names))
    ours = evaluate_generator(g, images, fixed_masks(cfg, len(names), "test", check["kind"]),
                              choose_runtime("cpu", "fp32"))
    assert abs(float(ours["psnr"].mean()) - check["psnr"]) < 0.05


def test_packaging_stopped_with_ctrl_c_leaves_weights_untouched(tiny_run, tmp_path, monkeypatch, capsys):
    import package_weights
    target = tmp_path / "weights"
    target.mkdir()
    (target / "README.md").write_text("the shipped weights' papers")
    monkeypatch.setattr(package_weights, "WEIGHTS_DIR", str(target))
    monkeypatch.setattr(package_weights, "SHIPPED_WEIGHTS", str(target / "generator.pt"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(package_weights, "run_results", interrupted)
    assert package_weights.main([tiny_run[0], "--cache-dir", ""]) == 130
    assert "weights/ is unchanged" in capsys.readouterr().err
    assert os.listdir(target) == ["README.md"] and (target / "README.md").read_text() == "the shipped weights' papers"
    assert sorted(os.listdir(tmp_path)) == ["weights"]  # no staging folder left


def test_the_packaging_staging_folder_is_one_git_ignores(tiny_run, tmp_path, monkeypatch):
    """While package_weights evaluates (an hour and more on CelebA) its staging folder sits beside weights/: it is
    named so that git status stays clean and a commit cannot pick it up."""
    import shutil
    import subprocess
    import package_weights
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("needs git and the repository")
    seen = []
    monkeypatch.setattr(package_weights, "WEIGHTS_DIR", str(tmp_path / "weights"))

    def look(*args, out_dir, **kwargs):
        seen.append(os.path.basename(os.path.dirname(out_dir)))
        raise KeyboardInterrupt
    monkeypatch.setattr(package_weights, "run_results", look)
    assert package_weights.main([tiny_run[0], "--cache-dir", ""]) == 130
    assert seen and seen[0].startswith(package_weights.STAGING_PREFIX)
    assert subprocess.run(["git", "check-ignore", "-q", seen[0]], cwd=ROOT).returncode == 0


def test_shipped_weights_fill_strokes_over_flat_colours_and_ramps_within_one_grey_level():
    """6- and 12-px strokes over flat backdrops (black, near-white, grey, purple) and linear ramps, filled through
    inpaint.py's own path: the mean error over the stroke stays under 1 grey level, as biharmonic's does."""
    import numpy as np
    from inpaint import Inpainter
    size = 200
    rows, cols = np.mgrid[:size, :size]
    flat = lambda rgb: np.broadcast_to(np.array(rgb, float), (size, size, 3))  # noqa: E731
    backdrops = {"black": flat((0, 0, 0)), "near-white": flat((250, 250, 250)), "grey": flat((128, 128, 128)),
                 "purple": flat((120, 60, 160)), "ramp": np.repeat(cols[..., None] * 255.0 / (size - 1), 3, 2),
                 "tinted ramp": (40 + rows[..., None] * 0.9) * np.array([1.0, 0.8, 0.6])}
    inpainter = Inpainter(SHIPPED_WEIGHTS)
    for width in (6, 12):
        stroke = np.abs(cols - size / 2 - 0.1 * (rows - size / 2)) < width / 2  # near-vertical
        stroke[:20] = stroke[-20:] = False
        for name, backdrop in backdrops.items():
            photo = np.round(backdrop).astype(np.uint8)
            error = np.abs(inpainter(photo, stroke)[stroke].astype(float) - photo[stroke]).mean()
            assert error < 1.0, f"{width}-px stroke over {name}: {error:.2f} grey levels off"
