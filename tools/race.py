"""Race training recipes at equal wall time, side by side, then judge them on the validation split.

    python tools/race.py --data-dir ../shared/celeba --minutes 32 --out-dir ~/runs/race \
        --candidate unet="--arch unet --crop 0" --candidate dilated="" -- --mask mixed --w-adv 0

Every candidate is `python main.py` with the common flags (after --) plus its own, one thread each, all
started together and stopped by --max-minutes (last.pt, as on Ctrl-C). Each run's last.pt is then evaluated
by results.py on the first --val-images validation faces (every kind of hole, each image in one area bucket
per kind; the classical fills on the same holes come from results.py's cache after the first run, or are left
out with --no-baselines). Prints one table per kind (hole PSNR and LPIPS of each candidate beside biharmonic's
and PatchMatch's), writes it to OUT/race.md with OUT/race.json and OUT/race_curves.png (training loss against
minutes and images).
Training and evaluation are separate steps (--skip-training judges finished runs; a run whose race_val is newer
than its last.pt is read back, not judged again).
"""
import argparse
import csv
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from config import atomic_write, write_text  # noqa: E402

CLASSICAL = ("biharmonic", "PatchMatch")
CELL = (("psnr", 2), ("lpips", 4), ("seam", 3), ("detail", 2), ("grid", 2))  # each cell's metrics and their decimals
COLUMNS = "PSNR / LPIPS / seam / detail / grid"
KINDS = "square,boxes,strokes"


def parse_candidate(text: str) -> tuple:
    name, sep, flags = text.partition("=")
    if not sep or not name or "/" in name:
        raise SystemExit(f"error: --candidate {text!r}: expected NAME=\"FLAGS\" (NAME a plain folder name)")
    return name, shlex.split(flags)


def train_all(args, candidates: dict, common: list):
    """All candidates at once, one thread each, each stopped by --max-minutes; their logs in OUT/NAME.log."""
    procs = {}
    for name, flags in candidates.items():
        cmd = [sys.executable, os.path.join(ROOT, "main.py"), "--data-dir", args.data_dir, "--out-dir", args.out_dir,
               "--run-name", name, "--threads", str(args.threads), "--max-minutes", str(args.minutes), *common, *flags]
        log = open(os.path.join(args.out_dir, f"{name}.log"), "w")
        print(f"{name}: {shlex.join(cmd)}", flush=True)
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), log)
    failed = []
    for name, (proc, log) in procs.items():
        if proc.wait() != 0:
            failed.append(f"{name} (exit {proc.returncode}; see {log.name})")
        log.close()
    if failed:
        raise SystemExit("error: training failed: " + ", ".join(failed))


