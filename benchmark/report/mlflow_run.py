"""The compare stage's one MLflow run: the leaderboard as a table, a few headline metrics,
the verdicts as tags, and the report, summary and figures as artifacts."""

from __future__ import annotations

import time
from pathlib import Path

from benchmark import TASKS
from benchmark.config import Config
from benchmark.report import leaderboard
from benchmark.report.verdicts import short

RUN_NAME = "compare"
EXPERIMENT_SUFFIX = "leaderboard"  # the summary run's experiment: <mlflow.experiment>-leaderboard
TABLE_FILE = "leaderboard.json"  # the leaderboard as an MLflow table artifact
# One tag per (dataset, task, architecture): 4 datasets x 2 tasks x 7 = 56 by default. Past
# this many the rest are left to summary.json (an artifact of the same run), not the runs table.
MAX_VERDICT_TAGS = 200


def leaderboard_table(summary: dict, datasets: list[str]):
    """The leaderboards of every task as one DataFrame, one row per (task, leaderboard row).

    Columns: task, position (1 = top), arch, role, mean_scaled_score, mean_rank,
    datasets (how many scored it), then `scaled_<dataset>` per dataset (NaN where absent),
    then `verdict_vs_ridge_<dataset>` (e.g. `better (P=0.97)`; None where absent).
    """
    import pandas as pd

    rows = []
    for task in TASKS:
        for position, entry in enumerate(summary["leaderboard"][task], start=1):
            row = {"task": task, "position": position, "arch": entry["arch"], "role": entry["role"],
                   "mean_scaled_score": entry["mean_scaled_score"], "mean_rank": entry["mean_rank"],
                   "datasets": entry["datasets"]}
            row.update({f"scaled_{d}": entry["scaled_scores"].get(d) for d in datasets})
            verdicts = entry.get("verdicts_vs_ridge", {})
            row.update({f"verdict_vs_ridge_{d}": short(verdicts[d], against=False) if d in verdicts else None
                        for d in datasets})
            rows.append(row)
    columns = ["task", "position", "arch", "role", "mean_scaled_score", "mean_rank", "datasets"]
    return pd.DataFrame(rows, columns=columns + [f"scaled_{d}" for d in datasets]
                        + [f"verdict_vs_ridge_{d}" for d in datasets])


def headline_metrics(summary: dict) -> dict[str, float]:
    """A handful of numbers for the runs table: per task the top architecture's mean scaled
    score and mean rank and how many datasets are on the leaderboard; per dataset with an
    oracle, ridge's scaled score (how far the linear reference falls short of the truth)."""
    values: dict[str, float] = {}
    for task, entries in summary["leaderboard"].items():
        top = next((e for e in entries if e["arch"] != leaderboard.ORACLE), None)
        if top is None:
            continue
        values[f"{task}.best_mean_scaled_score"] = top["mean_scaled_score"]
        if top["mean_rank"] is not None:
            values[f"{task}.best_mean_rank"] = top["mean_rank"]
        values[f"{task}.datasets_scored"] = float(max(e["datasets"] for e in entries))
    for name, tasks in summary["datasets"].items():
        for task, section in tasks.items():
            ridge = section.get("scaled", {}).get("ridge")
            if leaderboard.ORACLE in section.get("scaled", {}) and ridge and ridge["score"] is not None:
                values[f"{name}.{task}.ridge_scaled_score"] = ridge["score"]
    return values


def verdict_tags(summary: dict) -> dict[str, str]:
    """`verdict.<dataset>.<task>.<arch>` = e.g. `better vs ridge (P=0.97)`, with the ablation
    appended for a deep model with a base (`; vs base: equivalent (P=0.99)`); at most
    `MAX_VERDICT_TAGS`, and `verdict.omitted` counts any left out."""
    tags: dict[str, str] = {}
    omitted = 0
    for name, tasks in summary["datasets"].items():
        for task, section in tasks.items():
            for arch, entry in sorted(section.get("verdicts", {}).items()):
                if len(tags) >= MAX_VERDICT_TAGS:
                    omitted += 1
                    continue
                value = short(entry)
                if entry.get("versus_base") is not None:
                    value += f"; vs base: {short(entry['versus_base'], against=False)}"
                tags[f"verdict.{name}.{task}.{arch}"] = value
    if omitted:
        tags["verdict.omitted"] = f"{omitted} more in summary.json"
    return tags


def log_run(config: Config, summary: dict, out: Path, files: tuple[str, ...], folders: tuple[str, ...]) -> None:
    """One FINISHED run in `<mlflow.experiment>-leaderboard`; `files`, `folders`: under `out`, logged as artifacts."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from benchmark import tracking

    client = MlflowClient(tracking_uri=tracking.configure(config))
    missing = [f"{name}/{task}" for name, tasks in summary["datasets"].items()
               for task, section in tasks.items() if not section["architectures"]]
    tags = {"stage": "compare", "git_commit": tracking.git_commit(config.root),
            "git_dirty": tracking.git_dirty(config.root), "datasets": ",".join(config.datasets),
            "missing": ",".join(missing) or "none"}
    for task, entries in summary["leaderboard"].items():
        tags[f"best_model_{task}"] = str(leaderboard.best(entries))
    for name, tasks in summary["datasets"].items():
        version = next((s["data_version"] for s in tasks.values() if s.get("data_version")), None)
        if version is not None:
            tags[f"data_version.{name}"] = version
    experiment = tracking.named_experiment_id(config, f"{config.params.mlflow.experiment}-{EXPERIMENT_SUFFIX}")
    run = client.create_run(experiment, run_name=RUN_NAME, tags=tags)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        verdicts = [RunTag(k, v) for k, v in verdict_tags(summary).items()]
        for start in range(0, len(verdicts), 100):  # MLflow takes at most 100 tags a batch
            client.log_batch(run_id, tags=verdicts[start:start + 100])
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0)
                                          for k, v in sorted(headline_metrics(summary).items())])
        client.log_table(run_id, data=leaderboard_table(summary, config.datasets), artifact_file=TABLE_FILE)
        for name in files:
            client.log_artifact(run_id, str(out / name))
        for folder in folders:
            client.log_artifacts(run_id, str(out / folder), artifact_path=folder)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
