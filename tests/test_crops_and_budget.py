"""Training on crops at native scale (--crop) and the training-time budget (--max-minutes)."""
import os

import pytest
import torch

from checkpoints import load_checkpoint
from conftest import run_script
from dataset import MIN_CROP_HOLE, random_crops
from masks import rng_for


def coordinates(b: int, h: int, w: int) -> torch.Tensor:
    """B, 3, H, W images whose pixels say where they are: (row, column, image)."""
    rows = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(b, 1, h, w)
    cols = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
    index = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, h, w)
    return torch.cat([rows, cols, index], 1)


def test_image_and_holes_are_cropped_at_the_same_window_and_native_scale():
    b, size, crop = 6, 200, 128
    images = coordinates(b, size, size)
    masks = (torch.rand(b, 1, size, size, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    x, m = random_crops(images, masks, crop, rng_for(0))
    assert x.shape == (b, 3, crop, crop) and m.shape == (b, 1, crop, crop)
    for i in range(b):
        top, left = int(x[i, 0, 0, 0]), int(x[i, 1, 0, 0])
        assert torch.equal(x[i], images[i, :, top:top + crop, left:left + crop])  # one window, unscaled
        assert torch.equal(m[i], masks[i, :, top:top + crop, left:left + crop])  # the same one for the holes
    again = random_crops(images, masks, crop, rng_for(0))  # a pure function of the step's generator
    assert torch.equal(again[0], x) and not torch.equal(random_crops(images, masks, crop, rng_for(1))[0], x)


def test_windows_without_holes_are_skipped():
    b, size, crop = 32, 200, 128
    masks = torch.zeros(b, 1, size, size)
    masks[..., :, :40] = 1  # a hole along the left border: about half of all windows miss it
    _, m = random_crops(coordinates(b, size, size), masks, crop, rng_for(3))
    assert (m.mean(dim=(1, 2, 3)) >= MIN_CROP_HOLE).all()


def test_a_crop_as_large_as_the_image_changes_nothing():
    images, masks = torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64)
    x, m = random_crops(images, masks, 64, rng_for(0))
    assert x is images and m is masks


def test_crop_training_validates_on_whole_images(faces_dir, tmp_path):
    out = str(tmp_path / "out")
    run_script("main.py", "--preset", "tiny", "--image-size", "64", "--crop", "32", "--epochs", "1",
               "--data-dir", faces_dir, "--out-dir", out, "--run-name", "crop")
    ckpt = load_checkpoint(os.path.join(out, "crop", "last.pt"))
    assert (ckpt["config"]["crop"], ckpt["config"]["image_size"]) == (32, 64)
    from PIL import Image
    grid = Image.open(os.path.join(out, "crop", "samples", "epoch_001.png"))
    assert grid.size[1] >= 4 * 64  # the validation grid's 4 rows show whole 64 px images, at their own pixels


def test_max_minutes_stops_cleanly_and_the_budget_counts_across_resumes(faces_dir, tmp_path):
    out = str(tmp_path / "out")
    run = os.path.join(out, "budget")
    proc = run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", out, "--run-name", "budget",
                      "--max-minutes", "0.0001")
    assert "--max-minutes 0.0001 reached after step 1 of epoch 1" in proc.stderr
    assert f"python main.py --resume {run} --max-minutes MORE" in proc.stderr
    first = load_checkpoint(os.path.join(run, "last.pt"))
    assert (first["epoch"], first["step_in_epoch"]) == (0, 1) and first["train_seconds"] > 0
    assert first["images_seen"] == 4
    run_script("main.py", "--resume", run, "--max-minutes", "0")  # 0 = no limit: it finishes
    done = load_checkpoint(os.path.join(run, "last.pt"))
    assert (done["epoch"], done["step_in_epoch"]) == (2, 0) and done["images_seen"] == 64
    assert done["train_seconds"] > first["train_seconds"]


