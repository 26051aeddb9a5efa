"""End to end: main.py trains the tiny preset, resumes, and results.py evaluates the run."""
import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

from checkpoints import generator_from_checkpoint, load_checkpoint
from conftest import run_script


def test_tiny_run_leaves_checkpoints_metrics_and_plots(tiny_run):
    run, stdout = tiny_run
    for f in ("last.pt", "best.pt", "config.json", "split.json", "metrics.csv", "training_plot.png",
              "samples/epoch_001.png", "samples/epoch_002.png"):
        assert os.path.isfile(os.path.join(run, f)), f
    rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("val_gan_g", "val_gan_d", "val_l1", "val_edge", "val_ssim", "val_psnr", "val_lpips"):
        assert all(torch.isfinite(torch.tensor(float(r[key]))) for r in rows), key
    assert all(0 < float(r["val_lpips"]) < 1 for r in rows) and "LPIPS" in stdout
    assert "val_grid" not in rows[0] and " grid " not in stdout  # 8-px holes are too small to show a lock: not logged
    assert "config:" in stdout and "generator parameters" in stdout
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert cfg["preset"] == "tiny" and cfg["epochs"] == 2
    ckpt = load_checkpoint(os.path.join(run, "last.pt"))
    assert ckpt["config"] == cfg and ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert {"generator", "discriminator", "opt_g", "opt_d"} <= set(ckpt)


def test_checkpoint_rebuilds_the_generator_from_its_own_config(tiny_run):
    g, cfg = generator_from_checkpoint(load_checkpoint(os.path.join(tiny_run[0], "best.pt")))
    assert (cfg.arch, cfg.width) == ("dilated", 8) and g.stem[1].out_channels == 8 and len(g.middle) == 2 + 2


def test_runs_saved_before_the_architecture_switch_load_as_u_nets(tiny_run):
    from checkpoints import saved_config, saved_model_args
    old = load_checkpoint(os.path.join(tiny_run[0], "last.pt"))  # as an old run: no arch, crop, model_args
    old["config"] = {k: v for k, v in old["config"].items() if k not in ("arch", "crop", "width", "blocks", "prefill", "gate", "w_seam")}
    old["config"]["nf"] = 8
    old.pop("model_args")
    assert saved_model_args(old) == {"arch": "unet", "nf": 8, "attention": True, "prefill": False, "gate": 0.0}
    assert (saved_config(old).arch, saved_config(old).crop) == ("unet", 0)


def test_generator_loads_from_model_args_even_after_a_config_field_is_renamed(tiny_run):
    from checkpoints import SHIPPED_WEIGHTS
    ckpt = load_checkpoint(os.path.join(tiny_run[0], "best.pt"))
    assert ckpt["model_args"] == {"arch": "dilated", "width": 8, "blocks": 2, "attention": True, "prefill": True, "gate": 0.01,
                                  "blur_up": True}
    ckpt["config"] = {**{k: v for k, v in ckpt["config"].items() if k not in ("width", "arch")}, "renamed_field": 1}
    g, _ = generator_from_checkpoint(ckpt)  # width comes from model_args; the unknown field is dropped
    assert g.stem[1].out_channels == 8
    shipped = load_checkpoint(SHIPPED_WEIGHTS)  # the shipped file keeps its own model_args beside the config
    assert generator_from_checkpoint(shipped)[0].stem[1].out_channels == shipped["model_args"]["width"]


def test_training_steps_fit_the_batch_they_see(faces_dir):
    """Repeated train_step calls on one batch drive its hole L1 well down (learning, not just any change
    of the weights); the tiny run itself is too short to show that on validation."""
    import main as main_module
    from checkpoints import build_discriminator, build_generator
    from config import Config, choose_runtime
    from dataset import ImageFiles
    from models import to_model_range
    from masks import training_masks
    from losses import adversarial_part, l1_loss
    cfg = Config(image_size=32, crop=0, width=8, blocks=2, d_nf=8, d_scale=1, hole_size=8, hole_margin=4, ring=2,
                 holes=2, lr_g=2e-3).validate()
    rt = choose_runtime("cpu", "fp32", False)
    torch.manual_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    opts = (torch.optim.Adam(g.parameters(), lr=cfg.lr_g), torch.optim.Adam(d.parameters(), lr=cfg.lr_d))
    files = ImageFiles(faces_dir, sorted(os.listdir(faces_dir))[:8], cfg.image_size)
    x = to_model_range(torch.stack([files.load(i) for i in range(8)]), rt.device, rt.memory_format())
    m = training_masks(cfg, len(x), np.random.default_rng(0))

    def hole_l1():
        with torch.no_grad():
            return float(l1_loss(g(x, m), x, m))
    before = hole_l1()
    gan = adversarial_part(cfg)
    for _ in range(150):  # the default GAN at full strength from the first step (and the blurred upsampling): slower than pixels alone
        assert main_module.train_step(x, m, (g, d), opts, gan, cfg, rt) is not None
    assert hole_l1() < 0.5 * before, (hole_l1(), before)


