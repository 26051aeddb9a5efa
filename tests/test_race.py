"""tools/race.py's judging: a finished judgement is reused unless it lacks what this call asks for."""
import importlib.util
import json
import os
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("race", os.path.join(ROOT, "tools", "race.py"))
race = importlib.util.module_from_spec(spec)
spec.loader.exec_module(race)


def judged(same_person: bool) -> dict:
    ours = {"psnr": {"mean": 22.0}, **({"same_person": {"mean": 0.98}} if same_person else {})}
    return {"sets": {"strokes": {"all": {"ours": ours, "biharmonic": {"psnr": {"mean": 21.0}}}}}}


def test_a_judgement_without_identity_is_redone_when_identity_is_asked_for(tmp_path, monkeypatch):
    run = tmp_path / "k05"
    (run / "race_val").mkdir(parents=True)
    (run / "last.pt").write_bytes(b"")
    done = run / "race_val" / "results.json"
    done.write_text(json.dumps(judged(False)))
    os.utime(run / "last.pt", (1, 1))  # the judgement is newer than the checkpoint
    calls = []

    def fake_results(cmd, check, cwd):
        calls.append(cmd)
        done.write_text(json.dumps(judged(True)))
    monkeypatch.setattr(race.subprocess, "run", fake_results)
    args = SimpleNamespace(out_dir=str(tmp_path), data_dir="celeba", val_images=8, jobs=1, identity_images=0,
                           no_baselines=True)
    assert race.judge(args, "k05") == judged(False) and calls == []  # identity not asked for: reused
    args.identity_images = 8
    assert race.has_identity(race.judge(args, "k05")) and len(calls) == 1
    assert calls[0][calls[0].index("--identity-images") + 1] == "8" and "--no-baselines" in calls[0]
    assert race.judge(args, "k05") == judged(True) and len(calls) == 1  # now it has it: reused


def test_a_judge_only_race_says_so_and_shows_a_missing_metric_as_a_dash(tmp_path, monkeypatch):
    """--skip-training names no minutes, threads or flags it did not use; a judgement from before a metric existed
    (no grid) keeps its cell's columns aligned with a dash."""
    (tmp_path / "k0").mkdir()
    (tmp_path / "k0" / "steps.csv").write_text("images,minutes\n1000,12.5\n")
    monkeypatch.setattr(race, "judge", lambda args, name: judged(True))
    monkeypatch.setattr(race, "curves", lambda names, args: None)
    assert race.main(["--skip-training", "--data-dir", "celeba", "--out-dir", str(tmp_path), "--candidate", "k0="]) == 0
    text = (tmp_path / "race.md").read_text()
    assert text.startswith("Judged only (--skip-training)") and "min each" not in text
    assert "| strokes | pooled | 22.00 / – / – / – / – |" in text and "1,000 images in 12.5 min" in text
