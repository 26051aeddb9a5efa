"""tune.py: a tiny Optuna study that prunes, resumes and yields a trainable config; two worker processes
sharing one study on SQLite and on a real PostgreSQL server."""
import json
import os

import pytest

from conftest import run_script

PG_URL = os.environ.get("INPAINT_TEST_POSTGRES_URL", "")
TINY = ["--preset", "tiny", "--epochs", "3"]


def load_study(url, name):
    optuna = pytest.importorskip("optuna")
    return optuna.load_study(study_name=name, storage=url)


def assert_clean(study, n, folder):
    """Exactly n finished trials, each once, none lost (running/failed) or duplicated."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert len(trials) == n and set(states) <= {"COMPLETE", "PRUNED"}, states
    assert sorted(t.number for t in trials) == list(range(n))
    runs = sorted(os.listdir(os.path.join(folder, "trials")))
    assert runs == [f"trial-{i:04d}" for i in range(n)]
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == n  # every trial its own point


def test_tiny_study_prunes_resumes_and_its_best_config_trains(faces_dir, tmp_path):
    pytest.importorskip("optuna")
    out = str(tmp_path / "out")
    proc = run_script("tune.py", *TINY, "--trials", "6", "--data-dir", faces_dir, "--out-dir", out)
    folder = os.path.join(out, "tune", "tiny-psnr")
    url = f"sqlite:///{os.path.abspath(os.path.join(folder, 'study.db'))}"
    study = load_study(url, "tiny-psnr")
    states = [t.state.name for t in study.get_trials()]
    assert len(states) == 6 and states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 1
    assert "best trial" in proc.stdout and "python main.py --config" in proc.stdout
    for f in ("best_config.json", "optimization_history.png", "param_importances.png"):
        assert os.path.isfile(os.path.join(folder, f)), f
    # rerunning the same command with a larger target continues the same study
    proc = run_script("tune.py", *TINY, "--trials", "8", "--data-dir", faces_dir, "--out-dir", out)
    assert "6 finished trials, running 2 more" in proc.stdout
    assert_clean(load_study(url, "tiny-psnr"), 8, folder)
    # the best config is a file main.py accepts
    best = os.path.join(folder, "best_config.json")
    run_script("main.py", "--config", best, "--data-dir", faces_dir, "--out-dir", str(tmp_path / "o"),
               "--run-name", "best", "--epochs", "1")
    cfg = json.load(open(os.path.join(tmp_path, "o", "best", "config.json")))
    assert cfg["lr_g"] == json.load(open(best))["lr_g"]


def test_two_processes_share_a_sqlite_study(faces_dir, tmp_path):
    pytest.importorskip("optuna")
    out = str(tmp_path / "out")
    run_script("tune.py", *TINY, "--trials", "4", "--processes", "2", "--data-dir", faces_dir, "--out-dir", out,
               "--study", "shared")
    folder = os.path.join(out, "tune", "shared")
    assert_clean(load_study(f"sqlite:///{os.path.abspath(os.path.join(folder, 'study.db'))}", "shared"), 4, folder)


def test_two_processes_share_a_postgresql_study(faces_dir, tmp_path):
    pytest.importorskip("optuna")
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("INPAINT_TEST_POSTGRES_URL is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip("set INPAINT_TEST_POSTGRES_URL to a PostgreSQL database to run this test")
    import sqlalchemy
    try:
        with sqlalchemy.create_engine(PG_URL).connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as e:  # noqa: BLE001 - any failure to reach the server fails the test
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable: {e}")
    name = f"pg-{os.getpid()}-{tmp_path.name}"  # a fresh study in a database other runs may share
    out = str(tmp_path / "out")
    run_script("tune.py", *TINY, "--trials", "4", "--processes", "2", "--data-dir", faces_dir, "--out-dir", out,
               "--study", name, "--storage", PG_URL)
    assert_clean(load_study(PG_URL, name), 4, os.path.join(out, "tune", name))