def test_resume_continues_from_the_saved_epoch(tiny_run, tmp_path):
    import shutil
    run = str(tmp_path / "resumed")
    shutil.copytree(tiny_run[0], run)
    last = os.path.join(run, "last.pt")
    ckpt = torch.load(last, weights_only=True)
    (here,) = ckpt["machines"]  # the machine and precision of the run's one sitting
    other = "Another CPU, 2 cores, no bf16 units; fp32"
    torch.save({**ckpt, "machines": [other]}, last)  # as if the first sittings ran elsewhere
    proc = run_script("main.py", "--resume", run, "--epochs", "3")
    assert "resuming at epoch 3" in proc.stdout
    assert f"this run trained on {other} and goes on on {here}" in proc.stdout
    rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == 3 and resumed["machines"] == [other, here]


def test_a_run_being_trained_cannot_be_resumed_by_a_second_process(tiny_run, tmp_path):
    """A second `--resume` of a run still training (say, started again before Ctrl-C's last step ended) is
    refused before it touches the folder: it would trim the training log and race the checkpoints."""
    import fcntl
    run = str(tmp_path / "busy")
    shutil.copytree(tiny_run[0], run)
    before = {f: os.path.getmtime(os.path.join(run, f)) for f in os.listdir(run)}
    with open(os.path.join(run, ".training.lock"), "a+") as held:  # what the training process holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)  # the file stays behind a finished run, with its pid: only the lock counts
        held.write("4242\n")
        held.flush()
        proc = run_script("main.py", "--resume", run, "--epochs", "3", check=False)
    assert proc.returncode == 2 and f"{run} is being trained by another process (pid 4242)" in proc.stderr
    assert all(os.path.getmtime(os.path.join(run, f)) == t for f, t in before.items() if f != ".training.lock")

def test_resume_refuses_to_change_the_recipe(tiny_run):
    proc = run_script("main.py", "--resume", tiny_run[0], "--lr-g", "0.1", check=False)
    assert proc.returncode == 2 and "--lr-g" in proc.stderr


def test_results_writes_grids_and_table(tiny_run, tmp_path):
    out = str(tmp_path / "res")
    proc = run_script("results.py", tiny_run[0], "--out", out)
    for f in ("results.md", "results.json", "per_image.csv", "comparison.png", "inpainting_results.png",
              "fixed_inpainting_results.png"):
        assert os.path.isfile(os.path.join(out, f)), f
    assert "| ours |" in proc.stdout and "| biharmonic |" in proc.stdout
    res = json.load(open(os.path.join(out, "results.json")))
    assert set(res["methods"]) == {"ours", "mean fill", "Telea", "Navier-Stokes", "biharmonic", "PatchMatch"}
    for m in res["methods"].values():  # perceptual metrics beside the pixel ones
        assert 0 <= m["lpips"]["mean"] < 1 and m["kid"]["se"] >= 0 and m["fd"] >= 0
    split = json.load(open(os.path.join(tiny_run[0], "split.json")))
    assert res["images"] == len(split["test"])
    kept = torch.load(os.path.join(out, "kid_features.pt"), weights_only=True)  # for paired KID differences
    assert kept["images"] == split["test"] and kept["real"].shape == (len(split["test"]), 512)
    buckets = {k: max(1, len([b for b in res["sets"][k] if b != "all"])) for k in res["kinds"]}
    # every bucket pooled: each test face once per bucket (this split is too small to cycle them)
    assert {k: v.shape for k, v in kept["ours"].items()} == {k: (len(split["test"]) * buckets[k], 512) for k in buckets}


