"""The evaluate stage's outputs, read back for the comparison (files only, no TensorFlow).

For each dataset, task and architecture (paths from a config bound to the dataset):
`metrics/<dataset>/<task>/<arch>.json` (the DESIGN.md schema, with `cv` also carrying
`rmse_scaled`/`mae_scaled`) and `artifacts/evaluation/<dataset>/<task>/<arch>/`:
`folds.csv` (one row per scored CV resample: `fold`, a global id unique across repeats that
need not start at 0, `repeat` (0 where absent: files from before repeated CV), `n_train`,
`n_val`, metric columns, and for a deep model with a base the same fold scored by its base
alone, `base_<metric>`), `test_per_gene.csv` (gene, r2, rmse, and `base_r2`, `base_rmse`
with a base), `test_predictions.csv` (sample, gene, observed, predicted, and
`base_predicted` with a base), `run.json` (`data_version`),
and for attention models `attention.csv` (per token) and, where tokens are single genes,
`gene_importance.csv`. Inputs are checked once here; a malformed or inconsistent file
raises `UserError` naming the file and the offending key or column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from benchmark import ARCHS, BASELINE_ARCHS
from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.paths import evaluation_dir, metrics_file

METRICS = ("rmse", "mae", "mse", "r2", "pearson")
SCALED = ("rmse_scaled", "mae_scaled")
FOLD_COLUMNS = ("fold",) + METRICS + SCALED
FOLD_SIZES = ("n_train", "n_val")  # optional in folds.csv: the fold sizes the tests' correlation uses
BASE = "base_"  # prefix of the columns that score a deep model's own ridge base alone (the ablation)
BASE_METRICS = tuple(BASE + m for m in METRICS + SCALED)
FOLD_OPTIONAL = FOLD_SIZES + ("repeat",) + BASE_METRICS
PER_GENE_COLUMNS = ("gene", "r2", "rmse")
PER_GENE_BASE = ("base_r2", "base_rmse")
# Files every architecture's evaluation must leave; attention.csv is optional (attention archs only).
REQUIRED = ("folds.csv", "test_per_gene.csv", "test_predictions.csv")


def relative(config: Config, path: Path) -> str:
    """`path` relative to the project root when it lies under it (shorter, stable messages)."""
    try:
        return str(path.relative_to(config.root))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class ArchResult:
    """One architecture's evaluation on one task.

    `folds`: one row per scored CV resample, indexed by its global fold id: `repeat`
    (0 where folds.csv has none), metric columns, and where folds.csv records them
    `n_train`, `n_val` and the base's `base_<metric>` columns.
    `per_gene`: held-out per-gene `r2` and `rmse` (and `base_r2`, `base_rmse`), indexed by gene id.
    `attention`: per gene (attention x contribution) or per token, the mean over the held-out
    samples (`label`, `weight`), its per-sample `std` (NaN where not recorded) and the
    `uniform` level (1/genes or 1/steps); with a gene table also the tokens' mean attention
    range (`token_min`, `token_max`) and their uniform level (`token_uniform`, 1/steps).
    """

    arch: str
    metrics: dict
    folds: pd.DataFrame
    per_gene: pd.DataFrame
    predictions: Path
    run: dict
    attention: Optional[pd.DataFrame] = None  # label, weight: mean attention per token (attention models)
    attention_by_gene: bool = False  # tokens are single genes, labels are gene ids

    def cv(self, metric: str) -> tuple[Optional[float], Optional[float]]:
        """(mean, std) across folds; None where undefined (e.g. Pearson of a constant prediction)."""
        entry = self.metrics["cv"].get(metric)
        if entry is None:
            return None, None
        return entry.get("mean"), entry.get("std")

    def test(self, metric: str) -> Optional[float]:
        return self.metrics["test"].get(metric)

    @property
    def has_base(self) -> bool:
        """Whether the files score this model's base alone too (a deep model with `training.base`)."""
        return BASE + "rmse" in self.folds.columns


