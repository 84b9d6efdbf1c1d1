"""Where each stage writes, relative to the project root (one stage, one output).

Per-dataset outputs take a config bound to the dataset (`config.for_dataset(name)`):

- `artifacts/prepared/<dataset>/`: split, folds, task genes (prepare)
- `artifacts/tuning/<dataset>/<task>/<arch>.json`: the study's result (tune)
- `artifacts/evaluation/<dataset>/<task>/<arch>/` and `metrics/<dataset>/<task>/<arch>.json` (evaluate)
- `reports/` (compare, promote), across datasets.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.config import Config

PREPARED = Path("artifacts") / "prepared"
TUNING = Path("artifacts") / "tuning"
EVALUATION = Path("artifacts") / "evaluation"
METRICS = Path("metrics")
REPORTS = Path("reports")


def _dataset(config: Config) -> str:
    if config.dataset is None:
        raise RuntimeError("stage paths need a config bound to a dataset (config.for_dataset(name))")
    return config.dataset


def prepared_dir(config: Config) -> Path:
    """`artifacts/prepared/<dataset>/`."""
    return config.resolve(PREPARED / _dataset(config))


def tuning_result(config: Config, task: str, arch: str) -> Path:
    """`artifacts/tuning/<dataset>/<task>/<arch>.json`: best params of the study, read by evaluate."""
    return config.resolve(TUNING / _dataset(config) / task / f"{arch}.json")


def metrics_file(config: Config, task: str, arch: str) -> Path:
    """`metrics/<dataset>/<task>/<arch>.json`: the DESIGN.md metrics schema."""
    return config.resolve(METRICS / _dataset(config) / task / f"{arch}.json")


def evaluation_dir(config: Config, task: str, arch: str) -> Path:
    """`artifacts/evaluation/<dataset>/<task>/<arch>/`: per-fold table, predictions, attention, model."""
    return config.resolve(EVALUATION / _dataset(config) / task / arch)


def reports_dir(config: Config) -> Path:
    return config.resolve(REPORTS)
