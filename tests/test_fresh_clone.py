"""What a new user meets: where the images come from, which model results.py evaluates, failed starts."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, make_faces, run_script
from dataset import DataError, resolve_data_dir

QUICK = ("--max-images", "2", "--masks", "square", "--no-baselines", "--no-perceptual", "--jobs", "1")


def run_elsewhere(cwd, *args, env=None):
    """A repo script run from another working directory, as `python /path/to/repo/SCRIPT ...`."""
    return subprocess.run([sys.executable, os.path.join(ROOT, args[0]), *args[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def test_data_dir_rule_flag_then_variable_then_saved(tmp_path, monkeypatch):
    a, b = make_faces(str(tmp_path / "a"), n=3), make_faces(str(tmp_path / "b"), n=2)
    monkeypatch.setenv("INPAINT_DATA_DIR", b)
    assert resolve_data_dir(a, "") == (a, "--data-dir")
    assert resolve_data_dir("", a) == (b, "$INPAINT_DATA_DIR")
    # the variable's folder lacks the run's images: the run's saved folder holds them
    assert resolve_data_dir("", a, needs=("000002.png",)) == (a, "the run's saved data_dir")
    with pytest.raises(DataError) as e:
        resolve_data_dir(str(tmp_path / "gone"), a)  # an explicit flag is never second-guessed
    assert "--data-dir" in str(e.value) and "not a folder" in str(e.value)
    monkeypatch.setenv("INPAINT_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as e:
        resolve_data_dir("", str(tmp_path / "moved"))
    assert "$INPAINT_DATA_DIR" in str(e.value) and "saved data_dir" in str(e.value) and "nowhere" in str(e.value)


def test_results_on_the_shipped_weights_reads_the_variable_from_any_folder(faces_dir, tmp_path):
    proc = run_elsewhere(str(tmp_path), "results.py", os.path.join(ROOT, "weights"), *QUICK,
                         env={"INPAINT_DATA_DIR": os.path.abspath(faces_dir)})
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("model: ") and "generator.pt" in first, first
    assert os.path.abspath(faces_dir) in first and "$INPAINT_DATA_DIR" in first, first


def test_results_without_arguments_evaluates_the_run_you_just_trained(tiny_run, tmp_path):
    shutil.copytree(tiny_run[0], tmp_path / "out" / "tiny")
    proc = run_elsewhere(str(tmp_path), "results.py", *QUICK, env={"INPAINT_DATA_DIR": ""})
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith(f"model: {os.path.join('out', 'tiny', 'best.pt')}"), first
    assert "the run's saved data_dir" in first
    assert os.path.isfile(tmp_path / "out" / "tiny" / "results.md")


def test_results_falls_back_to_the_saved_folder_and_names_what_it_tried(tiny_run, tmp_path):
    elsewhere = str(tmp_path / "elsewhere")
    proc = run_script("results.py", tiny_run[0], *QUICK, "--out", str(tmp_path / "res"),
                      env={"INPAINT_DATA_DIR": elsewhere})
    assert "(from the run's saved data_dir)" in proc.stdout.splitlines()[0]
    proc = run_script("results.py", tiny_run[0], *QUICK, "--out", str(tmp_path / "res"), "--data-dir", elsewhere,
                      check=False)
    assert proc.returncode == 2 and f"--data-dir = {elsewhere!r} (not a folder)" in proc.stderr, proc.stderr


@pytest.mark.parametrize("case", ["no data", "batch larger than the data"])
def test_a_failed_start_leaves_no_run_folder(faces_dir, tmp_path, case):
    out = tmp_path / "out"
    args = ["--data-dir", faces_dir, "--batch-size", "500"] if case != "no data" else []
    proc = run_script("main.py", "--preset", "tiny", "--out-dir", str(out), *args, env={"INPAINT_DATA_DIR": ""},
                      check=False)
    assert proc.returncode == 2, proc.stderr
    assert "no image folder given" in proc.stderr if case == "no data" else "--batch-size" in proc.stderr
    assert not out.exists() or os.listdir(out) == []