def judge(args, name: str) -> dict:
    """results.py on the run's last.pt; a judgement newer than last.pt is read back instead of redone."""
    out = os.path.join(args.out_dir, name, "race_val")
    done = os.path.join(out, "results.json")
    if os.path.isfile(done) and os.path.getmtime(done) > os.path.getmtime(os.path.join(args.out_dir, name, "last.pt")):
        with open(done) as fh:
            judged = json.load(fh)
        if has_identity(judged) or not args.identity_images:
            print(f"judging {name}: reusing {done} (newer than its last.pt)", flush=True)
            return judged
    cmd = [sys.executable, os.path.join(ROOT, "results.py"), os.path.join(args.out_dir, name), "--checkpoint", "last",
           "--data-dir", args.data_dir, "--split", "val", "--max-images", str(args.val_images), "--buckets", "cycle",
           "--masks", KINDS, "--out", out, "--jobs", str(args.jobs), "--identity-images", str(args.identity_images),
           *(["--no-baselines"] if args.no_baselines else [])]
    print(f"judging {name}: {shlex.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    with open(os.path.join(out, "results.json")) as fh:
        return json.load(fh)


def has_identity(judged: dict) -> bool:
    """Whether a results.json measured the same-person share (of our composites, on any kind)."""
    return any("same_person" in buckets.get("all", {}).get("ours", {}) for buckets in judged["sets"].values())


def steps(run_dir: str) -> list:
    """A run's steps.csv rows (its training curve)."""
    with open(os.path.join(run_dir, "steps.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def table(results: dict, args) -> str:
    """Markdown: one row per (kind, bucket), the CELL metrics of each candidate and classical fill."""
    names = list(results)
    first = results[names[0]]["sets"]
    methods = [(n, "ours", results[n]) for n in names] + [(c, c, results[names[0]]) for c in CLASSICAL]
    head = "| kind | bucket | " + " | ".join(f"{label} {COLUMNS}" for label, _, _ in methods) + " |"
    lines = [head, "|" + "---|" * (2 + len(methods))]
    for kind, buckets in first.items():
        for bucket in [b for b in buckets if b != "all"] + ["all"]:
            cells = []
            for _, method, res in methods:
                m = res["sets"][kind][bucket].get(method, {})
                values = [(m.get(k, {}).get("mean"), d) for k, d in CELL]
                cells.append("–" if values[0][0] is None else " / ".join("–" if v is None else f"{v:.{d}f}" for v, d in values))
            lines.append(f"| {kind} | {'pooled' if bucket == 'all' else bucket} | " + " | ".join(cells) + " |")
    last = {n: (steps(os.path.join(args.out_dir, n)) or [{}])[-1] for n in names}
    seen = [f"{n}: {int(last[n].get('images', 0)):,} images in {float(last[n].get('minutes', 0)):.1f} min" for n in names]
    return "\n".join(lines) + "\n\nTraining: " + "; ".join(seen) + "\n"


def curves(names: list, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        rows = [r for r in steps(os.path.join(args.out_dir, name)) if r.get("l2")]  # a branch's copied rows may lack it
        for ax, x in zip(axes, ("minutes", "images")):
            ax.plot([float(r[x]) for r in rows], [float(r["l2"]) for r in rows], label=name)
    for ax, x in zip(axes, ("minutes trained", "training images seen")):
        ax.set_xlabel(x), ax.set_ylabel("training L2 on hole + ring (running mean of the epoch)")
        ax.set_yscale("log"), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(os.path.join(args.out_dir, "race_curves.png"), lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    common = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--data-dir", required=True, help="CelebA root (its training partition trains, validation judges)")
    p.add_argument("--out-dir", required=True, help="folder of the race's runs (outside the work tree for long races)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock training minutes of every candidate")
    p.add_argument("--candidate", action="append", required=True, metavar='NAME="FLAGS"',
                   help="a run's name and its own main.py flags; repeat for each candidate")
    p.add_argument("--threads", type=int, default=1, help="torch threads per candidate")
    p.add_argument("--val-images", type=int, default=500, help="validation faces judged (each kind, one bucket each)")
    p.add_argument("--jobs", type=int, default=2, help="processes for the classical fills while judging")
    p.add_argument("--identity-images", type=int, default=0,
                   help="faces whose same-person share is measured (dlib, ~0.1 s a face and method); 0 = off")
    p.add_argument("--no-baselines", action="store_true",
                   help="judge the candidates only (no classical fills: their columns stay empty; ~20 min saved "
                   "where results.py's cache does not hold them)")
    p.add_argument("--skip-training", action="store_true", help="only judge the runs already in --out-dir")
    args = p.parse_args(argv)
    args.out_dir = os.path.abspath(os.path.expanduser(args.out_dir))
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    candidates = dict(parse_candidate(c) for c in args.candidate)
    os.makedirs(args.out_dir, exist_ok=True)
    if not args.skip_training:
        train_all(args, candidates, common)
    results = {name: judge(args, name) for name in candidates}
    text = table(results, args)
    print("\n" + text)
    head = ("Judged only (--skip-training): each run's config.json says how it trained\n\n" if args.skip_training else
            f"Race: {args.minutes:g} min each, {args.threads} thread(s) each; common flags: {shlex.join(common)}\n\n"
            + "\n".join(f"- {n}: {shlex.join(f) or '(defaults)'}" for n, f in candidates.items()) + "\n\n")
    write_text(os.path.join(args.out_dir, "race.md"), head + text)
    write_text(os.path.join(args.out_dir, "race.json"), json.dumps(
        {"minutes": args.minutes, "common": common, "candidates": candidates,
         "results": {n: r["sets"] for n, r in results.items()}}, indent=2))
    curves(list(candidates), args)
    print(f"wrote race.md, race.json, race_curves.png to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
