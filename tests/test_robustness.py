"""Failure modes end in a clear message and lose nothing (issue: never lose a run, never crash on bad input)."""
import io
import csv
import os
import pickle
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import losses
import main as main_module
from checkpoints import CheckpointError, atomic_save, load_checkpoint
from conftest import ROOT, make_faces, run_script
from dataset import ImageFiles, ImageSource, load_image, split_files


# --- data ---

def test_bad_files_are_skipped_at_scan_with_one_warning(tmp_path):
    make_faces(str(tmp_path), n=30)
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "half.png").write_bytes((tmp_path / "000001.png").read_bytes()[:20])
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable") as rec:
        split = split_files(str(tmp_path))
    assert len(rec) == 1 and "notes.jpg" in str(rec[0].message)
    names = split["train"] + split["val"] + split["test"]
    assert len(names) == 30 and not {"notes.jpg", "empty.png", "half.png"} & set(names)


def truncated_jpeg(path, size=(64, 64)):
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, "JPEG", quality=95)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header intact, pixels cut off


def test_truncated_jpeg_opens_but_is_caught_when_decoded(tmp_path):
    make_faces(str(tmp_path), n=6)
    truncated_jpeg(tmp_path / "000002.png")  # replaces a good file
    with Image.open(tmp_path / "000002.png") as im:
        assert im.size == (64, 64)  # the header scan cannot tell
    files = ImageFiles(str(tmp_path), sorted(os.listdir(tmp_path)), 32)
    with pytest.warns(UserWarning, match="failed to decode"):
        src = ImageSource(files, cache_mb=100)
    assert len(src) == 5 and "000002.png" not in src.names
    # streaming (no cache): the bad file is replaced by the next one mid-epoch, no crash
    stream = ImageSource(ImageFiles(str(tmp_path), sorted(os.listdir(tmp_path)), 32), cache_mb=0)
    with pytest.warns(UserWarning, match="skipping"):
        batches = list(stream.batches(torch.arange(6), 3, drop_last=False))
    assert [b.shape for b in batches] == [(3, 3, 32, 32)] * 2