def test_results_on_the_validation_split(tiny_run, tmp_path):
    """--split val evaluates the val images (for choosing between runs) into RUN/val/, leaving the run's
    test results alone; the README report stays test-only."""
    run = str(tmp_path / "run")
    shutil.copytree(tiny_run[0], run)
    proc = run_script("results.py", run, "--split", "val", "--no-baselines")
    assert "images: the val split of" in proc.stdout and not os.path.exists(os.path.join(run, "results.json"))
    res = json.load(open(os.path.join(run, "val", "results.json")))
    split = json.load(open(os.path.join(run, "split.json")))
    assert res["split"] == "val" and res["images"] == len(split["val"])
    rows = list(csv.DictReader(open(os.path.join(run, "val", "per_image.csv"))))
    assert {r["image"] for r in rows} == set(split["val"])
    proc = run_script("results.py", run, "--split", "val", "--report", str(tmp_path / "rep"), check=False)
    assert proc.returncode == 2 and "--split val" in proc.stderr


def test_no_images_exits_nonzero_with_a_hint(tmp_path):
    proc = run_script("main.py", "--preset", "tiny", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"),
                      check=False)
    assert proc.returncode != 0 and "--data-dir" in proc.stderr and str(tmp_path) in proc.stderr


def test_real_images_short_run(real_data, tmp_path):
    """One short run of the real CelebA subset at the seed's resolution (few images, one epoch)."""
    out = str(tmp_path / "out")
    run_script("main.py", "--preset", "tiny", "--data-dir", real_data, "--out-dir", out, "--run-name", "real",
               "--image-size", "64", "--hole-size", "16", "--hole-margin", "8", "--max-images", "60", "--epochs", "1")
    proc = run_script("results.py", os.path.join(out, "real"), "--out", str(tmp_path / "res"))
    assert "| ours |" in proc.stdout


def test_strokes_training_and_per_kind_per_bucket_results(faces_dir, tmp_path):
    out = str(tmp_path / "out")
    run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", out, "--run-name", "s",
               "--mask", "strokes", "--epochs", "1")
    cfg = json.load(open(os.path.join(out, "s", "config.json")))
    assert cfg["mask"] == "strokes"
    res_dir = str(tmp_path / "res")
    proc = run_script("results.py", os.path.join(out, "s"), "--masks", "strokes,boxes,square", "--out", res_dir)
    res = json.load(open(os.path.join(res_dir, "results.json")))
    assert res["kinds"] == ["strokes", "boxes", "square"]
    assert all(f"## {kind} holes" in proc.stdout for kind in res["kinds"])
    for kind in ("strokes", "boxes"):
        assert set(res["sets"][kind]) == {"all", "0-10%", "10-20%", "20-30%", "30-40%", "40-50%"}
        assert set(res["sets"][kind]["30-40%"]) == {"ours", "mean fill", "Telea", "Navier-Stokes", "biharmonic",
                                                    "PatchMatch"}
    md = open(os.path.join(res_dir, "results.md")).read()
    assert "### strokes, holes covering 40-50% of the image" in md and "## square holes" in md
    for f in ("comparison.png", "comparison_boxes.png", "comparison_square.png"):
        assert os.path.isfile(os.path.join(res_dir, f)), f
    n_test = len(json.load(open(os.path.join(out, "s", "split.json")))["test"])
    assert len(os.listdir(os.path.join(res_dir, "eval_masks", "strokes", "20-30"))) == n_test
    rows = list(csv.DictReader(open(os.path.join(res_dir, "per_image.csv"))))
    assert len(rows) == n_test * 6 * (5 + 5 + 1)  # images x methods x (buckets of two kinds + square)
    assert "ours − biharmonic (paired, 95% CI): hole PSNR" in md
    assert "unknown kind" in run_script("results.py", os.path.join(out, "s"), "--masks", "circles", check=False).stderr


def test_mask_examples_figure(tmp_path):
    run_script("results.py", "--mask-examples", str(tmp_path / "m.png"))
    assert os.path.getsize(tmp_path / "m.png") > 10_000


def test_results_refuses_to_evaluate_nothing(tmp_path):
    proc = run_script("results.py", "--baselines-only", "--no-baselines", "--data-dir", str(tmp_path), check=False)
    assert proc.returncode == 2 and "nothing to evaluate" in proc.stderr


