"""The promotion gate: CV verdicts between evaluations, held-out scores of registered versions.

`benchmark.registry` decides with these. The gate decides on CV only (`cv_verdict`, the
report's Bayesian correlated t-test on paired fold RMSEs); `held_out_rmse` scores a
registered version through its pyfunc on raw `data/` values, the held-out rows read a
block at a time, and is reported, never used to decide.
"""

from __future__ import annotations

import json
from typing import Optional

import numpy as np

from benchmark import ARCHS
from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.paths import evaluation_dir, metrics_file


def comparable(version, data_version: str, targets: str, folds: str) -> Optional[str]:
    """Why `version` cannot be compared with today's evaluation, or None."""
    tags = version.tags or {}
    if tags.get("data_version") != data_version:
        return (f"version {version.version} was trained on data version {tags.get('data_version', 'unknown')}, "
                f"today's is {data_version}; it may have seen today's held-out samples")
    if tags.get("targets_md5") != targets:
        return f"version {version.version} predicts another target gene set than today's task"
    if tags.get("folds_md5") != folds:
        return f"version {version.version} was scored on other CV folds than today's, so its fold scores do not pair up"
    return None


def disk_fold_rmse(config: Config, task: str, arch: str) -> dict[int, float]:
    """Scored fold -> CV RMSE of `arch`'s evaluation on disk (folds.csv)."""
    import pandas as pd

    folds = pd.read_csv(evaluation_dir(config, task, arch) / "folds.csv")
    return {int(f): float(r) for f, r in zip(folds["fold"], folds["rmse"])}


def run_fold_rmse(client, run_id: str) -> dict[int, float]:
    """Scored fold -> CV RMSE that an evaluation run logged (`fold_rmse`, step = fold)."""
    return {int(m.step): float(m.value) for m in client.get_metric_history(run_id, "fold_rmse")}


def cv_verdict(data, candidate: dict[int, float], reference: dict[int, float], rope: float,
               confidence: float, against: str) -> dict:
    """The candidate's verdict against `reference` over the same scored CV folds: the Bayesian
    correlated t-test of the report (`benchmark.report.statistics`) on the paired RMSE
    differences, `rope` relative to the reference's mean CV RMSE. `data`: today's task."""
    from benchmark.report.statistics import bayesian_correlated_ttest, verdict

    if sorted(candidate) != sorted(reference):
        raise UserError(f"the candidate's scored folds {sorted(candidate)} differ from {against}'s {sorted(reference)}; "
                        f"rerun `genebench evaluate` for both")
    folds = sorted(candidate)
    differences = np.array([candidate[f] - reference[f] for f in folds])
    rho = float(np.mean([len(data.folds[f][1]) / (len(data.folds[f][0]) + len(data.folds[f][1])) for f in folds]))
    half_width = rope * float(np.mean([reference[f] for f in folds]))
    result = bayesian_correlated_ttest(differences, rho, half_width)
    return {"against": against, "verdict": verdict(result, confidence), "p_better": result.p_better,
            "p_equivalent": result.p_equivalent, "p_worse": result.p_worse, "rope": half_width,
            "difference": float(differences.mean()), "resamples": len(folds)}


def cv_rmse(config: Config, task: str, arch: str) -> Optional[float]:
    """`arch`'s mean CV RMSE from its metrics file, or None (not evaluated, or undefined)."""
    path = metrics_file(config, task, arch)
    if not path.exists():
        return None
    rmse = ((json.loads(path.read_text()).get("cv") or {}).get("rmse") or {}).get("mean")
    return None if rmse is None else float(rmse)


def best_by_cv(config: Config, task: str) -> str:
    """The architecture with the lowest CV RMSE among today's evaluations (ties: ARCHS order)."""
    scored = [(rmse, ARCHS.index(arch), arch) for arch in ARCHS if (rmse := cv_rmse(config, task, arch)) is not None]
    return min(scored)[2]


def versus_best(config: Config, task: str, arch: str, data) -> dict:
    """The candidate's verdict against the best architecture by CV (`compare.rope`): a champion
    that a baseline beats is labelled as such."""
    best = best_by_cv(config, task)
    if best == arch:
        return {"against": arch, "verdict": "best", "p_better": None, "p_equivalent": None, "p_worse": None,
                "rope": None, "difference": 0.0, "resamples": None}
    compare = config.params.compare
    return cv_verdict(data, disk_fold_rmse(config, task, arch), disk_fold_rmse(config, task, best),
                      compare.rope, compare.confidence, against=best)


def verdict_words(entry: dict) -> str:
    """A verdict entry in words: `better against ridge (P = 0.97)`."""
    if entry["verdict"] == "best":
        return "the best architecture by CV"
    probability = {"better": "p_better", "equivalent": "p_equivalent", "worse": "p_worse"}.get(entry["verdict"])
    shown = f" (P = {entry[probability]:.2f})" if probability and entry[probability] is not None else ""
    return f"{entry['verdict']} against {entry['against']}{shown}"


def held_out_rmse(config: Config, name: str, version: str, data) -> float:
    """Held-out RMSE of registered version `version` of `name` through its pyfunc, the serving
    path: raw `data/` values in, one block of held-out rows at a time (memory bounded by the
    block, not by the split). `data`: today's task, loaded with `held_out=True`."""
    import mlflow

    from benchmark import tracking
    from benchmark.metrics import regression_metrics

    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    predicted = []
    # Every gene of data/, so a model built on another feature set (features.max_genes)
    # still finds its inputs; it ignores the columns it does not use.
    for frame in tracking.raw_frames(config, "test"):
        block = model.predict(frame)
        missing = [g for g in data.target_genes if g not in block.columns]
        if missing:
            raise UserError(f"{name} version {version} does not predict target gene {missing[0]!r} of today's task")
        predicted.append(block[data.target_genes].to_numpy(dtype=np.float64))
    Y = np.concatenate(predicted)
    return float(regression_metrics(data.Y_test, Y, data.Y_dev.min(axis=0), data.Y_dev.max(axis=0))["rmse"])
