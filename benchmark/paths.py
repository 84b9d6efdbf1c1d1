"""Where each stage writes, relative to the project root (one stage, one output)."""

from __future__ import annotations

from pathlib import Path

from benchmark.config import Config

PREPARED = Path("artifacts") / "prepared"
TUNING = Path("artifacts") / "tuning"
EVALUATION = Path("artifacts") / "evaluation"
METRICS = Path("metrics")
REPORTS = Path("reports")


def prepared_dir(config: Config) -> Path:
    return config.resolve(PREPARED)


def tuning_result(config: Config, task: str, arch: str) -> Path:
    """`artifacts/tuning/<task>/<arch>.json`: best params of the study, read by evaluate."""
    return config.resolve(TUNING / task / f"{arch}.json")


def metrics_file(config: Config, task: str, arch: str) -> Path:
    """`metrics/<task>/<arch>.json`: the DESIGN.md metrics schema."""
    return config.resolve(METRICS / task / f"{arch}.json")


def evaluation_dir(config: Config, task: str, arch: str) -> Path:
    """`artifacts/evaluation/<task>/<arch>/`: per-fold table, predictions, attention, model."""
    return config.resolve(EVALUATION / task / arch)


def reports_dir(config: Config) -> Path:
    return config.resolve(REPORTS)