def test_checkpoints_keep_the_weight_average_and_inference_uses_it(tiny_run):
    ckpt = load_checkpoint(os.path.join(tiny_run[0], "last.pt"))
    assert ckpt["config"]["ema"] > 0 and set(ckpt["generator_ema"]) == set(ckpt["generator"])
    assert any(not torch.equal(ckpt["generator_ema"][k], v) for k, v in ckpt["generator"].items())
    g, _ = generator_from_checkpoint(ckpt)
    assert all(torch.equal(v, ckpt["generator_ema"][k]) for k, v in g.state_dict().items())


def test_cosine_schedule_and_ema_warmup():
    from config import Config
    from main import ema_decay, learning_rate_factor, update_ema
    cos, const = Config(lr_schedule="cosine", warmup_steps=0), Config(lr_schedule="constant", warmup_steps=0)
    assert learning_rate_factor(cos, 0, 100) == 1 and abs(learning_rate_factor(cos, 50, 100) - 0.5) < 1e-12
    assert learning_rate_factor(cos, 100, 100) < 1e-12 and learning_rate_factor(const, 70, 100) == 1
    warm = Config(lr_schedule="constant", warmup_steps=10)  # linear from 1/10 at the first step to 1 at the tenth
    assert [learning_rate_factor(warm, s, 100) for s in (0, 4, 9, 50)] == [0.1, 0.5, 1.0, 1.0]
    warm_cos = Config(lr_schedule="cosine", warmup_steps=10)
    assert learning_rate_factor(warm_cos, 4, 100) == 0.5 * learning_rate_factor(cos, 4, 100)
    cfg = Config(ema=0.999)
    assert ema_decay(cfg, 0) == 0.1 and ema_decay(cfg, 90) == 0.91 and ema_decay(cfg, 10**6) == 0.999
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = [0.75 * p.detach() + 0.25 * q.detach() for p, q in zip(a.parameters(), b.parameters())]
    update_ema(a, b, 0.75)
    assert all(torch.allclose(p, e) for p, e in zip(a.parameters(), expected))


def test_results_report_regenerates_the_readme_figures(tiny_run, tmp_path):
    report = tmp_path / "report"
    run_script("results.py", tiny_run[0], "--out", str(tmp_path / "res"), "--report", str(report))
    # the tiny run trains on mixed holes, so it is evaluated (and drawn) on every kind
    assert sorted(os.listdir(report)) == ["architecture.png", "comparison_boxes.png", "comparison_square.png",
                                          "comparison_strokes.png", "inpainting_fixed_positions.png",
                                          "inpainting_random.png", "results.md", "training_curves.png"]


def test_results_reuses_cached_baselines_and_recomputes_damaged_entries(tiny_run, tmp_path):
    cache = str(tmp_path / "cache")
    args = ("results.py", tiny_run[0], "--masks", "square,strokes", "--max-images", "3", "--cache-dir", cache)
    first = run_script(*args, "--out", str(tmp_path / "a"))
    assert "0 from the cache, 36 computed" in first.stdout  # (5 baselines + ours) x (square + 5 stroke buckets)
    second = run_script(*args, "--out", str(tmp_path / "b"))
    assert "36 from the cache, 0 computed" in second.stdout
    a, b = (numbers(tmp_path / d / "results.json") for d in ("a", "b"))
    assert json.load(open(tmp_path / "a" / "results.json"))["images"] == 3
    assert a == b  # the same numbers, ours included
    entries = sorted(os.listdir(cache))
    with open(os.path.join(cache, entries[0]), "wb") as fh:
        fh.write(b"not a torch file")
    third = run_script(*args, "--out", str(tmp_path / "c"))
    assert "ignoring unreadable cache entry" in third.stderr and "35 from the cache, 1 computed" in third.stdout
    assert numbers(tmp_path / "c" / "results.json") == a


def numbers(path) -> str:
    """Every number of a results.json except the timings (NaN compares equal as text)."""
    sets = json.load(open(path))["sets"]
    for kind in sets.values():
        for summary in kind.values():
            for method in summary.values():
                method.pop("ms_per_image")
    return json.dumps(sets, sort_keys=True)


def test_training_says_when_it_started_and_how_fast_it_runs(tiny_run):
    line = next(ln for ln in tiny_run[1].splitlines() if "training started" in ln)
    assert re.search(r"started \d+ s after launch at [\d.]+ img/s: 14 steps of 4 left, about \d+ s at this speed", line)
    lines = tiny_run[1].splitlines()
    assert lines.index(line) < next(i for i, ln in enumerate(lines) if ln.startswith("epoch 1:"))  # said early