@dataclass(frozen=True)
class TaskResults:
    """Every architecture's results on one (dataset, task); `archs` is empty when none has any.

    The properties below describe the shared split and need at least one architecture.
    """

    dataset: str
    task: str
    archs: dict[str, ArchResult]
    missing: dict[str, str] = field(default_factory=dict)  # arch -> the first missing file

    @property
    def n_dev(self) -> int:
        return next(iter(self.archs.values())).metrics["n_dev"]

    @property
    def n_test(self) -> int:
        return next(iter(self.archs.values())).metrics["n_test"]

    @property
    def folds(self) -> list[int]:
        return sorted(next(iter(self.archs.values())).folds.index)

    @property
    def test_train_ratio(self) -> Optional[float]:
        """Mean over the scored folds of n_val / n_train, or None where folds.csv lacks the sizes."""
        folds = next(iter(self.archs.values())).folds
        if not all(c in folds.columns for c in FOLD_SIZES):
            return None
        return float((folds["n_val"] / folds["n_train"]).mean())

    @property
    def rho(self) -> Optional[float]:
        """rho of the correlated t-test: mean over the scored folds of n_val / (n_val + n_train);
        None where folds.csv lacks the sizes."""
        folds = next(iter(self.archs.values())).folds
        if not all(c in folds.columns for c in FOLD_SIZES):
            return None
        return float((folds["n_val"] / (folds["n_val"] + folds["n_train"])).mean())

    @property
    def repeats(self) -> int:
        """How many repeats of the K-fold split the scored resamples come from."""
        return int(next(iter(self.archs.values())).folds["repeat"].nunique())

    @property
    def genes(self) -> list[str]:
        return list(next(iter(self.archs.values())).per_gene.index)

    def best(self, among: tuple[str, ...] = ARCHS) -> Optional[str]:
        """The architecture with the lowest CV RMSE mean (ties: the earlier in `among`)."""
        present = [a for a in among if a in self.archs and self.archs[a].cv("rmse")[0] is not None]
        return min(present, key=lambda a: (self.archs[a].cv("rmse")[0], among.index(a)), default=None)

    @property
    def data_version(self) -> Optional[str]:
        """The data version every architecture was evaluated on (from run.json), if recorded."""
        return next((r.run["data_version"] for r in self.archs.values() if r.run.get("data_version")), None)

    @property
    def best_baseline(self) -> Optional[str]:
        return self.best(BASELINE_ARCHS)


def _number(source: str, value, key: str, nullable: bool) -> Optional[float]:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{source}: {key}: expected a number{' or null' if nullable else ''}, got {value!r}")
    return float(value)


def _check_metrics(source: str, data, dataset: str, task: str, arch: str) -> dict:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object")
    for key in ("task", "arch", "n_dev", "n_test", "cv", "test"):
        if key not in data:
            raise UserError(f"{source}: missing key {key!r}")
    if data.get("dataset", dataset) != dataset:
        raise UserError(f"{source}: holds dataset {data['dataset']!r}, expected {dataset!r}")
    if data["task"] != task or data["arch"] != arch:
        raise UserError(f"{source}: holds task {data['task']!r} / arch {data['arch']!r}, expected {task!r} / {arch!r}")
    for key in ("n_dev", "n_test"):
        if isinstance(data[key], bool) or not isinstance(data[key], int) or data[key] < 1:
            raise UserError(f"{source}: {key}: expected a positive integer, got {data[key]!r}")
    _check_scores(source, data, "")
    if "base" in data:  # a deep model's own base scored alone: the same shape as the model's scores
        if not isinstance(data["base"], dict) or any(k not in data["base"] for k in ("cv", "test")):
            raise UserError(f"{source}: base: expected {{\"cv\": {{...}}, \"test\": {{...}}}}")
        _check_scores(source, data["base"], "base.")
    return data


def _check_scores(source: str, data: dict, prefix: str) -> None:
    """Check `data["cv"]` ({metric: {"mean", "std"}}) and `data["test"]` ({metric: value});
    messages name the key as `<prefix>cv.<metric>`."""
    for section in ("cv", "test"):
        if not isinstance(data[section], dict):
            raise UserError(f"{source}: {prefix}{section}: expected an object")
    for metric in METRICS + SCALED:
        # Pearson r is undefined for a constant prediction (the mean baseline), R^2 for a
        # single sample: JSON null.
        nullable = metric in ("pearson", "r2")
        entry = data["cv"].get(metric)
        if entry is None and not nullable:
            raise UserError(f"{source}: missing key '{prefix}cv.{metric}'")
        if entry is not None:
            if not isinstance(entry, dict) or "mean" not in entry:
                raise UserError(f"{source}: {prefix}cv.{metric}: expected {{\"mean\": ..., \"std\": ...}}")
            _number(source, entry["mean"], f"{prefix}cv.{metric}.mean", nullable)
            _number(source, entry.get("std"), f"{prefix}cv.{metric}.std", nullable=True)
        if metric not in data["test"] and not nullable:
            raise UserError(f"{source}: missing key '{prefix}test.{metric}'")
        _number(source, data["test"].get(metric), f"{prefix}test.{metric}", nullable)


