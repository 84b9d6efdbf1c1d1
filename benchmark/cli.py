"""Command line: argument parsing only; each subcommand calls one stage function.

Stage modules are imported inside their handlers so that commands which need no
TensorFlow (data, prepare, baselines, compare) never pay for importing it.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

from benchmark import ARCHS, TASKS
from benchmark.errors import UserError


def _at_least_one(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2."""

    def error(self, message: str) -> None:  # pragma: no cover - exercised via CLI tests
        self.exit(2, f"{self.prog}: error: {message}\n")


def _config(args):
    from benchmark.config import load_config

    return load_config(args.params)


def _dataset_config(args):
    """The params bound to `--dataset` (which may be left out where `datasets` lists one)."""
    return _config(args).for_dataset(args.dataset)


def _cmd_bootstrap(args) -> int:
    from benchmark.data.commands import bootstrap

    return bootstrap(_config(args), dataset=args.dataset)


def _cmd_import(args) -> int:
    from benchmark.data.commands import import_matrix

    return import_matrix(_config(args), Path(args.path), name=args.name, fmt=args.format,
                         transpose=args.transpose, transform=args.transform, force=args.force,
                         index_column=args.index_column)


def _cmd_validate(args) -> int:
    from benchmark.data.commands import validate_matrix

    return validate_matrix(_config(args), Path(args.path), fmt=args.format, transpose=args.transpose,
                           transform=args.transform, index_column=args.index_column)


def _cmd_synth(args) -> int:
    from benchmark.data.synthetic import synth

    return synth(Path(args.out), samples=args.samples, genes=args.genes, seed=args.seed, rank=args.rank, noise=args.noise)


def _cmd_prepare(args) -> int:
    from benchmark.data.prepare import prepare

    config = _config(args)
    for name in [args.dataset] if args.dataset else config.datasets:
        out = prepare(config.for_dataset(name))
        print(f"prepared {name}: {out.relative_to(config.root) if out.is_relative_to(config.root) else out}")
    return 0


def _cmd_tune(args) -> int:
    from benchmark.tuning import tune

    tune(_dataset_config(args), args.task, args.arch, trials=args.trials, workers=args.workers,
         storage=args.storage, timeout=args.timeout)
    return 0


def _cmd_evaluate(args) -> int:
    from benchmark.evaluation import evaluate

    evaluate(_dataset_config(args), args.task, args.arch)
    return 0


def _cmd_run(args) -> int:
    """Tune and evaluate one architecture on both tasks of one dataset, in one command.

    A DVC stage runs this rather than four `tune`/`evaluate` processes because each
    process pays several seconds of imports (TensorFlow, MLflow, Optuna, scikit-learn);
    the tasks run side by side in forked processes (`benchmark.run_stage`).
    """
    from benchmark.run_stage import default_jobs, run

    config = _dataset_config(args)
    tasks = args.tasks or TASKS
    run(config, args.arch, tasks, args.jobs if args.jobs is not None else default_jobs(config, len(tasks)))
    return 0


def _cmd_compare(args) -> int:
    from benchmark.report import compare

    compare(_config(args))
    return 0


def _cmd_promote(args) -> int:
    from benchmark.registry import promote

    return promote(_config(args), dataset=args.dataset, task=args.task, candidate=args.candidate, force=args.force,
                   rollback=args.rollback)


def _cmd_serve_example(args) -> int:
    from benchmark.serving import serve_example

    return serve_example(_dataset_config(args), args.task, rows=args.rows)


def _cmd_ui(args) -> int:
    """`mlflow ui` on 127.0.0.1 over the project's store.

    The store URI goes to MLflow through the environment (`MLFLOW_BACKEND_STORE_URI`,
    which `mlflow ui`/`mlflow server` read for `--backend-store-uri`), not argv, where
    any user on the machine could read a database password in the process list; the
    printed line masks it. One worker process by default (MLflow's is 4): the UI serves
    one user on loopback, and each worker imports MLflow, which delays the first page on
    a small machine.
    """
    from benchmark.config import mask_url

    config = _config(args)
    uri = config.tracking_uri
    mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    argv = [mlflow_bin, "ui", "--host", "127.0.0.1", "--port", str(args.port), "--workers", str(args.workers)]
    env = dict(os.environ, MLFLOW_BACKEND_STORE_URI=uri, MLFLOW_TRACKING_URI=uri)
    print(f"MLflow UI on http://127.0.0.1:{args.port} over {mask_url(uri)}", flush=True)
    os.execve(argv[0], argv, env)
    return 1  # pragma: no cover


