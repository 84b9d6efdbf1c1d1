"""A pruner (median, or Hyperband) vs no pruning on the bundled data: epochs trained and best value.

    .venv/bin/python scripts/bench_pruning.py [--dataset pbmc68k] [--task single] [--arch dnn] [--trials 16]
                                              [--max-epochs 30] [--to-complete]
                                              [--pruner median|hyperband] [--warmup N]
                                              [--out results/pruning.md]

Both studies use the tune stage's own pieces (search space, TPE seeding, objective,
per-epoch reporting at `fold * max_epochs + epoch`, pruner) on in-memory storage, with
no MLflow logging, and run the same number of trials (`--trials` started trials each).
Epochs are summed over every trial and fold, pruned ones included.

The stage itself counts COMPLETE trials (`tuning.n_trials` = complete trials wanted), so
a pruned study keeps asking until it has that many complete ones. `--to-complete`
continues the pruned study to `--trials` complete trials and reports that cost too
(it roughly doubles the script's run time).

Needs `genebench prepare` to have run in the project (the bundled pbmc68k data).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _config(params: Path | None, dataset: str, pruner: str, max_epochs: int, folds: int):
    from benchmark.config import Config, load_config

    config = load_config(params, root=ROOT).for_dataset(dataset)
    p = config.params
    p = p.model_copy(update={
        "training": p.training.model_copy(update={"max_epochs": max_epochs}),
        "tuning": p.tuning.model_copy(update={"pruner": pruner, "folds": folds}),
    })
    return Config(p, config.path, config.root, dataset=dataset)


def run_study(config, task: str, arch: str, total: int, complete_wanted: int | None = None, pruner=None) -> dict:
    """`total` trials on an in-memory study (with `pruner`, else the stage's own); then
    (optionally) more until `complete_wanted` are COMPLETE. Returns the counts, epochs and
    best value at both points."""
    import optuna
    from optuna.trial import TrialState

    from benchmark import tuning

    tuning.quiet()
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), pruner=pruner or tuning.make_pruner(config),
                                sampler=optuna.samplers.TPESampler(n_startup_trials=config.params.tuning.n_startup_trials,
                                                                   seed=config.params.tuning.seed),
                                direction="minimize")
    objective = tuning.Objective(tuning.StudySpec(config, task, arch, "bench", ":memory:", None, None))  # no MLflow

    def snapshot(started: float) -> dict:
        trials = study.get_trials(deepcopy=False)
        best = tuning.best_of_first(study, complete_wanted or total)
        return {
            "trials": len(trials),
            "complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "failed": sum(t.state == TrialState.FAIL for t in trials),
            "epochs": sum(int(t.user_attrs.get("epochs", 0)) for t in trials),
            "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else None,
            "seconds": time.monotonic() - started,
        }

    def show(study, trial) -> None:
        print(f"  [{config.params.tuning.pruner}] trial {trial.number} {trial.state.name.lower()}"
              f" epochs={trial.user_attrs.get('epochs', 0)}"
              + (f" value={trial.value:.5f}" if trial.value is not None else ""), flush=True)

    def one_trial() -> None:
        study.optimize(objective, n_trials=1, callbacks=[show], catch=(Exception,))

    started = time.monotonic()
    for _ in range(total):
        one_trial()
    fixed = snapshot(started)
    result = {"same_trials": fixed}
    if complete_wanted is not None:
        while sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) < complete_wanted:
            one_trial()
        result["same_complete"] = snapshot(started)
    return result


def _fmt(value, digits=5) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(args, none: dict, pruned: dict, command: str, seconds: float) -> str:
    a, b = none["same_trials"], pruned["same_trials"]
    saved = 1 - b["epochs"] / a["epochs"]
    gap = (b["best_value"] - a["best_value"]) / a["best_value"]
    import optuna
    import tensorflow as tf

    lines = [
        f"# Pruning benchmark: {args.pruner_name} pruner vs none",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()}-core CPU ({_cpu()}), no GPU, shared with other jobs (wall times are "
        f"indicative only); Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Optuna {optuna.__version__}",
        f"- Study: task `{args.task}`, arch `{args.arch}` (search space `models.{args.arch}.search_space` of "
        f"params.yaml), the bundled `{args.dataset}` data as prepared, TPE with "
        f"`n_startup_trials={args.startup}`, `tuning.folds={args.folds}`, `max_epochs={args.max_epochs}` "
        f"with early stopping (`training.patience={args.patience}`); {args.pruner_name} pruner with "
        f"{args.pruner_settings}; objective = mean "
        f"validation RMSE over the folds; epochs summed over all trials and folds.",
        f"- Total wall time of the script: {seconds / 60:.1f} min",
        "",
        "| run | trials | complete | pruned | failed | epochs trained | best value (RMSE) | wall time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(f"no pruning, {args.trials} trials", a), (f"{args.pruner_name} pruner, {args.trials} trials", b)]
    if "same_complete" in pruned:
        rows.append((f"{args.pruner_name} pruner, continued to {args.trials} complete (time includes the row above)",
                     pruned["same_complete"]))
    for name, row in rows:
        lines.append(f"| {name} | {row['trials']} | {row['complete']} | {row['pruned']} | {row['failed']} | "
                     f"{row['epochs']} | {_fmt(row['best_value'])} | {row['seconds']:.0f} s |")
    aim = "meets" if saved >= 0.40 and gap <= 0.02 else "misses"
    lines += [
        "",
        f"Same number of trials ({args.trials}): the {args.pruner_name} pruner trained **{saved:.0%} fewer epochs** "
        f"({b['epochs']} vs {a['epochs']}) with a best value **{gap:+.2%}** relative to no pruning "
        f"({_fmt(b['best_value'])} vs {_fmt(a['best_value'])}). This {aim} the aim "
        f"(at least 40% fewer epochs, best value within 2%).",
        "",
    ]
    if "same_complete" in pruned:
        c = pruned["same_complete"]
        change = c["epochs"] / a["epochs"] - 1
        lines += [
            f"The tune stage counts complete trials (`tuning.n_trials` = complete trials wanted; pruned ones "
            f"do not count), so with the {args.pruner_name} pruner `genebench tune` goes on to {args.trials} complete "
            f"trials: {c['trials']} trials, {c['epochs']} epochs ({abs(change):.0%} "
            f"{'more' if change > 0 else 'fewer'} than no pruning), best value "
            f"{(c['best_value'] - a['best_value']) / a['best_value']:+.2%} ({_fmt(c['best_value'])}). "
            f"Under that rule pruning buys more configurations for a similar number of epochs, not "
            f"fewer epochs.",
            "",
        ]
    lines += [f"Best parameters without pruning: `{a['best_params']}`; with the {args.pruner_name} pruner: "
              f"`{b['best_params']}`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="single", choices=["single", "multi"])
    parser.add_argument("--arch", default="dnn")
    parser.add_argument("--dataset", default="pbmc68k")
    parser.add_argument("--trials", type=int, default=16, help="trials per study")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=2, help="tuning.folds")
    parser.add_argument("--params", type=Path, default=None)
    parser.add_argument("--to-complete", action="store_true",
                        help="continue the pruned study to --trials complete trials (the stage's rule)")
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"],
                        help="the pruner measured, built as `tuning.pruner` builds it")
    parser.add_argument("--warmup", type=int, default=None,
                        help="the median pruner's n_warmup_steps instead of the stage's (a what-if)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "pruning.md")
    args = parser.parse_args(argv)
    if args.warmup is not None and args.pruner != "median":
        parser.error("--warmup is the median pruner's")
    args.pruner_name = "Hyperband" if args.pruner == "hyperband" else "median"
    os.chdir(ROOT)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    started = time.monotonic()
    none_config = _config(args.params, args.dataset, "none", args.max_epochs, args.folds)
    args.startup = none_config.params.tuning.n_startup_trials
    args.patience = none_config.params.training.patience
    print(f"no pruning: {args.trials} trials of {args.arch} on {args.task}", flush=True)
    none = run_study(none_config, args.task, args.arch, args.trials)
    print(f"{args.pruner} pruner: {args.trials} trials" + (" then on to as many complete" if args.to_complete else ""),
          flush=True)
    from benchmark import tuning

    pruned_config = _config(args.params, args.dataset, args.pruner, args.max_epochs, args.folds)
    pruner = tuning.make_pruner(pruned_config)  # what `genebench tune` builds; its settings go in the report
    inner = getattr(pruner, "pruner", pruner)  # inside the stage's bound (pruned < complete)
    if args.warmup is not None:  # the same (median) pruner judged from an earlier epoch
        import optuna

        inner = optuna.pruners.MedianPruner(n_startup_trials=inner._n_startup_trials,
                                            n_warmup_steps=args.warmup, n_min_trials=inner._n_min_trials)
        pruner = tuning.study.BoundedPruner(inner)
    args.pruner_settings = ", ".join(f"`{name.strip('_')}={getattr(inner, name)}`"
                                     for name in ("_n_startup_trials", "_n_warmup_steps", "_n_min_trials",
                                                  "_min_resource", "_max_resource", "_reduction_factor")
                                     if hasattr(inner, name))
    if inner is not pruner:
        args.pruner_settings += ", pruning only while the study holds fewer pruned trials than complete ones"
    pruned = run_study(pruned_config, args.task, args.arch,
                       args.trials, complete_wanted=args.trials if args.to_complete else None, pruner=pruner)
    command = " ".join([".venv/bin/python", "scripts/bench_pruning.py", *map(shlex.quote, argv or sys.argv[1:])])
    text = report(args, none, pruned, command.strip(), time.monotonic() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
