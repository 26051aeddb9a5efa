"""Hyperparameter search with Optuna over main.train(config).

    python tune.py --preset tiny --trials 6                     # SQLite study in out/tune/<study>/
    python tune.py --data-dir DIR --trials 40 --processes 2     # 2 local processes share the study
    python tune.py --trials 100 --storage postgresql://user@host/db --join   # one more worker, any machine

Every Config flag sets the base recipe (e.g. --epochs, --data-dir); the search varies the architecture
(and its width), the training crop, the learning rate, the reconstruction weights (L1, L2, edge, SSIM),
the batch size and, when the base recipe has the GAN on, the adversarial weight and the discriminator's
learning rate. The objective is the validation hole
PSNR or SSIM (--objective) after the last epoch, reported every epoch so the pruner can stop bad trials.
Rerunning the same command continues the study up to --trials finished trials. At the end: the best
trial, its config as best_config.json (python main.py --config best_config.json trains it), and
param_importances.png / optimization_history.png in the study folder.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import warnings

import optuna
from optuna.trial import TrialState

from config import Config, UserError, atomic_write, build_parser, resolve_config, write_text
from models import ARCHITECTURES
from main import TrainingStopped, train

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, matplotlib plots


def save_figure(fig, path: str):
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight"))


def crop_choices(base: Config) -> list:
    """Whole images and two crop sides the architecture takes (multiples of 8 from 32 up), at most the image."""
    sides = {base.crop, base.image_size * 3 // 5 // 8 * 8, base.image_size * 2 // 5 // 8 * 8}
    return sorted({0} | {s for s in sides if 32 <= s < base.image_size})


def suggest_config(trial: optuna.Trial, base: Config) -> Config:
    """The levers that matter, searched around the base recipe: the architecture and its size, the crop,
    the learning rate, every reconstruction weight, and the adversarial weight and the discriminator's
    learning rate, feature matching, R1 and the discriminator's depth when the base recipe has the GAN on."""
    v = base.to_dict()
    v["arch"] = trial.suggest_categorical("arch", sorted(ARCHITECTURES))
    if v["arch"] == "unet":
        v["nf"] = trial.suggest_categorical("nf", sorted({max(8, base.nf // 2 // 8 * 8), base.nf}))
    else:
        v["width"] = trial.suggest_categorical("width", sorted({max(8, base.width // 2 // 8 * 8), base.width}))
        v["blocks"] = trial.suggest_categorical("blocks", sorted({max(1, base.blocks // 2), base.blocks}))
    v["crop"] = trial.suggest_categorical("crop", crop_choices(base))
    v["lr_g"] = trial.suggest_float("lr_g", base.lr_g / 5, base.lr_g * 5, log=True)
    v["w_l1"] = trial.suggest_float("w_l1", 10.0, 300.0, log=True)
    v["w_l2"] = trial.suggest_float("w_l2", 0.0, 3000.0)
    v["w_edge"] = trial.suggest_float("w_edge", 0.0, 30.0)
    v["w_ssim"] = trial.suggest_float("w_ssim", 0.0, 5.0)
    if base.w_adv > 0:  # the GAN's levers only where the base recipe has one
        v["w_adv"] = trial.suggest_float("w_adv", 0.01, 10.0, log=True)
        v["lr_d"] = trial.suggest_float("lr_d", base.lr_d / 5, base.lr_d * 5, log=True)
        v["w_fm"] = trial.suggest_categorical("w_fm", [0.0, 10.0, 100.0])
        v["w_r1"] = trial.suggest_categorical("w_r1", [0.0, 0.001, 0.01])
        v["d_layers"] = trial.suggest_int("d_layers", 2, 4)
    v["batch_size"] = trial.suggest_categorical("batch_size", sorted({max(2, base.batch_size // 2), base.batch_size}))
    return Config.from_dict(v).validate()


def make_storage(url: str):
    """An RDB storage; SQLite waits for its lock instead of failing, and every storage detects the
    trials of workers that died (heartbeat) and retries them."""
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(
        url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=90,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))


def make_sampler(seed: int, study, worker: int):
    """TPE with a stream of its own: seeded by the run's seed, the trials already in the study and
    the worker, so a resumed study or a second worker never re-proposes the same points."""
    import numpy as np
    key = np.random.SeedSequence([seed, len(study.get_trials(deepcopy=False)), worker]).generate_state(1)[0]
    return optuna.samplers.TPESampler(seed=int(key))


def make_pruner(name: str, epochs: int):
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 2))
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


def finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_worker(study, base: Config, folder: str, objective: str, quota: "int | None", target: int):
    """Run trials: exactly `quota` of them, or (joining workers) until the study has `target` finished."""
    def run_trial(trial: optuna.Trial) -> float:
        cfg = suggest_config(trial, base)
        cfg.out_dir = os.path.join(folder, "trials")
        cfg.run_name = f"trial-{trial.number:04d}"
        run_dir = os.path.join(cfg.out_dir, cfg.run_name)
        trial.set_user_attr("config", {**cfg.to_dict(), "out_dir": base.out_dir, "run_name": ""})
        trial.set_user_attr("run_dir", run_dir)

        def report(epoch: int, row: dict):
            trial.report(row[f"val_{objective}"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        try:
            row = train(cfg, on_epoch=report)
        except TrainingStopped as e:  # NaN losses: a bad region of the space, not a crash
            raise optuna.TrialPruned(str(e).splitlines()[0]) from None
        value = row[f"val_{objective}"]
        return value if math.isfinite(value) else float("-inf")

    callbacks = [] if quota is not None else [optuna.study.MaxTrialsCallback(target, states=FINISHED + (TrialState.RUNNING,))]
    n = quota if quota is not None else max(target - finished(study), 0)
    if n > 0:
        study.optimize(run_trial, n_trials=n, callbacks=callbacks)


def summarize(study, folder: str, objective: str) -> "dict | None":
    """Print the best trial, write best_config.json and the two plots; returns the best config."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    print(f"study {study.study_name}: {len(states)} trials "
          f"({', '.join(f'{states.count(s)} {s.lower()}' for s in sorted(set(states)))})")
    if not done:
        print("no completed trial yet")
        return None
    best = study.best_trial
    config = best.user_attrs["config"]
    path = os.path.join(folder, "best_config.json")
    write_text(path, json.dumps(config, indent=2))
    print(f"best trial {best.number}: val {objective} {best.value:.4f}\n  " +
          "\n  ".join(f"{k} = {v}" for k, v in best.params.items()) +
          f"\nbest config: {path}  (train it: python main.py --config {path})")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        ax = ovm.plot_optimization_history(study)
        save_figure(ax.figure, os.path.join(folder, "optimization_history.png"))
        plt.close(ax.figure)
        if len(done) >= 2:
            try:
                ax = ovm.plot_param_importances(study)
                save_figure(ax.figure, os.path.join(folder, "param_importances.png"))
                plt.close(ax.figure)
            except (ValueError, RuntimeError) as e:  # e.g. every completed trial had the same value
                print(f"no parameter-importance plot: {e}")
    return config


def main(argv=None) -> int:
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="finished trials (complete or pruned) the study should reach")
    parser.add_argument("--objective", choices=("psnr", "ssim"), default="psnr", help="validation hole metric to maximise")
    parser.add_argument("--study", default="", help="study name (default: PRESET-OBJECTIVE)")
    parser.add_argument("--storage", default="", help="Optuna RDB URL, e.g. postgresql://user:pw@host/db "
                        "(default: SQLite file in the study folder)")
    parser.add_argument("--pruner", choices=("median", "hyperband"), default="median")
    parser.add_argument("--processes", type=int, default=1, help="local worker processes sharing the study")
    parser.add_argument("--join", action="store_true", help="join an existing study as one more worker (another machine)")
    parser.add_argument("--quota", type=int, default=None, help=argparse.SUPPRESS)  # set for spawned workers
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler")
    args = parser.parse_args(argv)
    try:
        base = resolve_config(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.trials < 1 or args.processes < 1:
        print("error: --trials and --processes must be >= 1", file=sys.stderr)
        return 2
    name = args.study or f"{base.preset}-{args.objective}"
    folder = os.path.join(base.out_dir, "tune", name)
    os.makedirs(folder, exist_ok=True)
    url = args.storage or f"sqlite:///{os.path.abspath(os.path.join(folder, 'study.db'))}"
    storage = make_storage(url)
    pruner = make_pruner(args.pruner, base.epochs)
    if args.join or args.quota is not None:
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        # joining machines have no index: their process id keeps their proposals apart
        study.sampler = make_sampler(args.sampler_seed, study, args.worker_index if args.quota is not None else os.getpid())
        run_worker(study, base, folder, args.objective, args.quota, args.trials)
        return 0
    # Created once, here, before any worker starts: parallel creation on SQLite races.
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner,
                                load_if_exists=True)
    study.sampler = make_sampler(args.sampler_seed, study, 0)
    remaining = max(args.trials - finished(study), 0)
    print(f"study {name} in {url}: {finished(study)} finished trials, running {remaining} more "
          f"with {args.processes} worker(s)", flush=True)
    quotas = [remaining // args.processes + (i < remaining % args.processes) for i in range(args.processes)]
    argv_rest = list(argv if argv is not None else sys.argv[1:])
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv_rest, "--quota", str(q),
                               "--worker-index", str(i)])
             for i, q in enumerate(quotas) if i > 0 and q > 0]
    run_worker(study, base, folder, args.objective, quotas[0], args.trials)
    failed = [p.wait() for p in procs]
    if any(failed):
        print(f"error: {sum(1 for c in failed if c)} worker process(es) failed", file=sys.stderr)
        return 1
    summarize(study, folder, args.objective)
    return 0


if __name__ == "__main__":
    sys.exit(main())