VERBOSE_HELP = ("show the libraries' own output (TensorFlow's C++ log, MLflow's progress bars); "
                "GENEBENCH_LOG=debug does the same, for DVC stages too")
DATASET_HELP = "a dataset listed in `datasets` (may be left out where it lists one)"


def build_parser() -> argparse.ArgumentParser:
    """`genebench`'s parser: `data` (bootstrap, import, validate, synth), the DVC stages,
    and the commands over a registered model and the tracking store."""
    common = argparse.ArgumentParser(add_help=False)  # the options every subcommand takes
    common.add_argument("--params", default=None, metavar="FILE", help="params file (default: <project root>/params.yaml)")
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)

    parser = _Parser(prog="genebench", description="Benchmark deep architectures for gene-expression prediction.")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_data_commands(sub, common)
    _add_stage_commands(sub, common)
    _add_model_commands(sub, common)
    return parser


def _add_data_commands(sub, common: argparse.ArgumentParser) -> None:
    """`genebench data bootstrap|import|validate|synth`."""
    data = sub.add_parser("data", help="bring a dataset into data/")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    p = data_sub.add_parser("bootstrap", parents=[common],
                            help="write the bundled datasets (pbmc68k, zeisel, cbmc, synthetic) into data/")
    p.add_argument("--dataset", default=None, help="only this bundled dataset")
    p.set_defaults(func=_cmd_bootstrap)
    for name, func, text in (("import", _cmd_import, "validate a matrix, write data/NAME/, `dvc add data`, list NAME in datasets"),
                             ("validate", _cmd_validate, "validate a matrix, write nothing")):
        p = data_sub.add_parser(name, parents=[common], help=text)
        _add_matrix_arguments(p, importing=name == "import")
        p.set_defaults(func=func)
    p = data_sub.add_parser("synth", help="write a synthetic matrix with known low-rank gene-gene structure")
    p.add_argument("out", help="output file; its extension picks the format (.csv, .tsv, .parquet, .h5ad, .gct)")
    p.add_argument("--samples", type=int, required=True)
    p.add_argument("--genes", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rank", type=int, default=5, help="rank of the gene-gene structure")
    p.add_argument("--noise", type=float, default=0.1, help="noise standard deviation relative to signal")
    p.set_defaults(func=_cmd_synth)


def _add_matrix_arguments(p: argparse.ArgumentParser, importing: bool) -> None:
    """The options of `data import` (`importing`) and `data validate`: how to read a user's matrix."""
    p.add_argument("path")
    if importing:
        p.add_argument("--name", required=True, help="dataset name: data/NAME/, datasets.NAME in params.yaml")
    p.add_argument("--format", choices=["csv", "tsv", "parquet", "h5ad", "gct", "geo", "10x"], default=None,
                   help="file format (default: from the extension; a directory is 10x, a .txt starting "
                        "with !Series_ a GEO series matrix)")
    orientation = p.add_mutually_exclusive_group()
    orientation.add_argument("--transpose", dest="transpose", action="store_true", default=None,
                             help="the file has genes as rows and samples as columns (default: decided from "
                                  "the ids, or refused where they do not tell)")
    orientation.add_argument("--no-transpose", dest="transpose", action="store_false",
                             help="the file has samples as rows and genes as columns")
    index = p.add_mutually_exclusive_group()
    index.add_argument("--index-column", dest="index_column", action="store_true", default=None,
                       help="csv/tsv: the first column holds row ids (default: when it holds text)")
    index.add_argument("--no-index-column", dest="index_column", action="store_false",
                       help="csv/tsv: the first column is data; row ids are generated")
    if importing:
        p.add_argument("--force", action="store_true",
                       help="replace an existing dataset of that name (bundled or imported)")
    p.add_argument("--transform", choices=["none", "log1p"], default=None,
                   help="what the benchmark applies to the values (log1p for raw counts); default none, "
                        "or the dataset's current datasets.NAME.transform")


def _add_stage_commands(sub, common: argparse.ArgumentParser) -> None:
    """The DVC stages: prepare, tune, evaluate, run (tune + evaluate), compare, promote."""
    p = sub.add_parser("prepare", parents=[common], help="stage: held-out split, CV folds, task genes")
    p.add_argument("--dataset", default=None, help="only this dataset (default: every dataset in `datasets`)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("tune", parents=[common], help="stage: Optuna study for one architecture")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--trials", type=int, default=None, help="completed trials wanted (default: tuning.n_trials)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: tuning.storage)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser("evaluate", parents=[common], help="stage: CV and held-out evaluation, model logged to MLflow")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("run", parents=[common], help="stage: tune and evaluate one architecture on both tasks")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--tasks", choices=TASKS, nargs="+", default=None, help="default: both tasks")
    p.add_argument("--jobs", type=int, default=None,
                   help="tasks run side by side (default: as many as the cores give training.threads each)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("compare", parents=[common], help="stage: comparison tables, statistics, plots")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("promote", parents=[common], help="stage: register and gate the champion model")
    p.add_argument("--dataset", default=None, help="default: every dataset in `datasets`")
    p.add_argument("--task", choices=TASKS, default=None, help="default: both tasks")
    p.add_argument("--candidate", choices=(*ARCHS, "best"), default=None, help="default: promotion.candidate")
    p.add_argument("--force", action="store_true", help="move champion without the gate")
    p.add_argument("--rollback", action="store_true", help="restore the previous champion")
    p.set_defaults(func=_cmd_promote)


def _add_model_commands(sub, common: argparse.ArgumentParser) -> None:
    """Commands over a registered champion and the tracking store: serve-example, ui."""
    p = sub.add_parser("serve-example", parents=[common],
                       help="print a valid `mlflow models serve` request for a registered champion, from held-out rows")
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--task", choices=TASKS, default="multi", help="the model genebench-<dataset>-<task> (default: multi)")
    p.add_argument("--rows", type=_at_least_one, default=2, help="held-out samples in the request (default: 2)")
    p.set_defaults(func=_cmd_serve_example)

    p = sub.add_parser("ui", parents=[common], help="MLflow UI on 127.0.0.1 over the project's tracking store")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=_at_least_one, default=1,
                   help="server worker processes (default 1: one user on loopback)")
    p.set_defaults(func=_cmd_ui)


# MLflow warns about `predict` without type hints each time the pyfunc's class is defined
# (logging and loading the model); its signature is the pyfunc's contract.
_NOISE = re.compile(r"Add type hints to the `predict` method")


def _quiet_libraries() -> None:
    """Library chatter a user need not see, silenced before anything imports the libraries
    (`benchmark.verbosity`; `--verbose` or `GENEBENCH_LOG=debug` keeps all of it but the first).

    - MLflow's "Add type hints to the `predict` method" UserWarning. A filter alone does
      not hold: MLflow emits it under its own `simplefilter("once", UserWarning)`, which
      goes before ours, so the display hook (`warnings.showwarning`) drops it too.
    - TensorFlow's C++ log lines (`TF_CPP_MIN_LOG_LEVEL=3`, unless the user set it;
      spawned tune workers inherit it). TensorFlow 2.21 still prints "All log messages
      before absl::InitializeLog() is called are written to STDERR" and a few start-up
      lines: absl writes them while its libraries load, whatever the setting
      (`benchmark.models.tensorflow_setup.import_keras` filters those).
    - MLflow's "Downloading artifacts" progress bars and per-run "View run" links.
    """
    from benchmark.verbosity import quiet_environment

    quiet_environment()
    warnings.filterwarnings("ignore", message=".*" + _NOISE.pattern)
    show = warnings.showwarning
    if getattr(show, "_genebench_quiet", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not _NOISE.search(str(message)):
            show(message, category, filename, lineno, file, line)

    showwarning._genebench_quiet = True
    warnings.showwarning = showwarning


def main(argv: list[str] | None = None) -> int:
    from benchmark.verbosity import set_verbose

    # Read before parsing: the environment must be set before any library is imported.
    if "--verbose" in (sys.argv[1:] if argv is None else argv):
        set_verbose()
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    for flag in ("trials", "workers", "jobs", "samples", "genes"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            print(f"genebench: error: --{flag} must be at least 1, got {value}", file=sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"genebench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("genebench: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry (`genebench`, `python -m benchmark`): `main`, then a quick exit.

    Tearing the interpreter down once TensorFlow, MLflow and scikit-learn are loaded takes
    about 1.6 s on a 2-core machine (scripts/bench_overheads.py), and one `dvc repro`
    starts 36 genebench processes. So once `main` has returned, the exit handlers
    (`atexit`: MLflow's, multiprocessing's, logging's) run and the streams are flushed as
    at a normal exit, and the process then ends without the module teardown. An exception escaping `main`
    (an internal error) exits the usual way, with its traceback.
    """
    from benchmark.worker import delegate

    code = delegate(sys.argv[1:])
    if code is not None:  # the stage ran in a warm worker (benchmark.worker)
        sys.exit(code)
    exit_without_teardown(main())


def exit_without_teardown(code: int) -> None:
    """The exit handlers and the streams' flush of a normal exit, then `os._exit(code)`."""
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
