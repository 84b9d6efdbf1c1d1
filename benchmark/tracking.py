"""MLflow tracking: store, experiments, run tags and the logged pyfunc model.

The tracking URI comes from `Config.tracking_uri` (`MLFLOW_TRACKING_URI`, else
`mlflow.tracking_uri`, default `sqlite:///<root>/mlflow.db`). With a local store the
experiments keep their artifacts under `<root>/mlruns/`, so runs and models resolve to
the project root whatever the working directory; a remote tracking server keeps its own
artifact store.

The model is logged in MLflow's models-from-code form: the code is
`benchmark/pyfunc_model.py` and the fitted state is plain files (`Regressor.save`: JSON,
`.npz` without pickle, `.keras`), so the logged model holds no pickle. The model takes
the raw values of `data/` (before `datasets.<name>.transform`) as a DataFrame whose columns are the
feature gene ids and returns a DataFrame whose columns are the target gene ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.types import ColSpec, Schema

from benchmark import stores
from benchmark.config import Config
from benchmark.data.canonical import load_dataset
from benchmark.data.prepare import TaskData
from benchmark.data.rows import RowView
from benchmark.paths import prepared_dir

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIR = Path(__file__).parent
MODEL_NAME = "model"  # the logged model's name inside each evaluation run
MODEL_IO_FILE = "model_io.json"
INPUT_EXAMPLE_ROWS = 5
# training.* keys every run kind (study, trial, evaluation) logs as `training.<key>`, so the
# MLflow UI's compare view lines them up.
TRAINING_PARAMS = ("max_epochs", "batch_size", "learning_rate", "patience", "validation_fraction", "seed",
                   "base", "ensemble", "threads")

# What the pyfunc needs besides the `benchmark` package (shipped as code_paths); pinned to
# the versions that logged it. TensorFlow/Keras only for the deep models.
_BASE_REQUIREMENTS = ("mlflow", "numpy", "pandas", "scikit-learn", "scipy", "pydantic", "pyyaml")
_DEEP_REQUIREMENTS = ("tensorflow", "keras")


_OPENED: set[str] = set()  # tracking URIs this process has checked and initialised


def configure(config: Config) -> str:
    """Point MLflow (tracking and registry) at the project's store; returns the URI.

    On first use in a process the store is checked (one line, exit 2, within seconds when
    it cannot be reached) and its tables are created under `stores.schema_lock`.
    """
    uri = config.tracking_uri
    user_override = os.environ.get("MLFLOW_TRACKING_URI")
    from benchmark.verbosity import verbose

    # MLflow sets INFO on import; --verbose (GENEBENCH_LOG=debug) keeps it.
    logging.getLogger("mlflow").setLevel(logging.INFO if verbose() else logging.WARNING)
    if uri not in _OPENED:
        flag = "MLFLOW_TRACKING_URI" if user_override else "mlflow.tracking_uri"
        stores.check_tracking_store(uri, flag)
        if stores.is_database(uri):
            with stores.schema_lock(uri, flag):
                mlflow.MlflowClient(uri).search_experiments(max_results=1)
        _OPENED.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI; genebench reads that variable as
    # the user's override, so a later Config in this process must not mistake ours for it.
    if user_override is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_override
    return uri


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def experiment_name(config: Config, task: str) -> str:
    """`<mlflow.experiment>-<dataset>-<task>`: one experiment per (dataset, task)."""
    return f"{config.params.mlflow.experiment}-{config.dataset}-{task}"


NOTE_TAG = "mlflow.note.content"  # the experiment's description in the MLflow UI
LEADERBOARD_SUFFIX = "leaderboard"  # `<mlflow.experiment>-leaderboard`: compare's summary run


def experiment_description(config: Config, task: str) -> str:
    """One line on what the (dataset, task) experiment holds (set once: no values that params change)."""
    what = ("the task.top_k most variable genes" if task == "multi"
            else "one gene (task.single_gene, else the most variable)")
    return (f"genebench on dataset {config.dataset}, task {task}: predict {what} from the others. "
            f"Per architecture one Optuna study run (its trials as child runs) and one evaluate run "
            f"(cv_* and test_* metrics, per-fold metrics, the logged pyfunc model).")


def leaderboard_description(config: Config) -> str:
    """One line on what the leaderboard experiment holds."""
    return ("genebench compare runs: one per `genebench compare` (dvc repro), holding the leaderboard "
            "across datasets, tasks and architectures as a table, the report, summary and figures, "
            "and a few headline metrics.")


def experiment_id(config: Config, task: str) -> str:
    """Id of the (dataset, task) experiment `<mlflow.experiment>-<dataset>-<task>`, created on first use."""
    return named_experiment_id(config, experiment_name(config, task), experiment_description(config, task))


def named_experiment_id(config: Config, name: str, description: str | None = None) -> str:
    """Id of the experiment `name`, created on first use.

    A local store gets `<root>/mlruns` (a file URI) as artifact location; an experiment
    deleted in the UI is restored rather than shadowing the name. `description` (one
    line; default: the leaderboard's for `<mlflow.experiment>-leaderboard`, else a
    generic one) becomes the experiment's `mlflow.note.content`, the description the
    MLflow UI shows; an experiment without one (created by an older version) gets it too,
    while a description someone wrote in the UI is kept.
    """
    if description is None:
        if name == f"{config.params.mlflow.experiment}-{LEADERBOARD_SUFFIX}":
            description = leaderboard_description(config)
        else:
            description = f"genebench runs ({name})."
    client = mlflow.MlflowClient(config.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if _is_local_store(config.tracking_uri):
            location = (config.root / "mlruns").resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags={NOTE_TAG: description})
        except MlflowException as exc:  # another process created it first
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" and "already exists" not in str(exc):
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    if not experiment.tags.get(NOTE_TAG):
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, description)
    return experiment.experiment_id


def git_commit(root: Path) -> str:
    """HEAD of the project's git checkout (40 hex digits), or `unknown` outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty(root: Path) -> str:
    """`true` when tracked files differ from HEAD (e.g. params.yaml under `dvc exp run`), else `false`."""
    try:
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                 capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "true" if changes else "false"


