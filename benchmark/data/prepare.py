"""The prepare stage: held-out split, CV folds, and the genes of each task.

Outputs under `artifacts/prepared/` (sorted-key JSON, byte-identical on rerun):

- `split.json`: `test` and `dev` sample indices (rows of `data/expression.npy`) and
  `folds`, the validation indices of each of the K folds over `dev`.
- `<task>.json` for `single` and `multi`: `targets` and `features` (gene ids), chosen by
  variance on development samples only.
- `summary.json`: sizes, seeds, transform and the data version.

`load_task` turns them back into arrays for tuning and evaluation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from sklearn.model_selection import KFold, train_test_split

from benchmark import TASKS
from benchmark.config import Config
from benchmark.data.canonical import FILES, load_dataset
from benchmark.data.validation import apply_transform, check_dataset
from benchmark.errors import UserError
from benchmark.outputs import atomic_dir, dumps_json

from benchmark.paths import PREPARED as PREPARED_DIR


def data_version(config: Config) -> str:
    """The md5 DVC records for data/ in data.dvc; else a hash of the canonical files."""
    pointer = config.data_dir.with_name(config.data_dir.name + ".dvc")  # what `dvc add <data.dir>` writes
    if pointer.exists():
        outs = (yaml.safe_load(pointer.read_text()) or {}).get("outs") or []
        if outs and outs[0].get("md5"):
            return str(outs[0]["md5"]).removesuffix(".dir")
    digest = hashlib.md5()
    for name in FILES:
        path = config.data_dir / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _rank_by_variance(X_dev: np.ndarray) -> np.ndarray:
    """Gene positions by decreasing development variance; ties keep matrix order."""
    variance = np.var(X_dev.astype(np.float64), axis=0)
    return np.argsort(-variance, kind="stable"), variance


def choose_genes(X_dev: np.ndarray, genes: list[str], config: Config) -> dict[str, dict]:
    """Targets and features of each task from development samples only."""
    order, variance = _rank_by_variance(X_dev)
    variable = [int(g) for g in order if variance[g] > 0]
    top_k = config.params.task.top_k
    single = config.params.task.single_gene
    targets = {
        "single": [genes.index(single)] if single is not None else variable[:1],
        "multi": variable[:top_k],
    }
    max_genes = config.params.features.max_genes
    tasks = {}
    for task in TASKS:
        features = [g for g in variable if g not in set(targets[task])]
        if max_genes is not None:
            features = features[:max_genes]
        tasks[task] = {
            "task": task,
            "targets": [genes[g] for g in targets[task]],
            "features": [genes[g] for g in sorted(features)],
        }
    return tasks


def prepare(config: Config) -> Path:
    ds = load_dataset(config.data_dir)
    source = str(config.data_dir.relative_to(config.root)) if config.data_dir.is_relative_to(config.root) else str(config.data_dir)
    check_dataset(ds, config, source)
    X = apply_transform(ds.X, config.params.data.transform)
    split = config.params.split
    n = X.shape[0]
    dev, test = train_test_split(np.arange(n), test_size=split.test_size, random_state=split.seed, shuffle=True)
    dev, test = np.sort(dev), np.sort(test)
    kfold = KFold(n_splits=split.folds, shuffle=True, random_state=split.seed)
    folds = [sorted(int(i) for i in dev[val]) for _, val in kfold.split(dev)]
    tasks = choose_genes(X[dev], ds.genes, config)
    summary = {
        "data_version": data_version(config),
        "transform": config.params.data.transform,
        "n_samples": int(n),
        "n_genes": int(X.shape[1]),
        "n_dev": int(len(dev)),
        "n_test": int(len(test)),
        "folds": split.folds,
        "seed": split.seed,
        "test_size": split.test_size,
        "tasks": {t: {"n_targets": len(v["targets"]), "n_features": len(v["features"])} for t, v in tasks.items()},
    }
    out = config.resolve(PREPARED_DIR)
    with atomic_dir(out) as tmp:
        (tmp / "split.json").write_text(dumps_json({
            "dev": [int(i) for i in dev], "test": [int(i) for i in test], "folds": folds,
        }))
        for task, spec in tasks.items():
            (tmp / f"{task}.json").write_text(dumps_json(spec))
        (tmp / "summary.json").write_text(dumps_json(summary))
    return out


@dataclass(frozen=True)
class TaskData:
    """A task's arrays. Rows are samples; `X_*` (n, n_features), `Y_*` (n, n_targets), float32.

    `folds` holds (train, validation) row positions into `X_dev`/`Y_dev`.
    `X_test`/`Y_test` are None unless loaded with `held_out=True`.
    """

    task: str
    feature_genes: list[str]
    target_genes: list[str]
    X_dev: np.ndarray
    Y_dev: np.ndarray
    dev_samples: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]]
    X_test: np.ndarray | None
    Y_test: np.ndarray | None
    test_samples: list[str] | None
    data_version: str
    transform: str


def _read_json(path: Path) -> dict:
    import json

    if not path.exists():
        raise UserError(f"{path}: not found; run `genebench prepare` first")
    return json.loads(path.read_text())


def load_task(config: Config, task: str, held_out: bool = False) -> TaskData:
    """Arrays of one task; the held-out rows are read only when `held_out` is True."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    prepared = config.resolve(PREPARED_DIR)
    split = _read_json(prepared / "split.json")
    spec = _read_json(prepared / f"{task}.json")
    summary = _read_json(prepared / "summary.json")
    ds = load_dataset(config.data_dir)
    col = {g: i for i, g in enumerate(ds.genes)}
    missing = [g for g in spec["features"] + spec["targets"] if g not in col]
    if missing:
        raise UserError(f"{config.data_dir}: gene {missing[0]!r} of the prepared task is not in the data; rerun `genebench prepare`")
    feat = np.array([col[g] for g in spec["features"]], dtype=np.int64)
    targ = np.array([col[g] for g in spec["targets"]], dtype=np.int64)

    def rows(idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        block = apply_transform(np.asarray(ds.X[np.asarray(idx, dtype=np.int64)]), summary["transform"])
        return np.ascontiguousarray(block[:, feat]), np.ascontiguousarray(block[:, targ])

    dev = split["dev"]
    position = {s: p for p, s in enumerate(dev)}
    folds = []
    for val in split["folds"]:
        val_pos = np.array([position[i] for i in val], dtype=np.int64)
        train_pos = np.setdiff1d(np.arange(len(dev)), val_pos)
        folds.append((train_pos, val_pos))
    X_dev, Y_dev = rows(dev)
    X_test = Y_test = test_samples = None
    if held_out:
        X_test, Y_test = rows(split["test"])
        test_samples = [ds.samples[i] for i in split["test"]]
    return TaskData(
        task=task,
        feature_genes=list(spec["features"]),
        target_genes=list(spec["targets"]),
        X_dev=X_dev,
        Y_dev=Y_dev,
        dev_samples=[ds.samples[i] for i in dev],
        folds=folds,
        X_test=X_test,
        Y_test=Y_test,
        test_samples=test_samples,
        data_version=summary["data_version"],
        transform=summary["transform"],
    )