def test_steps_csv_is_the_training_curve(tiny_run):
    import csv
    rows = list(csv.DictReader(open(os.path.join(tiny_run[0], "steps.csv"))))
    assert [int(r["images"]) for r in rows] == [8 * i for i in range(1, len(rows) + 1)] and len(rows) == 8
    assert all(float(a["minutes"]) <= float(b["minutes"]) for a, b in zip(rows, rows[1:]))
    assert {"l1", "l2", "edge", "ssim_loss", "gan_g", "gan_d"} <= set(rows[0])


def test_loss_balance_reports_every_generator_term_and_its_weighted_gradient(tiny_run, faces_dir):
    """tools/loss_balance.py: one row per generator term of the run (the GAN's too), shares summing to 100 %, and
    a term's gradient scaling with its weight (so the table ranks what the fill learns from)."""
    import importlib.util
    from conftest import ROOT
    from masks import training_masks, rng_for
    proc = run_script("tools/loss_balance.py", os.path.join(tiny_run[0], "last.pt"), "--data-dir", faces_dir,
                      "--batches", "1")
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if re.match(r"\| (l1|edge|ssim_loss|l2|seam|gan_g) ", line)]
    assert [r[0].strip() for r in rows] == ["l1", "edge", "ssim_loss", "l2", "seam", "gan_g"]
    assert abs(sum(float(r[4].strip(" %")) for r in rows) - 100) < 0.5
    spec = importlib.util.spec_from_file_location("loss_balance", os.path.join(ROOT, "tools", "loss_balance.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    g, cfg = generator_from_checkpoint(load_checkpoint(os.path.join(tiny_run[0], "last.pt")))
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    m = training_masks(cfg, 2, rng_for(0, 1))
    once = tool.term_gradients(g, None, cfg, x, m)
    cfg.w_l1 *= 2
    twice = tool.term_gradients(g, None, cfg, x, m)
    assert once["l1"][2] > 0 and abs(twice["l1"][2] / once["l1"][2] - 2) < 1e-4
    assert twice["l2"][2] == once["l2"][2] and "gan_g" not in once  # no discriminator given: no GAN rows
    proc = run_script("tools/loss_balance.py", os.path.join(tiny_run[0], "last.pt"), "--data-dir", faces_dir,
                      "--batches", "50", check=False)
    assert proc.returncode == 2 and "--batches 50" in proc.stderr


def test_feature_zoom_shows_each_model_a_row_between_the_holes_and_the_original(tiny_run, faces_dir, tmp_path):
    """tools/feature_zoom.py: holes, one row per model (moving average or --raw), the original; a wrong model
    argument is a clear error."""
    from PIL import Image
    out = tmp_path / "zoom.png"
    last = os.path.join(tiny_run[0], "last.pt")
    run_script("tools/feature_zoom.py", f"a={last}", f"b={last}", "--data-dir", faces_dir, "--faces", "2", "--raw",
               "-o", str(out))
    im = Image.open(out)
    crop_rows = 60 * 3  # the mouth crop, enlarged 3x
    assert im.height == 4 * (crop_rows + 6) and im.width > 2 * 2 * 90 * 3
    proc = run_script("tools/feature_zoom.py", last, "--data-dir", faces_dir, "-o", str(tmp_path / "x.png"), check=False)
    assert proc.returncode == 2 and "NAME=CHECKPOINT" in proc.stderr and not (tmp_path / "x.png").exists()


def test_backward_and_step_clips_the_gradient_norm_before_the_step():
    """--grad-clip bounds the gradient the optimizer sees (a runaway's growing gradients are cut to it)."""
    from types import SimpleNamespace
    import main
    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w], lr=1.0)
    main.backward_and_step((1000 * w).sum(), opt, SimpleNamespace(scaler=None), clip=2.0)
    assert float(w.grad.norm()) == pytest.approx(2.0, rel=1e-5)
    assert torch.allclose(w, torch.full((4,), 0.0))  # one SGD step of the clipped gradient: 1 - 2 / sqrt(4)
    from config import PRESETS, Config
    assert Config().grad_clip > 0 and PRESETS["seed"]["grad_clip"] == 0  # on by default; the seed's recipe had none