def targets_digest(genes: list[str]) -> str:
    """Short fingerprint of a target gene list (order matters), for like-with-like checks."""
    return hashlib.md5("\n".join(genes).encode("utf-8")).hexdigest()


def folds_digest(data: TaskData) -> str:
    """Fingerprint of the scored CV folds (their validation samples, in order): two runs
    with the same one were scored on the same resamples, so their fold scores pair up."""
    folds = [[data.dev_samples[i] for i in data.folds[fold][1]] for fold in data.scored_folds]
    return hashlib.md5(json.dumps(folds).encode("utf-8")).hexdigest()


def standard_tags(config: Config, task: str, arch: str, data: TaskData) -> dict[str, str]:
    """Tags every evaluation run carries (and registry versions copy)."""
    return {
        "dataset": data.dataset,
        "task": task,
        "arch": arch,
        "data_version": data.data_version,
        "git_commit": git_commit(config.root),
        "git_dirty": git_dirty(config.root),
        "transform": data.transform,
        "targets_md5": targets_digest(data.target_genes),
        "folds_md5": folds_digest(data),
        "n_targets": str(len(data.target_genes)),
        "n_features": str(len(data.feature_genes)),
    }


def raw_features(config: Config, data: TaskData, part: str, limit: int | None = None) -> pd.DataFrame:
    """The raw `data/` values (before `datasets.<name>.transform`) of the task's feature genes.

    `part`: "test" (held-out rows) or "dev"; rows in prepared order, indexed by sample id;
    `limit`: the first that many rows only (an input example of a large dataset).
    This is what the logged model takes as input.
    """
    return raw_frame(config, part, genes=data.feature_genes, limit=limit)


