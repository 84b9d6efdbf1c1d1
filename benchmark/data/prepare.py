"""The prepare stage: held-out split, CV folds, and the genes of each task, per dataset.

Outputs under `artifacts/prepared/<dataset>/` (sorted-key JSON, byte-identical on rerun):

- `split.json`: `test` and `dev` sample indices (rows of `data/<dataset>/expression.npy`),
  `folds` (validation indices over `dev`: first the `tuning.folds` folds tuning
  validates on, `tuning_folds`, then the `split.repeats` x (`split.folds` -
  `tuning.folds`) scored folds, `scored_folds`, with their repeat in `scored_repeats`;
  see `cv_folds`). No sample that tuning validated on is ever scored.
- `<task>.json` for `single` and `multi`: `targets`, `features` (every other variable
  gene: the baselines' inputs) and `deep_features` (the `features.max_genes` most variable
  of them, or all: the deep models' inputs), gene ids chosen by variance on development
  samples only.
- `summary.json`: sizes, seeds, transform and the data version.

`load_task` turns them back into arrays for tuning and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold, RepeatedKFold, train_test_split

from benchmark import TASKS
from benchmark.config import Config
from benchmark.data.canonical import dvc_tree_md5, load_dataset
from benchmark.data.rows import RowView, rows_per_block
from benchmark.data.matrix_blocks import ColumnMoments
from benchmark.data.validation import apply_transform, check_dataset
from benchmark.errors import UserError
from benchmark.outputs import atomic_dir, dumps_json

from benchmark.paths import prepared_dir


def data_version(config: Config) -> str:
    """The dataset's version: the md5 DVC gives its directory `data/<dataset>/`.

    Per dataset, so that adding or re-importing one dataset leaves the others' studies,
    evaluations and champions current. Files are hashed in chunks (memory stays flat).
    """
    return dvc_tree_md5(config.data_dir).removesuffix(".dir")


def dev_variance(X, dev: np.ndarray, transform: str) -> np.ndarray:
    """Per-gene variance (float64, ddof 0) of the transformed development rows `dev` of `X`.

    One pass over those rows in blocks of about 128 MiB of float64, so a memory-mapped
    matrix of any size is never loaded; a matrix whose development rows fit in one block
    (every bundled dataset) gets exactly `np.var(X_dev.astype(np.float64), axis=0)`.
    """
    view = RowView(X, np.asarray(dev, dtype=np.int64), transform=transform)
    moments = ColumnMoments(X.shape[1])
    for _, block in view.blocks(rows_per_block(X.shape[1], 1 << 26)):  # 64 MiB of float32 rows
        moments.update(block)
    return moments.variance


def choose_genes(variance: np.ndarray, n_dev: int, genes: list[str], config: Config) -> dict[str, dict]:
    """Targets and features of each task from development samples only.

    `variance`: (n_genes,), the variance of each gene's transformed values over the
    `n_dev` development samples (`dev_variance`); genes rank by it, decreasing, ties in
    matrix order. `genes`: the n_genes ids. Validation counted variable genes over all samples, but a gene that
    varies only through held-out samples is constant here: when fewer than
    `task.top_k` + 1 genes vary on the development samples (or `task.single_gene` does not
    vary there), the task cannot get its targets and a feature, so this is a `UserError`
    rather than a task with fewer targets than `task.top_k` says.
    """
    order = np.argsort(-variance, kind="stable")
    variable = [int(g) for g in order if variance[g] > 0]
    top_k = config.params.task.top_k
    single = config.params.task.single_gene
    where = f"{config.path.name}: dataset {config.dataset!r}"
    if len(variable) < top_k + 1:
        raise UserError(
            f"{where}: only {len(variable)} of {len(genes)} genes vary across the {n_dev} development samples "
            f"(the held-out split removed the rest of their variation); task.top_k={top_k} needs at least "
            f"{top_k + 1} (targets plus one feature): lower task.top_k or change split.seed"
        )
    if single is not None and variance[genes.index(single)] <= 0:
        raise UserError(f"{where}: task.single_gene {single!r} is constant across the {n_dev} development "
                        "samples, so it cannot be a target; choose another gene or leave task.single_gene empty")
    targets = {
        "single": [genes.index(single)] if single is not None else variable[:1],
        "multi": variable[:top_k],
    }
    max_genes = config.params.features.max_genes
    tasks = {}
    for task in TASKS:
        # Every variable gene but the targets, most variable first: the baselines read all
        # of them; `features.max_genes` budgets only the deep models (their cost grows with it).
        features = [g for g in variable if g not in set(targets[task])]
        deep = features[:max_genes] if max_genes is not None else features
        tasks[task] = {
            "task": task,
            "targets": [genes[g] for g in targets[task]],
            "features": [genes[g] for g in sorted(features)],
            "deep_features": [genes[g] for g in sorted(deep)],
        }
    return tasks


def cv_folds(dev: np.ndarray, split, n_tuning: int) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """`(tuning, scored, repeats)`: validation sample indices of the folds over `dev`.

    Tuning validates on the first `n_tuning` folds of a seeded `split.folds`-fold split of
    the development samples. The other development samples are scored: `split.repeats`
    times (each repeat its own seeded shuffle, sklearn's `RepeatedKFold`) split into
    `split.folds - n_tuning` folds, so a scored fold is as large as a tuning fold and never
    holds a sample tuning validated on; its training part is every other development sample
    (tuning's included). `repeats[i]` is the repeat of `scored[i]`.
    """
    kfold = KFold(n_splits=split.folds, shuffle=True, random_state=split.seed)
    partition = [np.sort(dev[val]) for _, val in kfold.split(dev)]
    tuning = [[int(i) for i in fold] for fold in partition[:n_tuning]]
    pool = np.sort(np.concatenate(partition[n_tuning:]))
    per_repeat = split.folds - n_tuning
    splitter = RepeatedKFold(n_splits=per_repeat, n_repeats=split.repeats, random_state=split.seed)
    scored = [[int(i) for i in np.sort(pool[val])] for _, val in splitter.split(pool)]
    return tuning, scored, [i // per_repeat for i in range(len(scored))]


def prepare(config: Config) -> Path:
    ds = load_dataset(config.data_dir)
    source = str(config.data_dir.relative_to(config.root)) if config.data_dir.is_relative_to(config.root) else str(config.data_dir)
    check_dataset(ds, config, source)  # one pass in blocks
    split = config.params.split
    n = ds.X.shape[0]
    dev, test = train_test_split(np.arange(n), test_size=split.test_size, random_state=split.seed, shuffle=True)
    dev, test = np.sort(dev), np.sort(test)
    tuning_folds, scored_folds, repeats = cv_folds(dev, split, config.params.tuning.folds)
    tasks = choose_genes(dev_variance(ds.X, dev, config.transform), len(dev), ds.genes, config)
    summary = {
        "data_version": data_version(config),
        "dataset": config.dataset,
        "transform": config.transform,
        "tuning_folds": config.params.tuning.folds,
        "n_samples": int(n),
        "n_genes": int(ds.X.shape[1]),
        "n_dev": int(len(dev)),
        "n_test": int(len(test)),
        "folds": split.folds,
        "repeats": split.repeats,
        "seed": split.seed,
        "test_size": split.test_size,
        "tasks": {t: {"n_targets": len(v["targets"]), "n_features": len(v["features"]),
                      "n_deep_features": len(v["deep_features"])} for t, v in tasks.items()},
    }
    out = prepared_dir(config)
    folds = tuning_folds + scored_folds
    with atomic_dir(out) as tmp:
        (tmp / "split.json").write_text(dumps_json({
            "dev": [int(i) for i in dev], "test": [int(i) for i in test], "folds": folds,
            "tuning_folds": list(range(len(tuning_folds))),
            "scored_folds": list(range(len(tuning_folds), len(folds))), "scored_repeats": repeats,
        }))
        for task, spec in tasks.items():
            (tmp / f"{task}.json").write_text(dumps_json(spec))
        (tmp / "summary.json").write_text(dumps_json(summary))
    return out


@dataclass(frozen=True)
class TaskData:
    """A task's arrays. Rows are samples; `X_*` (n, n_features), `Y_*` (n, n_targets), float32.

    `X_dev` and `X_test` are `RowView`s of the memory-mapped matrix (read in blocks on
    demand) when the task's feature matrix is larger than `data.stream_above_mb`, arrays
    otherwise; targets are always arrays (n x n_targets is small).

    `folds` holds (train, validation) row positions into `X_dev`/`Y_dev`, for every fold;
    `tuning_folds` are the indices of the folds tuning validates on and `scored_folds`
    those the reported CV scores (disjoint). `X_test`/`Y_test` are None unless loaded
    with `held_out=True`.
    """

    dataset: str
    task: str
    feature_genes: list[str]
    target_genes: list[str]
    X_dev: np.ndarray | RowView
    Y_dev: np.ndarray
    dev_samples: list[str]
    folds: list[tuple[np.ndarray, np.ndarray]]
    tuning_folds: list[int]
    scored_folds: list[int]
    scored_repeats: list[int]  # the repeat of each scored fold (split.repeats)
    X_test: np.ndarray | RowView | None
    Y_test: np.ndarray | None
    test_samples: list[str] | None
    data_version: str
    transform: str


def _read_json(path: Path) -> dict:
    import json

    if not path.exists():
        raise UserError(f"{path}: not found; run `genebench prepare --dataset {path.parent.name}` first")
    return json.loads(path.read_text())


def load_task(config: Config, task: str, held_out: bool = False, arch: str | None = None) -> TaskData:
    """Arrays of one task; the held-out rows are read only when `held_out` is True.

    Features: a deep `arch`'s are the prepared `deep_features` (`features.max_genes`), any
    other's (a baseline, or None) every prepared feature."""
    from benchmark import DEEP_ARCHS

    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    prepared = prepared_dir(config)
    split = _read_json(prepared / "split.json")
    spec = _read_json(prepared / f"{task}.json")
    summary = _read_json(prepared / "summary.json")
    ds = load_dataset(config.data_dir)
    col = {g: i for i, g in enumerate(ds.genes)}
    features = spec.get("deep_features", spec["features"]) if arch in DEEP_ARCHS else spec["features"]
    missing = [g for g in features + spec["targets"] if g not in col]
    if missing:
        raise UserError(f"{config.data_dir}: gene {missing[0]!r} of the prepared task is not in the data; "
                        f"rerun `genebench prepare --dataset {config.dataset}`")
    feat = np.array([col[g] for g in features], dtype=np.int64)
    targ = np.array([col[g] for g in spec["targets"]], dtype=np.int64)

    transform = summary["transform"]
    n_rows = len(split["dev"]) + (len(split["test"]) if held_out else 0)
    streamed = n_rows * len(feat) * 4 > config.params.data.stream_above_mb * 2**20

    def rows(idx: list[int]):
        """(features, targets) of rows `idx`: the features as a `RowView` when streamed."""
        idx = np.asarray(idx, dtype=np.int64)
        if streamed:  # targets are small (n x top_k): read in blocks; features stay on disk
            return RowView(ds.X, idx, feat, transform), RowView(ds.X, idx, targ, transform).read()
        block = apply_transform(np.asarray(ds.X[idx]), transform)
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
    if "scored_folds" not in split:
        raise UserError(f"{prepared / 'split.json'}: written by an older genebench (no scored_folds); "
                        f"rerun `genebench prepare --dataset {config.dataset}`")
    return TaskData(
        dataset=config.dataset,
        task=task,
        feature_genes=list(features),
        target_genes=list(spec["targets"]),
        X_dev=X_dev,
        Y_dev=Y_dev,
        dev_samples=[ds.samples[i] for i in dev],
        folds=folds,
        tuning_folds=list(split["tuning_folds"]),
        scored_folds=list(split["scored_folds"]),
        scored_repeats=list(split.get("scored_repeats", [0] * len(split["scored_folds"]))),
        X_test=X_test,
        Y_test=Y_test,
        test_samples=test_samples,
        data_version=summary["data_version"],
        transform=transform,
    )