def _read_csv(config: Config, path: Path, columns: tuple[str, ...], index: str,
              optional: tuple[str, ...] = ()) -> pd.DataFrame:
    source = relative(config, path)
    try:
        frame = pd.read_csv(path, dtype={index: str} if index == "gene" else None, float_precision="round_trip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise UserError(f"{source}: missing column {absent[0]!r}")
    if frame.empty:
        raise UserError(f"{source}: no rows")
    if frame[index].duplicated().any():
        raise UserError(f"{source}: {index} {frame[index][frame[index].duplicated()].iloc[0]!r} appears twice")
    return frame.set_index(index)[list(columns[1:]) + [c for c in optional if c in frame.columns]]


def load_arch(config: Config, task: str, arch: str) -> ArchResult | str:
    """The architecture's results on `config.dataset`, or the path of the first file that is missing."""
    mfile = metrics_file(config, task, arch)
    edir = evaluation_dir(config, task, arch)
    for path in (mfile, *(edir / name for name in REQUIRED)):
        if not path.exists():
            return relative(config, path)
    source = relative(config, mfile)
    try:
        data = json.loads(mfile.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{source}: not valid JSON") from None
    metrics = _check_metrics(source, data, config.dataset, task, arch)
    folds = _read_folds(config, edir / "folds.csv")
    per_gene = _read_csv(config, edir / "test_per_gene.csv", PER_GENE_COLUMNS, "gene", optional=PER_GENE_BASE)
    if folds.columns.str.startswith(BASE).any() and "base_rmse" not in per_gene.columns:
        raise UserError(f"{relative(config, edir / 'test_per_gene.csv')}: missing column 'base_rmse' "
                        "(folds.csv scores the model's base)")
    for column in ("rmse", "base_rmse"):
        if column in per_gene.columns and (not pd.api.types.is_numeric_dtype(per_gene[column])
                                           or per_gene[column].isna().any()):
            raise UserError(f"{relative(config, edir / 'test_per_gene.csv')}: column {column!r}: "
                            "expected a number in every row")
    run: dict = {}
    if (edir / "run.json").exists():
        try:
            run = json.loads((edir / "run.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{relative(config, edir / 'run.json')}: not valid JSON") from None
    attention, by_gene = _load_attention(config, edir)
    return ArchResult(arch=arch, metrics=metrics, folds=folds, per_gene=per_gene,
                      predictions=edir / "test_predictions.csv", run=run if isinstance(run, dict) else {},
                      attention=attention, attention_by_gene=by_gene)


def _read_folds(config: Config, path: Path) -> pd.DataFrame:
    """folds.csv, checked: `fold` unique, `repeat` a count from 0 (0 where absent), sizes >= 1,
    `rmse` (and, once any `base_` column is there, `base_rmse`) a number in every row."""
    source = relative(config, path)
    folds = _read_csv(config, path, FOLD_COLUMNS, "fold", optional=FOLD_OPTIONAL)
    if "repeat" not in folds.columns:  # a file from before repeated CV: one repeat
        folds.insert(0, "repeat", 0)
    if folds.columns.str.startswith(BASE).any() and BASE + "rmse" not in folds.columns:
        raise UserError(f"{source}: missing column 'base_rmse' (the file has other base_ columns)")
    checked = ("repeat", "rmse") + tuple(c for c in FOLD_SIZES + (BASE + "rmse",) if c in folds.columns)
    for column in checked:
        values = folds[column]
        valid = pd.api.types.is_numeric_dtype(values) and not values.isna().any()
        counts = column in FOLD_SIZES + ("repeat",)
        if valid and counts:
            valid = bool((values == values.round()).all()) and bool((values >= (0 if column == "repeat" else 1)).all())
        if not valid:
            what = {"repeat": "a repeat number (0, 1, ...)"}.get(column, "a positive sample count" if counts
                                                                   else "a number")
            raise UserError(f"{source}: column {column!r}: expected {what} in every row")
    folds["repeat"] = folds["repeat"].astype("int64")
    return folds


def _token_label(row: dict) -> str:
    first, last = row.get("first_gene"), row.get("last_gene")
    named = row.get("genes")
    if (not isinstance(first, str) or not first) and isinstance(named, str) and named.strip():
        genes = named.split()  # evaluate's attention.csv: the token's genes, space-separated
        first, last = genes[0], genes[-1]
    if not isinstance(first, str) or not first:  # PCA components or unnamed tokens
        return f"token {row['token']}"
    if first == last:
        return first
    n = row.get("n_inputs")
    return f"{first}…{last} ({int(n)} genes)" if isinstance(n, (int, float)) and n == n else f"{first}…{last}"


def _load_attention(config: Config, edir: Path) -> tuple[Optional[pd.DataFrame], bool]:
    """(label, weight) per token from evaluate's attention tables, and whether tokens are genes.

    `gene_importance.csv` (gene, module, weight) exists unless the inputs are PCA components;
    else `attention.csv` (token, first_gene, last_gene, n_inputs, mean_weight).
    """
    importance, attention = edir / "gene_importance.csv", edir / "attention.csv"
    if importance.exists():
        raw = read_table(config, importance, ("gene", "weight"))
        table = pd.DataFrame({"label": raw["gene"], "weight": raw["weight"], "std": _column(raw, "std"),
                              "uniform": 1.0 / len(raw)})
        if "token_weight" in raw.columns and "module" in raw.columns:
            tokens = raw.groupby("module")["token_weight"].first()
            table["token_min"], table["token_max"] = float(tokens.min()), float(tokens.max())
            table["token_uniform"] = 1.0 / len(tokens)
        return table, True
    if attention.exists():
        raw = read_table(config, attention, ("token", "mean_weight"))
        labels = [_token_label(row) for row in raw.to_dict("records")]
        steps = int((raw["n_inputs"] > 0).sum()) if "n_inputs" in raw.columns else len(raw)
        return pd.DataFrame({"label": labels, "weight": raw["mean_weight"], "std": _column(raw, "std_weight"),
                             "uniform": 1.0 / max(steps, 1)}), False
    return None, False


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    """`raw[name]` as floats (the per-sample spread), NaN where the file has no such column."""
    return pd.to_numeric(raw[name], errors="coerce") if name in raw.columns else pd.Series(float("nan"), raw.index)


def read_table(config: Config, path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """An evaluation table with `columns`, the last of them numeric in every row (ids as text)."""
    source = relative(config, path)
    try:
        table = pd.read_csv(path, dtype={"gene": str, "target": str, "first_gene": str, "last_gene": str, "genes": str},
                            float_precision="round_trip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise UserError(f"{source}: missing column {absent[0]!r}")
    weight = columns[-1]
    if not pd.api.types.is_numeric_dtype(table[weight]) or table[weight].isna().any():
        raise UserError(f"{source}: column {weight!r}: expected a number in every row")
    return table


def _check_consistent(config: Config, task: str, archs: dict[str, ArchResult]) -> None:
    """Every architecture must come from the same split, folds and targets: else the comparison is void."""
    rerun = f"rerun `genebench evaluate --dataset {config.dataset} --task {task}` for it"
    first_arch, first = next(iter(archs.items()))
    for arch, result in archs.items():
        for key in ("n_dev", "n_test"):
            if result.metrics[key] != first.metrics[key]:
                raise UserError(
                    f"{relative(config, metrics_file(config, task, arch))}: {key} is {result.metrics[key]} but "
                    f"{first.metrics[key]} for {first_arch}; results come from different splits, {rerun}")
        if sorted(result.folds.index) != sorted(first.folds.index):
            raise UserError(
                f"{relative(config, evaluation_dir(config, task, arch) / 'folds.csv')}: folds "
                f"{sorted(result.folds.index)} differ from {first_arch}'s {sorted(first.folds.index)}; {rerun}")
        repeats, first_repeats = result.folds["repeat"], first.folds["repeat"].reindex(result.folds.index)
        if not repeats.equals(first_repeats):
            fold = next(f for f in repeats.index if repeats[f] != first_repeats[f])
            raise UserError(
                f"{relative(config, evaluation_dir(config, task, arch) / 'folds.csv')}: column 'repeat': fold "
                f"{fold} is in repeat {repeats[fold]} but in repeat {first_repeats[fold]} for {first_arch}; {rerun}")
        version, first_version = result.run.get("data_version"), first.run.get("data_version")
        if version and first_version and version != first_version:
            raise UserError(
                f"{relative(config, evaluation_dir(config, task, arch) / 'run.json')}: data_version {version} "
                f"differs from {first_arch}'s {first_version}; {rerun}")
        if set(result.per_gene.index) != set(first.per_gene.index):
            odd = sorted(set(result.per_gene.index) ^ set(first.per_gene.index))[0]
            raise UserError(
                f"{relative(config, evaluation_dir(config, task, arch) / 'test_per_gene.csv')}: gene {odd!r} "
                f"is not a target of both {arch} and {first_arch}; {rerun}")


def load_task_results(config: Config, task: str) -> TaskResults:
    """Every architecture present for `task` on `config.dataset` (a config bound to it).

    A (dataset, task) without any result is not an error here: the report lists it as
    missing. Results that are present are checked for one shared split.
    """
    archs: dict[str, ArchResult] = {}
    missing: dict[str, str] = {}
    for arch in ARCHS:
        result = load_arch(config, task, arch)
        if isinstance(result, str):
            missing[arch] = result
        else:
            archs[arch] = result
    if archs:
        _check_consistent(config, task, archs)
    return TaskResults(dataset=config.dataset, task=task, archs=archs, missing=missing)