def raw_frame(config: Config, part: str, genes: list[str] | None = None, limit: int | None = None) -> pd.DataFrame:
    """Raw `data/` values of the prepared `part` ("test" or "dev") rows (the first `limit`);
    all genes by default."""
    return pd.concat(raw_frames(config, part, genes=genes, limit=limit))


def raw_frames(config: Config, part: str, genes: list[str] | None = None,
               limit: int | None = None) -> Iterator[pd.DataFrame]:
    """`raw_frame` a block of rows at a time (`benchmark.data.rows`: about 32 MiB of matrix rows
    each), in prepared order: float64 frames indexed by sample id, one column per gene."""
    split = json.loads((prepared_dir(config) / "split.json").read_text())
    ds = load_dataset(config.data_dir)
    genes = list(ds.genes) if genes is None else list(genes)
    col = {g: i for i, g in enumerate(ds.genes)}
    rows = np.asarray(split[part], dtype=np.int64)[:limit]
    view = RowView(ds.X, rows, np.asarray([col[g] for g in genes], dtype=np.int64))  # raw: no transform
    for start, block in view.blocks():
        samples = [ds.samples[i] for i in rows[start:start + len(block)]]
        yield pd.DataFrame(block.astype(np.float64), columns=genes, index=samples)


def _requirements(deep: bool) -> list[str]:
    pins = []
    for package in _BASE_REQUIREMENTS + (_DEEP_REQUIREMENTS if deep else ()):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


def log_model(regressor: Any, data: TaskData, input_example: pd.DataFrame, deep: bool,
              name: str = MODEL_NAME, tags: dict[str, str] | None = None):
    """Log `regressor` (fitted on `data`) as a models-from-code pyfunc in the active run.

    `input_example`: a few rows of raw feature values (`raw_features`). The pyfunc
    carries `model_io.json` (feature genes, target genes, `datasets.<name>.transform`) next to the
    regressor's saved files, and the `benchmark` package as code, so it loads wherever
    its pinned requirements are installed. Returns MLflow's `ModelInfo`.
    """
    with tempfile.TemporaryDirectory(prefix="genebench-model-") as tmp:
        tmp = Path(tmp)
        regressor.save(tmp / "regressor")
        io_file = tmp / MODEL_IO_FILE
        io_file.write_text(json.dumps({
            "feature_genes": list(data.feature_genes),
            "target_genes": list(data.target_genes),
            "transform": data.transform,
            "dataset": data.dataset,
            "task": data.task,
            "data_version": data.data_version,
        }, sort_keys=True, indent=2) + "\n")
        # The package ships with the model (no bytecode), so a fresh environment needs no
        # genebench install; MLflow puts it on sys.path before running pyfunc_model.py.
        code = tmp / "code" / "benchmark"
        shutil.copytree(PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        predicted = regressor.predict(_transform(input_example.to_numpy(np.float32), data.transform))
        signature = infer_signature(
            input_example.astype(np.float64),
            pd.DataFrame(np.asarray(predicted, dtype=np.float64), columns=list(data.target_genes)),
        )
        # Input genes are marked optional so that MLflow's schema check lets a request with
        # missing genes through to the model, which rejects it with a one-line message
        # naming the genes (MLflow's own message prints the whole frame and schema).
        signature.inputs = Schema([ColSpec(c.type, c.name, required=False) for c in signature.inputs.inputs])
        with warnings.catch_warnings():
            # MLflow suggests type hints on predict; the explicit signature above is the contract.
            warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method")
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(PYFUNC_CODE),
                artifacts={"regressor": str(tmp / "regressor"), "model_io": str(io_file)},
                code_paths=[str(code)],
                signature=signature,
                input_example=input_example.astype(np.float64),
                pip_requirements=_requirements(deep),
                tags=tags,
            )


def _transform(X: np.ndarray, transform: str) -> np.ndarray:
    from benchmark.data.validation import apply_transform

    return apply_transform(X, transform)