def test_steps_csv_drops_rows_a_killed_process_logged_after_its_checkpoint(tmp_path):
    from main import append_csv_row, trim_csv_log
    path = str(tmp_path / "steps.csv")
    for images in (20, 40, 60):
        append_csv_row(path, {"epoch": 1, "step": images // 20, "images": images, "minutes": images / 100})
    trim_csv_log(path, 40)
    assert [ln.split(",")[2] for ln in open(path).read().splitlines()] == ["images", "20", "40"]


def test_steps_csv_keeps_its_columns_when_a_branch_logs_fewer_or_more(tmp_path):
    """A twin without the GAN appends to its GAN parent's log: each value stays under its own column."""
    import csv
    from main import append_csv_row
    path = str(tmp_path / "steps.csv")
    append_csv_row(path, {"epoch": 4, "images": 20, "gan_g": 0.0, "l1": 0.3})
    append_csv_row(path, {"epoch": 5, "images": 40, "l1": 0.2})  # the twin: no GAN column
    append_csv_row(path, {"epoch": 5, "images": 60, "l1": 0.1, "seam": 0.05})  # a column the log lacks
    rows = list(csv.DictReader(open(path)))
    assert [r["l1"] for r in rows] == ["0.3", "0.2", "0.1"]
    assert [r["gan_g"] for r in rows] == ["0.0", "", ""] and [r["seam"] for r in rows] == ["", "", "0.05"]


@pytest.mark.parametrize("flags, message", [
    (["--crop", "36"], "--crop=36: must be 0 (whole images) or a multiple of 8"),
    (["--arch", "transformer"], "--arch='transformer': must be one of unet, dilated"),
    (["--nf", "16"], "--nf: not an argument of --arch dilated"),
])
def test_bad_architecture_and_crop_flags_fail_before_reading_data(flags, message, tmp_path):
    proc = run_script("main.py", *flags, "--data-dir", str(tmp_path / "no-such-folder"), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_crop_fraction_trains_the_last_steps_on_whole_images(faces_dir, tmp_path, monkeypatch):
    import main
    from config import build_parser, resolve_config
    sizes, real = [], main.train_step
    monkeypatch.setattr(main, "train_step", lambda x, m, *a, **kw: (sizes.append((x.shape[-1], m.shape[-1])),
                                                                     real(x, m, *a, **kw))[1])
    cfg = resolve_config(build_parser().parse_args([
        "--preset", "tiny", "--image-size", "64", "--crop", "32", "--crop-fraction", "0.5", "--data-dir", faces_dir,
        "--out-dir", str(tmp_path), "--run-name", "schedule"]))
    main.train(cfg)
    assert sizes == [(32, 32)] * 8 + [(64, 64)] * 8  # 2 epochs of 8 steps: crops first, whole images last


def test_a_branch_without_the_gan_is_the_reconstruction_only_twin_of_the_run_it_copies(faces_dir, tmp_path):
    """A GAN run whose adversarial phase starts at epoch 2, stopped after epoch 1, branched with --w-adv 0 from the
    gan_start.pt it kept there: the branch trains exactly what a reconstruction-only run from scratch trains,
    keeps the copied history and split, and has no discriminator."""
    import main
    from config import Config, build_parser, resolve_config
    common = ["--preset", "tiny", "--data-dir", faces_dir, "--out-dir", str(tmp_path), "--adv-start", "0.5",
              "--val-lpips-images", "0"]

    class Stop(Exception):
        pass

    def stop_after_first(epoch, row):
        raise Stop

    with pytest.raises(Stop):
        main.train(resolve_config(build_parser().parse_args(common + ["--run-name", "gan"])), on_epoch=stop_after_first)
    branch_point = load_checkpoint(str(tmp_path / "gan" / "gan_start.pt"))  # kept by the run itself
    assert (branch_point["epoch"], branch_point["step_in_epoch"]) == (1, 0) and "discriminator" in branch_point
    assert main.main(common + ["--run-name", "twin", "--w-adv", "0", "--branch-from", str(tmp_path / "gan" / "gan_start.pt")]) == 0
    assert main.main(common + ["--run-name", "scratch", "--w-adv", "0"]) == 0
    assert not any(os.path.exists(tmp_path / name / "gan_start.pt") for name in ("twin", "scratch"))  # no GAN
    twin, scratch = (load_checkpoint(str(tmp_path / name / "last.pt")) for name in ("twin", "scratch"))
    assert "discriminator" not in twin and twin["epoch"] == 2
    assert all(torch.equal(twin["generator"][k], v) for k, v in scratch["generator"].items())
    assert [r["val_psnr"] for r in twin["history"]] == [r["val_psnr"] for r in scratch["history"]]
    assert open(tmp_path / "twin" / "split.json").read() == open(tmp_path / "gan" / "split.json").read()
    assert Config.from_saved(twin["config"]).branch_from.endswith("gan_start.pt")
    with pytest.raises(Exception, match="no discriminator"):
        main.branch_checkpoint(Config(**{**Config.from_saved(twin["config"]).to_dict(), "w_adv": 1.0,
                                         "branch_from": str(tmp_path / "twin" / "last.pt")}))
