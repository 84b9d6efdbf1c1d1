"""The promote stage: register the candidate, gate the `champion` alias, roll back.

Per (dataset, task), registered model `genebench-<dataset>-<task>` with aliases
`challenger` and `champion`:

1. The candidate is `promotion.candidate` (or `--candidate`): an architecture, or `best`
   (lowest CV RMSE among `metrics/<dataset>/<task>/*.json`; chosen on CV, never on the
   held-out split that the gate then scores). Its evaluation run's pyfunc is
   registered as a new version, unless that run already has one (then that version is
   reused), and gets the alias `challenger`. Inside `dvc exp run` (`DVC_EXP_NAME` set)
   promotion stops here.
2. Like with like: the candidate must come from today's data version and target genes,
   and so must the champion; a champion from another data version or target set may
   have trained on today's held-out samples, so the comparison is refused (the champion
   stays) unless `--force`.
3. The gate decides on CV, never on the held-out split: over the same scored CV folds
   (same data version, targets and folds, `folds_md5`), the candidate's verdict against
   the champion (`cv_verdict`: the report's Bayesian correlated t-test on the paired fold
   RMSEs, `promotion.min_improvement` as the region of practical equivalence, relative
   to the champion's CV RMSE, and `compare.confidence`) must be `better` for `champion`
   to move. Both held-out RMSEs are reported (scored through the registered pyfuncs on
   raw `data/` values, the serving path, a block of held-out rows at a time:
   `benchmark.promotion_gate`), never used to decide. No champion yet: the
   candidate becomes champion. `--force` moves it without the gate. Whichever the
   decision, the candidate's verdict against the best architecture by CV (`compare.rope`)
   is recorded (`versus_best`; a version tag and the one-line summary), so a champion
   that a baseline beats is labelled as such.
4. `--rollback` moves `champion` back to the previous champion (the registered model's
   `champion_history` tag, kept by every move).

Every decision is tagged on the candidate's version (`decision`, `decision_reason`) and
written to `reports/promotion.json` (`{dataset: {task: entry}}`; entries of datasets and
tasks not promoted this time are kept while their dataset is still listed).
`promotion.enabled: false` records `skipped` and touches no registry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from benchmark import ARCHS, TASKS
from benchmark.config import Config
from benchmark.errors import UserError
from benchmark.outputs import write_json
from benchmark.paths import evaluation_dir, metrics_file, reports_dir
from benchmark.promotion_gate import (comparable, cv_rmse, cv_verdict, disk_fold_rmse, held_out_rmse, run_fold_rmse,
                                      verdict_words, versus_best)

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
# Version tags copied from the evaluation run; metrics are copied as `test_<m>`/`cv_rmse_mean`.
_RUN_TAGS = ("dataset", "task", "arch", "data_version", "git_commit", "git_dirty", "targets_md5", "folds_md5",
             "transform", "n_targets", "n_features")
_METRIC_TAGS = ("test_rmse", "test_mae", "test_mse", "test_r2", "test_pearson",
                "test_rmse_scaled", "test_mae_scaled", "cv_rmse_mean", "cv_rmse_std")


def registered_model_name(config: Config, task: str) -> str:
    """`genebench-<dataset>-<task>` (config bound to the dataset)."""
    return f"genebench-{config.dataset}-{task}"


def promotion_file(config: Config) -> Path:
    return reports_dir(config) / "promotion.json"


def _client(config: Config):
    import mlflow

    from benchmark import tracking

    tracking.configure(config)
    return mlflow.MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)


def _read_metrics(config: Config, task: str, arch: str) -> dict:
    path = metrics_file(config, task, arch)
    if not path.exists():
        raise UserError(f"{path.relative_to(config.root)}: not found; run "
                        f"`genebench evaluate --dataset {config.dataset} --task {task} --arch {arch}` first")
    document = json.loads(path.read_text())
    if not document.get("mlflow_run_id"):
        raise UserError(f"{path.relative_to(config.root)}: mlflow_run_id is empty; rerun "
                        f"`genebench evaluate --dataset {config.dataset} --task {task} --arch {arch}`")
    return document


def _candidate_arch(config: Config, task: str, candidate: Optional[str]) -> str:
    arch = candidate or config.params.promotion.candidate
    if arch != "best":
        if arch not in ARCHS:
            raise UserError(f"promotion.candidate: expected 'best' or one of {', '.join(ARCHS)}, got {arch!r}")
        return arch
    # Chosen on CV: the held-out split is what the gate scores, so it must not pick too.
    scored = sorted((rmse, path.stem) for path in metrics_file(config, task, ARCHS[0]).parent.glob("*.json")
                    if path.stem in ARCHS and (rmse := cv_rmse(config, task, path.stem)) is not None)
    if not scored:
        raise UserError(f"metrics/{config.dataset}/{task}/: no evaluated architecture to pick the best from; "
                        f"run `genebench evaluate --dataset {config.dataset} --task {task} --arch A` first")
    return scored[0][1]


def _model_uri(config: Config, task: str, arch: str, run) -> str:
    """The evaluation run's logged model: run.json's URI when it belongs to this run, else the run's output."""
    record = evaluation_dir(config, task, arch) / "run.json"
    if record.exists():
        data = json.loads(record.read_text())
        if data.get("run_id") == run.info.run_id and data.get("model_uri"):
            return data["model_uri"]
    outputs = getattr(run, "outputs", None)
    models = getattr(outputs, "model_outputs", None) or []
    if not models:
        raise UserError(f"mlflow run {run.info.run_id} ({config.dataset}/{task}/{arch}) has no logged model; "
                        f"rerun `genebench evaluate --dataset {config.dataset} --task {task} --arch {arch}`")
    return f"models:/{models[-1].model_id}"