def test_training_survives_a_truncated_jpeg(tmp_path):
    data = make_faces(str(tmp_path / "faces"), n=40)
    truncated_jpeg(tmp_path / "faces" / "000005.png")
    proc = run_script("main.py", "--preset", "tiny", "--data-dir", data, "--out-dir", str(tmp_path / "out"),
                      "--epochs", "1")
    assert "failed to decode" in proc.stderr and "000005.png" in proc.stderr


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "I", "LA"])
def test_every_image_mode_becomes_rgb(tmp_path, mode):
    rgb = Image.new("RGB", (40, 40), (200, 100, 50))
    if mode == "I;16":
        img = Image.fromarray(np.full((40, 40), 40000, np.uint16))
    elif mode == "I":
        img = Image.fromarray(np.full((40, 40), 40000, np.int32))
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16", "I") else "x.png")
    img.save(path)
    t = load_image(str(path), 32)
    assert t.shape == (3, 32, 32) and t.dtype == torch.uint8
    if mode.startswith("I"):
        assert abs(int(t[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1  # scaled, not clipped to 255
    if mode == "RGBA":
        assert tuple(t[:, 0, 0].tolist()) == (200, 100, 50)


def test_small_images_are_upscaled_with_a_warning(tmp_path):
    make_faces(str(tmp_path), n=12, size=(20, 24))
    with pytest.warns(UserWarning, match="upscaled more than 1.25x to 32 px"):
        split_files(str(tmp_path), image_size=32)


def test_celeba_sized_images_need_no_upscaling_warning(tmp_path):
    make_faces(str(tmp_path), n=12, size=(178, 218))  # CelebA's aligned size: 1.12x to the default 200 px
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_files(str(tmp_path), image_size=200)


def test_too_few_images_names_the_counts(tmp_path):
    make_faces(str(tmp_path), n=3)
    with pytest.raises(Exception, match=r"3 images give train/val/test = 2/0/1"):
        split_files(str(tmp_path))


# --- config ---

@pytest.mark.parametrize("flag, value", [("--epochs", "-1"), ("--image-size", "199"), ("--hole-size", "500"),
                                         ("--w-l1", "nan")])
def test_invalid_config_rejected_before_reading_data(tmp_path, flag, value):
    proc = run_script("main.py", "--data-dir", str(tmp_path / "does-not-exist"), flag, value, check=False)
    assert proc.returncode == 2 and flag in proc.stderr and "does-not-exist" not in proc.stderr


def test_unknown_preset_in_config_file_rejected(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"preset": "huge"}')
    proc = run_script("main.py", "--config", str(f), check=False)
    assert proc.returncode == 2 and "unknown preset 'huge'" in proc.stderr


# --- training: NaN, signals, atomic checkpoints, exact resume, unwritable output ---

def tiny_cfg(data, out, **kw):
    from config import PRESETS, Config
    return Config(**{**PRESETS["tiny"], "preset": "tiny", "data_dir": data, "out_dir": str(out), **kw}).validate()


def test_nan_steps_are_skipped_and_counted(faces_dir, tmp_path, monkeypatch, capsys):
    real_l1, calls = losses.l1_loss, {"n": 0}

    def sometimes_nan(*a):
        calls["n"] += 1
        return real_l1(*a) * (float("nan") if calls["n"] in (3, 4, 9) else 1)
    monkeypatch.setitem(losses.RECONSTRUCTION, "l1", ("w_l1", sometimes_nan))
    main_module.train(tiny_cfg(faces_dir, tmp_path, run_name="nan"))
    out = capsys.readouterr().out
    assert "NaN/inf loss, update skipped (2 in a row, 2 in total)" in out and "3 in total" in out
    ckpt = load_checkpoint(str(tmp_path / "nan" / "last.pt"))
    assert ckpt["bad_steps"] == 3 and ckpt["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["generator"].values())


def test_persistent_nan_stops_and_keeps_the_last_good_checkpoint(faces_dir, tmp_path, monkeypatch):
    cfg = tiny_cfg(faces_dir, tmp_path, run_name="nan", epochs=3, max_bad_steps=4)
    real_l1, state = losses.l1_loss, {"epoch_done": False}

    def nan_after_epoch_1(epoch, row):
        state["epoch_done"] = True

    monkeypatch.setitem(losses.RECONSTRUCTION, "l1",
                        ("w_l1", lambda *a: real_l1(*a) * (float("nan") if state["epoch_done"] else 1)))
    with pytest.raises(main_module.TrainingStopped, match="4 consecutive steps") as e:
        main_module.train(cfg, on_epoch=nan_after_epoch_1)
    assert e.value.exit_code != 0
    ckpt = load_checkpoint(str(tmp_path / "nan" / "last.pt"))
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["generator"].values())


def script_a_collapse(monkeypatch):
    """Validation 6 dB above mean fill after the first epoch, 10 dB below it after every later one."""
    real_validate = main_module.validate

    def scripted(run, epoch, *a):
        row, val = real_validate(run, epoch, *a)
        row["val_psnr"] = run.mean_fill_psnr + (6 if epoch == 0 else -10)
        return row, val
    monkeypatch.setattr(main_module, "validate", scripted)


def test_collapse_stops_the_run_and_keeps_the_checkpoint_from_before(faces_dir, tmp_path, monkeypatch):
    """Validation far above mean fill, then below it (as the lr-1e-3 mixed-hole run did with finite losses)."""
    script_a_collapse(monkeypatch)
    with pytest.raises(main_module.TrainingStopped, match="collapsed") as e:
        main_module.train(tiny_cfg(faces_dir, tmp_path, run_name="c", epochs=3))
    assert e.value.exit_code == 4 and "still holds epoch 1" in str(e.value) and "--lr-g" in str(e.value)
    assert load_checkpoint(str(tmp_path / "c" / "last.pt"))["epoch"] == 1  # not overwritten by the collapsed epoch
    rows = list(csv.DictReader(open(tmp_path / "c" / "metrics.csv")))
    assert len(rows) == 2  # the collapsed epoch is still on record


def test_a_collapse_after_a_mid_epoch_resume_names_the_step_last_pt_holds(faces_dir, tmp_path, monkeypatch):
    """Resumed mid-epoch, last.pt holds where the sitting began, not the previous epoch's end: the message says so."""
    script_a_collapse(monkeypatch)
    cfg = tiny_cfg(faces_dir, tmp_path, run_name="m", epochs=1)
    main_module.train(cfg)
    last = str(tmp_path / "m" / "last.pt")
    ckpt = load_checkpoint(last)
    ckpt["step_in_epoch"] = 3  # as a stop 3 steps into epoch 2 leaves it
    ckpt["partial_epoch"] = {"sums": {}, "counts": {}}
    torch.save(ckpt, last)
    with pytest.raises(main_module.TrainingStopped, match="collapsed") as e:
        main_module.train(tiny_cfg(faces_dir, tmp_path, run_name="m", epochs=3), run_dir=str(tmp_path / "m"),
                          resume=load_checkpoint(last))
    assert e.value.exit_code == 4 and "still holds step 3 of epoch 2" in str(e.value)


def test_a_loss_that_jumps_stops_the_run_within_the_first_epoch_with_a_checkpoint_from_before(faces_dir, tmp_path,
                                                                                            monkeypatch):
    """A run diverging in its first minutes (hole L1 x50 from the 8th step on: the first dilated design's
    activations reached 1e13 by step ~380) stops at the first log window after the jump, long before the
    first validation, and last.pt holds the state a window before the last one that passed (a runaway's start
    can pass a window)."""
    real_l1, calls = losses.l1_loss, {"n": 0}

    def jumps(*a):
        calls["n"] += 1
        return real_l1(*a) * (50 if calls["n"] >= 8 else 1)
    monkeypatch.setitem(losses.RECONSTRUCTION, "l1", ("w_l1", jumps))
    cfg = tiny_cfg(faces_dir, tmp_path, run_name="j", epochs=3, log_every=1, batch_size=2)
    with pytest.raises(main_module.TrainingStopped, match="jumped at step 8 of epoch 1") as e:
        main_module.train(cfg)
    assert e.value.exit_code == 3 and "as of step 6 of epoch 1, before it" in str(e.value) and "--lr-g" in str(e.value)
    ckpt = load_checkpoint(str(tmp_path / "j" / "last.pt"))
    assert (ckpt["epoch"], ckpt["step_in_epoch"]) == (0, 6) and not ckpt["history"]


def test_the_divergence_guard_follows_a_falling_loss_and_fires_only_on_a_jump():
    guard = main_module.DivergenceGuard(jump=5.0)
    assert not any(guard.jumped(v) for v in (0.5, 0.4, 0.3, 0.2, 0.15, 0.12, 0.1, 0.3, 0.1))  # noise, 3x: fine
    assert guard.jumped(10 * guard.level) and guard.jumped(float("nan")) and not guard.jumped(4 * guard.level)
    guard.keep({"step": 1}, "one")
    assert guard.snapshot == ()  # nothing older yet: last.pt, if any, is what a stop leaves
    guard.keep({"step": 2}, "two")
    guard.keep({"step": 3}, "three")
    assert guard.snapshot == ({"step": 2}, "two")  # one window behind the last that passed
    guard.saved()
    guard.keep({"step": 4}, "four")
    assert guard.snapshot == ()  # after a save, last.pt is the older state
    assert not main_module.DivergenceGuard(jump=0.0).jumped(1e9)  # off


def start_training(data, out, *extra):
    return subprocess.Popen([sys.executable, "main.py", "--preset", "tiny", "--data-dir", data, "--out-dir", str(out),
                             "--run-name", "r", "--epochs", "400", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_checkpoint(path, proc, timeout=60):
    start = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - start < timeout
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_last_and_prints_the_resume_command(faces_dir, tmp_path, sig):
    proc = start_training(faces_dir, tmp_path)
    wait_for_checkpoint(tmp_path / "r" / "last.pt", proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert f"python main.py --resume {tmp_path / 'r'}" in err
    ckpt = load_checkpoint(str(tmp_path / "r" / "last.pt"))
    assert ckpt["epoch"] < 400


def test_second_ctrl_c_exits_at_once_without_corrupting(faces_dir, tmp_path):
    # steps of ~1 s, so the second signal lands while the first one's step is still running
    proc = start_training(faces_dir, tmp_path, "--image-size", "128", "--arch", "unet", "--nf", "32", "--batch-size", "8",
                          "--hole-size", "32", "--hole-margin", "8")
    wait_for_checkpoint(tmp_path / "r" / "last.pt", proc, timeout=300)
    proc.send_signal(signal.SIGINT)
    err = ""
    while "SIGINT received" not in err:  # Python runs one handler for two signals that arrive together
        line = proc.stderr.readline()
        assert line, proc.communicate()
        err += line
    saved = os.path.getmtime(tmp_path / "r" / "last.pt")
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    # the second signal ends the process at once: the step is not finished and nothing is saved
    assert proc.returncode == 128 + signal.SIGINT and "second SIGINT: exiting now" in rest, err + rest
    assert "saved" not in rest and os.path.getmtime(tmp_path / "r" / "last.pt") == saved
    load_checkpoint(str(tmp_path / "r" / "last.pt"))


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(faces_dir, tmp_path):
    rng = np.random.default_rng(0)
    for attempt in range(4):
        out = tmp_path / f"k{attempt}"
        proc = start_training(faces_dir, out, "--max-images", "24", "--max-val-images", "2")
        wait_for_checkpoint(out / "r" / "last.pt", proc)
        time.sleep(float(rng.uniform(0, 1.0)))  # kill somewhere in the stream of saves
        proc.kill()
        proc.communicate()
        for name in ("last.pt", "best.pt"):
            if (out / "r" / name).exists():
                ckpt = load_checkpoint(str(out / "r" / name))
                assert ckpt["epoch"] >= 1


def final_state(run_dir):
    ckpt = load_checkpoint(os.path.join(run_dir, "last.pt"))
    skip = {"train_images_per_s", "seconds"}
    return ckpt["generator"], ckpt.get("discriminator", {}), [{k: v for k, v in r.items() if k not in skip}
                                                      for r in ckpt["history"]]


def assert_same_run(a, b):
    for sa, sb in zip(a[:2], b[:2]):
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a[2] == b[2]


def test_resume_after_an_epoch_is_exact(faces_dir, tmp_path):
    # A 1-epoch run later extended to 3 matches a 3-epoch run only under a constant learning rate: a cosine
    # schedule is laid over the run's --epochs, so extending it stretches what is left (the mid-epoch test
    # below keeps --epochs and covers the cosine default).
    const = ("--lr-schedule", "constant")
    run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", str(tmp_path), "--run-name", "full",
               "--epochs", "3", *const)
    run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", str(tmp_path), "--run-name", "cut",
               "--epochs", "1", *const)
    run_script("main.py", "--resume", str(tmp_path / "cut"), "--epochs", "3")
    assert_same_run(final_state(tmp_path / "full"), final_state(tmp_path / "cut"))


@pytest.mark.parametrize("w_adv", ["1", "0"])  # with the GAN, and without it (then no discriminator exists)
def test_resume_after_a_signal_mid_epoch_is_exact(faces_dir, tmp_path, w_adv):
    args = ("--epochs", "3", "--batch-size", "2", "--image-size", "64", "--hole-size", "16", "--hole-margin", "8",
            "--w-adv", w_adv)
    run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", str(tmp_path), "--run-name", "full",
               *args)
    proc = subprocess.Popen([sys.executable, "main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir",
                             str(tmp_path), "--run-name", "cut", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = ""
    while "epoch 2/3" not in seen:  # the progress bar of epoch 2 appears before its first step
        char = proc.stdout.read(1)
        assert char, proc.communicate()
        seen = seen[-20:] + char
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    stopped = load_checkpoint(str(tmp_path / "cut" / "last.pt"))
    assert stopped["epoch"] == 1 and 0 < stopped["step_in_epoch"] < 16, err  # really mid-epoch
    proc = run_script("main.py", "--resume", str(tmp_path / "cut"))
    assert f"resuming at epoch 2, step {stopped['step_in_epoch']}" in proc.stdout
    assert_same_run(final_state(tmp_path / "full"), final_state(tmp_path / "cut"))


def test_unwritable_output_folder_is_a_clear_error(faces_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", str(blocker / "out"),
                      check=False)
    assert proc.returncode == 2 and "cannot write the run folder" in proc.stderr and "--out-dir" in proc.stderr


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    atomic_save({"epoch": 1, "config": {}, "generator": {"w": torch.ones(3)}}, path)

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous file there is intact"):
        atomic_save({"epoch": 2, "config": {}, "generator": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


# --- untrusted checkpoints ---

class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))  # creates the file if ever unpickled


def test_checkpoint_with_a_pickle_payload_is_refused_and_runs_nothing(tmp_path, tiny_run):
    target = tmp_path / "pwned"
    bad_run = tmp_path / "run"
    bad_run.mkdir()
    (bad_run / "split.json").write_text((open(os.path.join(tiny_run[0], "split.json")).read()))
    ckpt = load_checkpoint(os.path.join(tiny_run[0], "best.pt"))
    ckpt["extra"] = Payload(str(target))
    with open(bad_run / "best.pt", "wb") as fh:
        torch.save(ckpt, fh)  # torch.save pickles the payload object
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(str(bad_run / "best.pt"))
    proc = run_script("results.py", str(bad_run), check=False)
    assert proc.returncode == 2 and "refusing to load" in proc.stderr
    assert not target.exists()
    with open(bad_run / "plain.pkl", "wb") as fh:  # sanity: the payload does work when unpickled
        pickle.dump(Payload(str(target)), fh)
    with open(bad_run / "plain.pkl", "rb") as fh:
        pickle.load(fh)
    assert target.exists()


def test_a_mid_epoch_resume_goes_on_after_a_term_was_added_to_the_code(faces_dir, tmp_path):
    """A run stopped mid-epoch by code that logged fewer terms (here: no l2; and no validation LPIPS, as before its
    weights were installed) resumes under today's code: the new term's running mean starts at the resume, and
    metrics.csv takes the new columns."""
    import csv
    import torch
    out = str(tmp_path / "out")
    run = os.path.join(out, "older")
    run_script("main.py", "--preset", "tiny", "--data-dir", faces_dir, "--out-dir", out, "--run-name", "older",
               "--epochs", "3", "--val-lpips-images", "4")
    last = os.path.join(run, "last.pt")
    ckpt = torch.load(last, weights_only=True)  # as older code would have written it mid-epoch 3
    ckpt["epoch"], ckpt["step_in_epoch"] = 2, 3
    ckpt["partial_epoch"] = {"sums": {k: v for k, v in {"gan_g": 2.0, "gan_d": 2.1, "l1": 0.9, "edge": 0.3,
                                                        "ssim_loss": 2.4}.items()}, "good": 3}
    ckpt["history"] = [{k: v for k, v in row.items() if k not in ("train_l2", "val_lpips")} for row in ckpt["history"][:2]]
    torch.save(ckpt, last)
    with open(os.path.join(run, "metrics.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(ckpt["history"][0]))
        writer.writeheader()
        writer.writerows(ckpt["history"])
    run_script("main.py", "--resume", run)  # no KeyError in the partial sums, no ValueError on the CSV header
    rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for column in ("train_l2", "val_lpips"):  # the new columns, empty in the rows from before they existed
        assert rows[0][column] == rows[1][column] == "" and float(rows[2][column]) > 0
