"""The held-out predictions of the evaluate stage, read back as tables and aligned matrices.

`test_predictions.csv` is a long table (sample, gene, observed, predicted, and for a deep
model with a base `base_predicted`); a wide one (a `sample` column, then one column per
target gene) is accepted too, its observed values then taken from the prepared split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.paths import prepared_dir
from benchmark.report.results import ArchResult, TaskResults, relative

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.data.prepare import TaskData

LONG_COLUMNS = ("sample", "gene", "observed", "predicted")
BASE_PREDICTED = "base_predicted"


def check_prepared(config: Config, results: TaskResults, data: TaskData) -> None:
    """The prepared split must be the one the results were evaluated on; else observed values would not match."""
    rerun = f"rerun `genebench evaluate --dataset {config.dataset} --task {results.task}`"
    source = relative(config, prepared_dir(config) / "split.json")
    if len(data.test_samples) != results.n_test:
        raise UserError(f"{source}: {len(data.test_samples)} held-out samples, but the results were evaluated on "
                        f"{results.n_test}; {rerun}")
    if set(data.target_genes) != set(results.genes):
        odd = sorted(set(data.target_genes) ^ set(results.genes))[0]
        raise UserError(f"{relative(config, prepared_dir(config) / (results.task + '.json'))}: gene {odd!r} is not "
                        f"a target of both the prepared task and the evaluated results; {rerun}")
    if results.data_version is not None and results.data_version != data.data_version:
        raise UserError(f"{relative(config, prepared_dir(config) / 'summary.json')}: data_version "
                        f"{data.data_version} differs from the evaluated {results.data_version}; {rerun}")


def held_out_table(config: Config, results: TaskResults, result: ArchResult,
                   held_out_data: Callable[[], TaskData]) -> pd.DataFrame:
    """Long table (sample, gene, observed, predicted[, base_predicted]) of one model's held-out predictions.

    `held_out_data()`: the task loaded with `held_out=True`, read only for a wide file.
    """
    import pandas as pd

    source = relative(config, result.predictions)
    try:
        predictions = pd.read_csv(result.predictions, dtype={"sample": str, "gene": str},
                                  float_precision="round_trip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    if "sample" not in predictions.columns:
        raise UserError(f"{source}: missing column 'sample'")
    if "gene" in predictions.columns or "observed" in predictions.columns:
        absent = [c for c in LONG_COLUMNS if c not in predictions.columns]
        if absent:
            raise UserError(f"{source}: missing column {absent[0]!r}")
        if result.has_base and BASE_PREDICTED not in predictions.columns:
            raise UserError(f"{source}: missing column {BASE_PREDICTED!r} (folds.csv scores the model's base)")
        columns = list(LONG_COLUMNS) + ([BASE_PREDICTED] if BASE_PREDICTED in predictions.columns else [])
        table = predictions[columns]
        for column in columns[2:]:
            if not pd.api.types.is_numeric_dtype(table[column]) or table[column].isna().any():
                raise UserError(f"{source}: column {column!r}: expected a number in every row")
        genes = set(table["gene"])
        if genes != set(result.per_gene.index):
            odd = sorted(genes ^ set(result.per_gene.index))[0]
            raise UserError(f"{source}: gene {odd!r} is not in both this file and test_per_gene.csv")
        if table.duplicated(["sample", "gene"]).any():
            row = table[table.duplicated(["sample", "gene"])].iloc[0]
            raise UserError(f"{source}: sample {row['sample']!r}, gene {row['gene']!r} appears twice")
        return table.reset_index(drop=True)
    return _held_out_wide(config, results.task, result, predictions.set_index("sample"), held_out_data())


def _held_out_wide(config: Config, task: str, result: ArchResult, predictions, data: TaskData):
    import pandas as pd

    source = relative(config, result.predictions)
    absent = [g for g in data.target_genes if g not in predictions.columns]
    if absent:
        raise UserError(f"{source}: missing column {absent[0]!r} (a target gene of task {task!r})")
    unknown = [s for s in predictions.index if s not in set(data.test_samples)]
    lacking = [s for s in data.test_samples if s not in set(predictions.index)]
    if unknown or lacking:
        what = f"sample {unknown[0]!r} is not in" if unknown else f"held-out sample {lacking[0]!r} is missing from"
        raise UserError(f"{source}: {what} the prepared held-out split; rerun `genebench evaluate "
                        f"--dataset {config.dataset} --task {task} --arch {result.arch}`")
    observed = pd.DataFrame(data.Y_test, index=data.test_samples, columns=data.target_genes)
    predicted = predictions.loc[data.test_samples, data.target_genes].astype("float64")
    return pd.DataFrame({
        "sample": [s for s in data.test_samples for _ in data.target_genes],
        "gene": list(data.target_genes) * len(data.test_samples),
        "observed": observed.to_numpy(dtype="float64").reshape(-1),
        "predicted": predicted.to_numpy().reshape(-1),
    })


@dataclass(frozen=True)
class HeldOut:
    """One model's held-out values as (n_samples, n_genes) float64 matrices, rows `samples`
    and columns `genes` both sorted (so two models' matrices align entry by entry)."""

    samples: tuple[str, ...]
    genes: tuple[str, ...]
    observed: np.ndarray
    predicted: np.ndarray
    base: Optional[np.ndarray]  # the model's base alone, where the file has `base_predicted`
    source: str


def matrices(config: Config, result: ArchResult, table: pd.DataFrame) -> HeldOut:
    """`table` (from `held_out_table`) as aligned matrices; every (sample, gene) must be present."""
    source = relative(config, result.predictions)
    samples, genes = sorted(set(table["sample"])), sorted(set(table["gene"]))
    if len(table) != len(samples) * len(genes):
        raise UserError(f"{source}: {len(table)} rows, but {len(samples)} samples x {len(genes)} genes need "
                        f"{len(samples) * len(genes)}: some (sample, gene) has no prediction")
    wide = {column: table.pivot(index="sample", columns="gene", values=column).loc[samples, genes]
            .to_numpy(dtype=np.float64) for column in table.columns[2:]}
    return HeldOut(tuple(samples), tuple(genes), wide["observed"], wide["predicted"],
                   wide.get(BASE_PREDICTED), source)


def check_paired(model: HeldOut, reference: HeldOut) -> None:
    """Two models' held-out matrices must cover the same samples and genes with the same observed values."""
    if model.samples != reference.samples:
        odd = sorted(set(model.samples) ^ set(reference.samples))[0]
        raise UserError(f"{model.source}: column 'sample': sample {odd!r} is not a held-out sample of both this "
                        f"file and {reference.source}")
    if model.genes != reference.genes:
        odd = sorted(set(model.genes) ^ set(reference.genes))[0]
        raise UserError(f"{model.source}: column 'gene': gene {odd!r} is not in both this file and {reference.source}")
    # float32 data round-tripped through CSV by different writers: equal to ~1e-7 relative.
    if not np.allclose(model.observed, reference.observed, rtol=1e-6, atol=1e-9):
        raise UserError(f"{model.source}: column 'observed' differs from {reference.source}: the two models were "
                        "scored on different held-out values; rerun `genebench evaluate` for both")