def _version_tags(run) -> dict[str, str]:
    tags = {k: run.data.tags[k] for k in _RUN_TAGS if k in run.data.tags}
    tags["run_id"] = run.info.run_id
    for name in _METRIC_TAGS:
        if name in run.data.metrics:
            tags[name] = repr(float(run.data.metrics[name]))
    return tags


def _register(client, name: str, model_uri: str, run) -> tuple[Any, bool]:
    """`(version, created)`: the run's existing version, or a new one.

    Registered from the logged model itself (`models:/<model_id>`, with the run's id on
    the version, so a second promote of the same run finds it), through the client:
    `mlflow.register_model` given a `runs:/` URI warns that the run "has no artifacts at
    artifact path 'model'" (MLflow 3 keeps models outside the run's artifacts) and prints
    "Registered model ... already exists" for a model this function has just created.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    try:
        client.create_registered_model(name, description="genebench champion/challenger models for one dataset and task")
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = client.search_model_versions(f"name='{name}' and run_id='{run.info.run_id}'")
    if existing:
        return min(existing, key=lambda v: int(v.version)), False
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = client.create_model_version(name, model_uri, run_id=run.info.run_id, tags=_version_tags(run),
                                          model_id=model_id)
    if model_id is not None:
        # What mlflow.register_model adds: the version listed on the logged model (the UI's
        # "Registered models" on the model page).
        listed = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [*listed, {"name": name, "version": version.version}])})
    return client.get_model_version(name, version.version), True


def _alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE") or "alias" in str(exc).lower():
            return None
        raise


def _history(client, name: str) -> list[str]:
    tags = client.get_registered_model(name).tags or {}
    try:
        return [str(v) for v in json.loads(tags.get(HISTORY_TAG, "[]"))]
    except json.JSONDecodeError:
        return []


def _set_champion(client, name: str, version: str, previous: Optional[str]) -> None:
    history = _history(client, name)
    if previous is not None and (not history or history[-1] != previous):
        history.append(previous)  # champion moved outside genebench (e.g. the UI)
    history.append(str(version))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-50:]))
    if previous is not None:
        client.set_registered_model_alias(name, "previous_champion", str(previous))


def _promote_task(config: Config, task: str, candidate: Optional[str], force: bool) -> dict:
    """Register the candidate, decide whether it becomes champion, tag and return the decision."""
    client = _client(config)
    name = registered_model_name(config, task)
    arch = _candidate_arch(config, task, candidate)
    metrics = _read_metrics(config, task, arch)
    run = client.get_run(metrics["mlflow_run_id"])
    data = _task_without_features(config, task)
    _check_current(config, task, arch, run, data)
    best = versus_best(config, task, arch, data)
    version, created = _register(client, name, _model_uri(config, task, arch, run), run)
    v = str(version.version)
    client.set_registered_model_alias(name, CHALLENGER, v)
    champion = _alias_version(client, name, CHAMPION)
    before = str(champion.version) if champion is not None else None
    entry = {
        "dataset": config.dataset, "task": task, "registered_model": name, "candidate_arch": arch,
        "candidate_run_id": run.info.run_id, "version": v, "new_version": created, "champion_before": before,
        "champion_after": before, "candidate_rmse": None, "champion_rmse": None,
        "evaluation_rmse": metrics["test"]["rmse"], "min_improvement": config.params.promotion.min_improvement,
        "data_version": data.data_version, "forced": force, "versus_best": best, "versus_champion": None,
    }
    decision, reason = _decide(config, task, arch, client, data, entry, champion, force)
    if decision == "promoted":
        _set_champion(client, name, v, before)
        entry["champion_after"] = v
    entry.update(decision=decision, reason=reason)
    client.set_model_version_tag(name, v, "decision", decision)
    client.set_model_version_tag(name, v, "decision_reason", reason)
    client.set_model_version_tag(name, v, "versus_best", verdict_words(best))
    return entry


def _task_without_features(config: Config, task: str):
    """Today's task with its held-out targets. Promote needs targets, folds and the raw rows
    it scores (read in blocks), never the task's feature matrix: loading it as a stream
    (`data.stream_above_mb` 0) keeps the features on disk, unread."""
    from benchmark.data.prepare import load_task

    data_params = config.params.data.model_copy(update={"stream_above_mb": 0})
    streamed = Config(config.params.model_copy(update={"data": data_params}), config.path, config.root, config.dataset)
    return load_task(streamed, task, held_out=True)


def _check_current(config: Config, task: str, arch: str, run, data) -> None:
    """UserError when the candidate's evaluation is not of today's data version, targets and folds."""
    from benchmark import tracking

    tags, stale = run.data.tags, None
    if tags.get("data_version") != data.data_version:
        stale = f"data version {tags.get('data_version', 'unknown')}, today's is {data.data_version}"
    elif tags.get("targets_md5") != tracking.targets_digest(data.target_genes):
        stale = "another target gene set than today's task"
    elif tags.get("folds_md5") != tracking.folds_digest(data):
        stale = "other scored CV folds than today's prepared split"
    if stale:
        raise UserError(f"metrics/{config.dataset}/{task}/{arch}.json: its evaluation (mlflow run {run.info.run_id}) "
                        f"used {stale}; rerun `genebench evaluate --dataset {config.dataset} --task {task} --arch {arch}`")


def _decide(config: Config, task: str, arch: str, client, data, entry: dict, champion, force: bool) -> tuple[str, str]:
    """`(decision, reason)` for the registered candidate `entry["version"]`; the gate's verdict
    and both held-out RMSEs go into `entry`."""
    from benchmark import tracking

    v, before, name = entry["version"], entry["champion_before"], entry["registered_model"]
    if os.environ.get("DVC_EXP_NAME"):
        return "registered", f"inside `dvc exp run` ({os.environ['DVC_EXP_NAME']}): challenger only, champion left alone"
    if champion is not None and before == v:
        return "unchanged", f"version {v} is already the champion"
    if champion is None:
        return "promoted", "no champion yet"
    if force:
        return "promoted", f"--force: replaced version {before} without the gate"
    targets, folds = tracking.targets_digest(data.target_genes), tracking.folds_digest(data)
    if (why := comparable(champion, data.data_version, targets, folds)) is not None:
        return "refused", f"{why}; the comparison is not like with like (use --force to replace it)"
    # Decided on the scored CV resamples; held-out scores are reported, never used to
    # decide (promotion after promotion on one held-out split would select on it).
    min_improvement = config.params.promotion.min_improvement
    gate = cv_verdict(data, disk_fold_rmse(config, task, arch), run_fold_rmse(client, champion.tags["run_id"]),
                      min_improvement, config.params.compare.confidence, against=f"champion version {before}")
    entry["versus_champion"] = gate
    entry["candidate_rmse"] = held_out_rmse(config, name, v, data)
    entry["champion_rmse"] = held_out_rmse(config, name, before, data)
    said = (f"CV verdict {verdict_words(gate)} over {gate['resamples']} scored folds "
            f"(promotion.min_improvement {min_improvement:g})")
    return ("promoted", said) if gate["verdict"] == "better" else ("rejected", said + ": needs better")


def _rollback_plan(config: Config, task: str) -> tuple[str, str, str, list[str]]:
    """`(name, current, target, history)` of a rollback; raises UserError when there is none."""
    client = _client(config)
    name = registered_model_name(config, task)
    champion = _alias_version(client, name, CHAMPION) if _exists(client, name) else None
    if champion is None:
        raise UserError(f"{name}: no champion to roll back; run `genebench promote --dataset {config.dataset} "
                        f"--task {task}` first")
    current = str(champion.version)
    history = _history(client, name)
    if not history or history[-1] != current:
        history.append(current)  # champion moved outside genebench (e.g. the UI)
    earlier = [v for v in history[:-1] if v != current]
    if not earlier:
        raise UserError(f"{name}: version {current} is the only champion it has had; nothing to roll back to")
    target = earlier[-1]
    # Drop the entries after the restored champion, so a second rollback steps back further.
    cut = max(i for i, v in enumerate(history[:-1]) if v == target) + 1
    return name, current, target, history[:cut]


def _rollback_task(config: Config, task: str, plan: tuple[str, str, str, list[str]]) -> dict:
    client = _client(config)
    name, current, target, history = plan
    client.set_registered_model_alias(name, CHAMPION, target)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
    earlier = history[:-1]
    if earlier:
        client.set_registered_model_alias(name, "previous_champion", earlier[-1])
    else:
        client.delete_registered_model_alias(name, "previous_champion")
    reason = f"--rollback: champion version {current} replaced by the previous champion, version {target}"
    client.set_model_version_tag(name, target, "decision", "rolled_back")
    client.set_model_version_tag(name, target, "decision_reason", reason)
    client.set_model_version_tag(name, current, "decision", "rolled_back_from")
    return {"dataset": config.dataset, "task": task, "registered_model": name, "decision": "rolled_back", "reason": reason,
            "version": target, "champion_before": current, "champion_after": target}


def _exists(client, name: str) -> bool:
    return bool(client.search_registered_models(f"name='{name}'"))


def promote(config: Config, dataset: Optional[str] = None, task: Optional[str] = None,
            candidate: Optional[str] = None, force: bool = False, rollback: bool = False) -> int:
    """Run the promote stage for one dataset or all, one task or both; writes `reports/promotion.json`."""
    configs = [config.for_dataset(name) for name in ([dataset] if dataset else config.datasets)]
    items = [(c, t) for c in configs for t in ([task] if task else TASKS)]
    if rollback and (force or candidate):
        raise UserError("--rollback restores the previous champion; it takes no --candidate or --force")
    if not config.params.promotion.enabled:
        entries = [{"dataset": c.dataset, "task": t, "decision": "skipped", "reason": "promotion.enabled is false"}
                   for c, t in items]
    elif rollback:
        plans = [_rollback_plan(c, t) for c, t in items]  # all checked before any moves
        entries = [_rollback_task(c, t, plan) for (c, t), plan in zip(items, plans)]
    else:
        entries = [_promote_task(c, t, candidate, force) for c, t in items]

    path = promotion_file(config)
    report = {}
    if path.exists():
        try:
            report = json.loads(path.read_text())
        except json.JSONDecodeError:
            report = {}
    for entry in entries:
        report.setdefault(entry["dataset"], {})[entry["task"]] = entry
    write_json(path, {d: {t: e for t, e in sorted(report[d].items()) if t in TASKS}
                      for d in sorted(report) if d in config.params.datasets and isinstance(report[d], dict)})
    for entry in entries:
        label = f" [{entry['candidate_arch']}: {verdict_words(entry['versus_best'])}]" if entry.get("versus_best") else ""
        print(f"promote {entry['dataset']}/{entry['task']}: {entry['decision']} - {entry['reason']}{label}")
    return 0
