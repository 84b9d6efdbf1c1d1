"""What the search bought: per architecture, the best validation RMSE against the number of trials.

The tune stage records each study's `budget_curve` in `artifacts/tuning/<dataset>/<task>/<arch>.json`:
per COMPLETE trial (by number, the first `n_trials`), its value and the best so far. Trial 0 is
the defaults, so the curve starts at what no search buys, as Grinsztajn et al. (2022) draw it.
A curve still falling at its last trial says more search might change the ranking; a flat tail
says the budget was enough for that architecture. Architectures without a study (an empty
search space, or evaluated without tuning) have no curve.
"""

from __future__ import annotations

import json
from typing import Optional

import pandas as pd
from matplotlib.figure import Figure

from benchmark import ARCHS, DEEP_ARCHS
from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.paths import tuning_result
from benchmark.report.results import TaskResults, relative


def _curve(config: Config, task: str, arch: str) -> Optional[list[dict]]:
    path = tuning_result(config, task, arch)
    if not path.is_file():
        return None
    try:
        curve = json.loads(path.read_text()).get("budget_curve")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"{relative(config, path)}: not a tuning result ({exc})") from None
    if not curve:
        return None
    try:
        return [{"trial": int(p["trial"]), "value": float(p["value"]), "best_value": float(p["best_value"])}
                for p in curve]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{relative(config, path)}: budget_curve: expected a list of "
                        f"{{trial, value, best_value}} entries") from None


def task_budget(config: Config, results: TaskResults) -> dict:
    """`{arch: {"trials", "best_values", "last_improvement"}}` for each evaluated arch with a study.

    `best_values[i]` is the best validation RMSE after i + 1 complete trials (index 0: the
    defaults); `last_improvement` the index of the last trial that lowered it.
    """
    budget = {}
    for arch in ARCHS:
        curve = _curve(config, results.task, arch) if arch in results.archs else None
        if curve is None:
            continue
        best = [p["best_value"] for p in curve]
        last = max((i for i in range(len(best)) if i == 0 or best[i] < best[i - 1]), default=0)
        budget[arch] = {"trials": len(best), "best_values": best, "last_improvement": last}
    return budget


def budget_figure(dataset: str, task: str, budget: dict) -> tuple[Optional[Figure], pd.DataFrame]:
    """Best validation RMSE against complete trials (0 = the defaults), one line per arch."""
    rows = [{"arch": arch, "trials": i, "best_value": v}
            for arch, entry in budget.items() for i, v in enumerate(entry["best_values"])]
    data = pd.DataFrame(rows, columns=["arch", "trials", "best_value"])
    if data.empty:
        return None, data
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for arch, entry in budget.items():
        ax.step(range(len(entry["best_values"])), entry["best_values"], where="post", marker="o", markersize=3,
                linestyle="-" if arch in DEEP_ARCHS else "--", label=arch)
    ax.set_xlabel("complete trials after the defaults (0 = defaults)")
    ax.set_ylabel("best validation RMSE so far")
    ax.set_title(f"{dataset} / {task}: what the search bought (dashed: baselines)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig, data
