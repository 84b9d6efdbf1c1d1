"""`genebench compare`: tables, statistics, plots and the MLflow summary run.

The inputs are the evaluate stage's files, written here in exactly its layout for a
small prepared project (real data/ and artifacts/prepared/, a real sqlite MLflow store).
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark import ARCHS, TASKS
from benchmark.config import load_config
from benchmark.data.canonical import Dataset, write_dataset
from benchmark.data.prepare import load_task, prepare
from benchmark.errors import UserError
from benchmark.report import compare
from benchmark.report.statistics import corrected_resampled_ttest, cv_test_train_ratio

PARAMS = """\
data: {dir: data, transform: none}
task: {top_k: 3, single_gene: null}
split: {test_size: 0.2, folds: 5, seed: 7}
mlflow: {tracking_uri: "sqlite:///mlflow.db", experiment: gbtest}
"""

# Per-fold CV RMSE of each architecture (5 folds). dnn is the best model, ridge the best baseline.
FOLD_RMSE = {
    "dnn": [0.50, 0.52, 0.48, 0.51, 0.49],
    "lstm": [0.56, 0.57, 0.55, 0.58, 0.54],
    "gru": [0.55, 0.54, 0.53, 0.56, 0.52],  # identical to ridge: differences all zero
    "attention_lstm": [0.53, 0.55, 0.52, 0.54, 0.51],
    "attention_gru": [0.60, 0.50, 0.58, 0.52, 0.55],
    "mean": [0.90, 0.92, 0.88, 0.91, 0.89],
    "ridge": [0.55, 0.54, 0.53, 0.56, 0.52],
    "knn": [0.60, 0.61, 0.59, 0.62, 0.58],
}
# Held-out per-gene RMSE for the multi task's three target genes.
GENE_RMSE = {
    "dnn": [0.40, 0.60, 0.50],
    "ridge": [0.50, 0.50, 0.55],
}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "GENEBENCH_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _write_results(config, task: str, arch: str) -> None:
    """The files `genebench evaluate --task <task> --arch <arch>` writes, with chosen numbers."""
    data = load_task(config, task, held_out=True)
    genes = data.target_genes
    folds_rmse = np.array(FOLD_RMSE[arch]) * (0.1 if task == "single" else 1.0)
    constant = arch == "mean"  # the mean baseline predicts a constant: Pearson r undefined
    folds = pd.DataFrame({
        "fold": range(5), "n_train": [len(t) for t, _ in data.folds], "n_val": [len(v) for _, v in data.folds],
        "rmse": folds_rmse, "mae": folds_rmse * 0.8, "mse": folds_rmse ** 2,
        "r2": 1 - folds_rmse, "pearson": [None] * 5 if constant else list(0.9 - folds_rmse / 2),
        "rmse_scaled": folds_rmse / 4, "mae_scaled": folds_rmse / 5, "epochs_trained": 0,
    })

    def summary(column):
        values = folds[column].dropna().astype(float)
        if values.empty:  # evaluate writes {"mean": null, "std": null}; DESIGN.md's schema allows null
            return {"mean": None, "std": None} if task == "multi" else None
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1))}

    base = GENE_RMSE.get(arch, [float(folds_rmse.mean())] * 3)
    gene_rmse = base[: len(genes)] if task == "multi" else [float(folds_rmse.mean())]
    test_rmse = float(np.sqrt(np.mean(np.square(gene_rmse))))
    metrics = {
        "task": task, "arch": arch, "n_dev": len(data.dev_samples), "n_test": len(data.test_samples),
        "cv": {m: summary(m) for m in ("rmse", "mae", "mse", "r2", "pearson", "rmse_scaled", "mae_scaled")},
        "test": {"rmse": test_rmse, "mae": test_rmse * 0.8, "mse": test_rmse ** 2, "r2": 1 - test_rmse,
                 "pearson": None if constant else 0.9 - test_rmse / 2,
                 "rmse_scaled": test_rmse / 4, "mae_scaled": test_rmse / 5},
        "mlflow_run_id": f"run-{task}-{arch}",
    }
    mfile = config.root / "metrics" / task / f"{arch}.json"
    mfile.parent.mkdir(parents=True, exist_ok=True)
    mfile.write_text(json.dumps(metrics))
    edir = config.root / "artifacts" / "evaluation" / task / arch
    edir.mkdir(parents=True, exist_ok=True)
    folds.to_csv(edir / "folds.csv", index=False)
    pd.DataFrame([{"fold": f, "gene": g, "r2": 0.5, "rmse": r} for f in range(5) for g, r in zip(genes, gene_rmse)]
                 ).to_csv(edir / "fold_per_gene.csv", index=False)
    pd.DataFrame({"gene": genes, "r2": [1 - r for r in gene_rmse], "rmse": gene_rmse}).to_csv(
        edir / "test_per_gene.csv", index=False)
    offset = 0.0 if constant else float(np.mean(gene_rmse))
    predicted = data.Y_test.mean(axis=0, keepdims=True).repeat(len(data.test_samples), 0) if constant \
        else data.Y_test + offset
    n, k = predicted.shape
    pd.DataFrame({"sample": np.repeat(data.test_samples, k), "gene": np.tile(genes, n),
                  "observed": data.Y_test.astype(np.float64).reshape(-1), "predicted": predicted.reshape(-1)}
                 ).to_csv(edir / "test_predictions.csv", index=False)
    features = data.feature_genes
    if arch == "attention_lstm":  # one token per feature gene: attention.csv and gene_importance.csv
        weight = np.linspace(0.3, 0.01, len(features))
        pd.DataFrame({"token": range(len(features)), "first_gene": features, "last_gene": features, "n_inputs": 1,
                      "mean_weight": weight, "std_weight": 0.01}).to_csv(edir / "attention.csv", index=False)
        pd.DataFrame({"rank": range(1, len(features) + 1), "gene": features, "mean_attention": weight,
                      "std_attention": 0.01}).to_csv(edir / "gene_importance.csv", index=False)
    if arch == "attention_gru":  # 3 tokens of several genes each: per-token table only
        chunks = np.array_split(np.arange(len(features)), 3)
        pd.DataFrame({"token": range(3), "first_gene": [features[c[0]] for c in chunks],
                      "last_gene": [features[c[-1]] for c in chunks], "n_inputs": [len(c) for c in chunks],
                      "mean_weight": [0.2, 0.5, 0.3], "std_weight": 0.05}).to_csv(edir / "attention.csv", index=False)
    (edir / "run.json").write_text(json.dumps({"run_id": metrics["mlflow_run_id"], "data_version": data.data_version,
                                               "target_genes": list(genes)}))


def make_project(root: Path, tasks=TASKS, skip=()) -> object:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(PARAMS)
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 1.0, size=(40, 10)).astype(np.float32) * np.linspace(0.5, 2.0, 10, dtype=np.float32)
    write_dataset(Dataset(X=X, genes=[f"G{i:02d}" for i in range(10)], samples=[f"cell{i:02d}" for i in range(40)],
                          provenance={"source": "test"}), root / "data")
    config = load_config(root / "params.yaml", root=root)
    prepare(config)
    for task in tasks:
        for arch in ARCHS:
            if (task, arch) not in skip:
                _write_results(config, task, arch)
    return config


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A fixture project (single's lstm never evaluated) after one `compare`; its Config."""
    root = tmp_path_factory.mktemp("report") / "proj"
    config = make_project(root, skip={("single", "lstm")})
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        compare(config)
    return config


@pytest.fixture(scope="module")
def summary(reported):
    return json.loads((reported.root / "reports" / "summary.json").read_text())


@pytest.fixture(scope="module")
def report(reported):
    return (reported.root / "reports" / "benchmark.md").read_text()


def _section(report: str, task: str) -> str:
    start = report.index(f"## Task `{task}`")
    end = report.find("## Task `", start + 1)
    return report[start:] if end < 0 else report[start:end]


def _row(section: str, arch: str, nth: int = 0) -> list[str]:
    rows = [line for line in section.splitlines() if line.startswith(f"| `{arch}`")]
    return [cell.strip() for cell in rows[nth].strip("|").split("|")]


def test_metrics_table_lists_every_architecture_with_cv_and_held_out_values(report):
    multi = _section(report, "multi")
    for arch in ARCHS:
        assert _row(multi, arch), arch
    dnn = _row(multi, "dnn")
    # RMSE CV: mean of 0.50 0.52 0.48 0.51 0.49 = 0.50; std (ddof=1) = sqrt(0.001/4) = 0.0158.
    assert dnn[0] == "`dnn` (best CV RMSE)"
    assert dnn[1] == "0.5000 ± 0.0158"
    # Held-out RMSE pools the genes: sqrt((0.16 + 0.36 + 0.25) / 3) = 0.5066.
    assert dnn[2] == f"{math.sqrt((0.16 + 0.36 + 0.25) / 3):.4f}" == "0.5066"
    assert _row(multi, "ridge")[0] == "`ridge` (best baseline)"
    # The mean baseline's Pearson r is undefined (JSON null): a dash in CV and test columns.
    mean = _row(multi, "mean")
    assert mean[9:11] == ["–", "–"]
    assert mean[1] == "0.9000 ± 0.0158"


def test_scaled_table_sits_beside_the_seeds_figures_with_the_caveat(report):
    multi, single = _section(report, "multi"), _section(report, "single")
    scaled = _row(multi, "attention_lstm", nth=1)
    assert scaled[-1] == "0.1651 / 0.1040"
    assert scaled[1] == f"{0.53 / 4:.4f} ± {np.std(np.array([0.53, 0.55, 0.52, 0.54, 0.51]) / 4, ddof=1):.4f}"
    assert _row(multi, "dnn", nth=1)[-1] == "–"
    assert _row(single, "attention_lstm", nth=1)[-1] == "0.0107 / 0.0078"
    assert "whether they are CV or held-out numbers, are unknown" in multi
    # This project's multi task has K=3, not the seed's 50: the report says so.
    assert "top 50 genes; this run's multi task has 3" in multi


def test_corrected_resampled_ttest_matches_hand_computation(summary):
    c = summary["tasks"]["multi"]["versus_best_baseline"]["dnn"]
    assert summary["tasks"]["multi"]["best_baseline"] == "ridge"
    # d = dnn - ridge per fold = [-0.05, -0.02, -0.05, -0.05, -0.03]; mean -0.04.
    # deviations -0.01, 0.02, -0.01, -0.01, 0.01 -> sum of squares 8e-4, var (ddof=1) = 2e-4.
    # 32 dev samples, 5 folds: n_test/n_train = 6.4 / 25.6 = 0.25; (1/5 + 0.25) * 2e-4 = 9e-5.
    t = -0.04 / math.sqrt(9e-5)  # = -4.2164
    assert c["mean_difference"] == pytest.approx(-0.04)
    assert c["test_train_ratio"] == pytest.approx(0.25)
    assert c["t"] == pytest.approx(t) and round(c["t"], 4) == -4.2164
    assert c["df"] == 4
    assert c["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 4))
    assert 0.013 < c["p_value"] < 0.014  # t table, df 4: two-sided p for |t| = 4.216
    # The plain paired t-test has 1/5 in place of 0.45: t = -0.04 / sqrt(4e-5) = -6.32, a smaller p.
    plain = stats.ttest_rel(FOLD_RMSE["dnn"], FOLD_RMSE["ridge"])
    assert plain.statistic == pytest.approx(-0.04 / math.sqrt(4e-5))
    assert plain.pvalue < c["p_value"] / 4


def test_comparison_table_and_undefined_t(report, summary):
    multi = _section(report, "multi")
    dnn = _row(multi, "dnn", nth=2)
    assert dnn == ["`dnn`", "-0.0400", "-4.22", "4", "0.0135", "0.67 (2/3)"]
    # gru's fold RMSEs equal ridge's: the differences do not vary, t is undefined.
    gru = summary["tasks"]["multi"]["versus_best_baseline"]["gru"]
    assert gru["t"] is None and gru["p_value"] is None
    assert _row(multi, "gru", nth=2)[2:5] == ["–", "4", "–"]
    # Every architecture but the best baseline itself is compared with it, the other baselines too.
    assert set(summary["tasks"]["multi"]["versus_best_baseline"]) == set(ARCHS) - {"ridge"}
    assert [r[0] for r in (_row(multi, a, nth=2) for a in ("mean", "knn"))] == ["`mean`", "`knn`"]


def test_per_gene_win_rate(summary, report):
    # dnn 0.40 0.60 0.50 vs ridge 0.50 0.50 0.55 per gene: dnn wins on genes 1 and 3.
    c = summary["tasks"]["multi"]["versus_best_baseline"]["dnn"]
    assert (c["wins"], c["genes"], c["win_rate"]) == (2, 3, pytest.approx(2 / 3))
    single = summary["tasks"]["single"]["versus_best_baseline"]
    assert all(v["genes"] == 1 and v["win_rate"] in (0.0, 1.0) for v in single.values())
    assert "one target gene, so the win rate is 0 or 1" in _section(report, "single")
    assert "win rate is 0 or 1" not in _section(report, "multi")


def test_missing_architecture_is_listed_not_fatal(summary, report):
    assert summary["tasks"]["single"]["missing"] == {"lstm": "metrics/single/lstm.json"}
    assert "lstm" not in summary["tasks"]["single"]["versus_best_baseline"]
    assert "`lstm` (`metrics/single/lstm.json` missing)" in _section(report, "single")
    assert summary["tasks"]["multi"]["missing"] == {}


def test_figures_and_plot_data_are_written(reported, summary):
    reports = reported.root / "reports"
    for task in TASKS:
        for name in ("cv_rmse", "predicted_vs_observed", "per_gene_r2", "attention"):
            assert (reports / "figures" / f"{name}_{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (reports / "plots" / f"{name}_{task}.csv").stat().st_size > 0
        for path in summary["tasks"][task]["figures"].values():
            assert (reports / path).exists()
    cv = pd.read_csv(reports / "plots" / "cv_rmse_multi.csv")
    assert list(cv.columns) == ["arch", "rmse_mean", "rmse_std"]
    assert list(cv["arch"]) == list(ARCHS)
    assert cv.set_index("arch").loc["knn", "rmse_mean"] == pytest.approx(0.60)
    r2 = pd.read_csv(reports / "plots" / "per_gene_r2_multi.csv")
    assert len(r2) == 8 * 3


def test_predicted_vs_observed_uses_the_best_model_and_the_held_out_truth(reported, summary):
    assert summary["tasks"]["multi"]["best_model"] == "dnn"
    data = load_task(reported, "multi", held_out=True)
    table = pd.read_csv(reported.root / "reports" / "plots" / "predicted_vs_observed_multi.csv", dtype={"sample": str})
    assert len(table) == len(data.test_samples) * 3
    observed = table.pivot(index="sample", columns="gene", values="observed").loc[data.test_samples, data.target_genes]
    np.testing.assert_allclose(observed.to_numpy(), data.Y_test, rtol=1e-6)
    # The fixture's dnn predicts observed + mean per-gene RMSE (0.5).
    np.testing.assert_allclose(table["predicted"] - table["observed"], 0.5, atol=1e-5)


def test_attention_plot_data_ranks_genes_or_tokens(reported):
    table = pd.read_csv(reported.root / "reports" / "plots" / "attention_multi.csv", dtype={"label": str})
    lstm = table[table["arch"] == "attention_lstm"]
    gru = table[table["arch"] == "attention_gru"]
    assert set(lstm["kind"]) == {"gene"} and set(gru["kind"]) == {"token"}
    features = load_task(reported, "multi").feature_genes
    assert list(lstm["label"]) == features  # weights decrease along the feature list
    assert list(lstm["rank"]) == list(range(1, len(features) + 1))
    # Tokens of several genes are labelled by their first and last gene, by decreasing weight 0.5 0.3 0.2.
    chunks = np.array_split(np.arange(len(features)), 3)
    expected = [f"{features[chunks[t][0]]}…{features[chunks[t][-1]]} ({len(chunks[t])} genes)" for t in (1, 2, 0)]
    assert list(gru["label"]) == expected
    assert list(gru["weight"]) == [0.5, 0.3, 0.2]


def test_wide_predictions_take_observed_values_from_the_prepared_split(tmp_path):
    from benchmark.report import build

    config = make_project(tmp_path / "wide")
    edir = config.root / "artifacts" / "evaluation" / "multi" / "dnn"
    long = pd.read_csv(edir / "test_predictions.csv", dtype={"sample": str})
    wide = long.pivot(index="sample", columns="gene", values="predicted").reset_index()
    wide.to_csv(edir / "test_predictions.csv", index=False)
    _, _, plot_data = build(config)
    table = pd.read_csv(io.BytesIO(plot_data["predicted_vs_observed_multi.csv"]), dtype={"sample": str})
    merged = table.merge(long, on=["sample", "gene"], suffixes=("", "_evaluate"))
    assert len(merged) == len(long)
    np.testing.assert_allclose(merged["observed"], merged["observed_evaluate"], rtol=1e-6)
    np.testing.assert_allclose(merged["predicted"], merged["predicted_evaluate"], rtol=1e-9)


def test_results_from_different_data_versions_are_refused(tmp_path):
    config = make_project(tmp_path / "stale", tasks=("single", "multi"))
    path = config.root / "artifacts" / "evaluation" / "multi" / "knn" / "run.json"
    run = json.loads(path.read_text())
    run["data_version"] = "0123456789abcdef"
    path.write_text(json.dumps(run))
    with pytest.raises(UserError, match=r"artifacts/evaluation/multi/knn/run.json: data_version 0123456789abcdef differs"):
        compare(config)


def test_rerun_is_byte_identical(reported):
    reports = reported.root / "reports"
    files = ["summary.json", "benchmark.md"] + [f"figures/{p.name}" for p in (reports / "figures").iterdir()] \
        + [f"plots/{p.name}" for p in (reports / "plots").iterdir()]
    before = {f: (reports / f).read_bytes() for f in files}
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        compare(reported)
    assert {f: (reports / f).read_bytes() for f in files} == before
    assert json.loads(before["summary.json"]) is not None
    text = before["summary.json"].decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def test_summary_run_logged_to_mlflow(reported):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=reported.tracking_uri)
    for task in TASKS:
        experiment = client.get_experiment_by_name(f"gbtest-{task}")
        assert experiment is not None
        assert experiment.artifact_location == (reported.root / "mlruns").as_uri()
        runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'compare'")
        assert runs, task
        run = runs[0]
        assert run.info.status == "FINISHED"
        assert run.data.tags["best_model"] == "dnn"
        assert run.data.tags["best_baseline"] == "ridge"
        scale = 0.1 if task == "single" else 1.0
        assert run.data.metrics["dnn.cv_rmse_mean"] == pytest.approx(0.50 * scale)
        assert run.data.metrics["ridge.cv_rmse_mean"] == pytest.approx(0.54 * scale)
        assert "mean.test_pearson" not in run.data.metrics  # undefined: not logged
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"benchmark.md", "summary.json", "figures", "plots"} <= artifacts
        figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert f"figures/cv_rmse_{task}.png" in figures
    assert client.get_experiment_by_name("gbtest-multi") is not None


def test_compare_does_not_import_tensorflow(reported):
    code = ("import sys; from benchmark.config import load_config; from benchmark.report import compare; "
            f"compare(load_config({str(reported.root / 'params.yaml')!r}, root=__import__('pathlib').Path({str(reported.root)!r}))); "
            "print('TF' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'NO-TF')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO-TF"


def test_no_results_exits_2_with_one_line_naming_the_file(tmp_path):
    root = tmp_path / "empty"
    make_project(root, tasks=("multi",))  # single has no results at all
    done = subprocess.run([sys.executable, "-m", "benchmark", "compare", "--params", str(root / "params.yaml")],
                          capture_output=True, text=True, env=_env(), cwd=root, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "metrics/single/dnn.json: not found" in lines[0]
    assert "genebench evaluate --task single" in lines[0]
    assert not (root / "reports" / "summary.json").exists()


def test_malformed_metrics_file_names_the_key(tmp_path):
    config = make_project(tmp_path / "bad")
    path = config.root / "metrics" / "multi" / "ridge.json"
    data = json.loads(path.read_text())
    del data["cv"]["mae"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"metrics/multi/ridge.json: missing key 'cv.mae'"):
        compare(config)


def test_ttest_edge_cases():
    # Zero variance of the differences: undefined, not infinite.
    flat = corrected_resampled_ttest([0.1, 0.1, 0.1], 0.5)
    assert flat.t is None and flat.p_value is None and flat.mean_difference == pytest.approx(0.1)
    # Equal up to float rounding (0.55 - 0.50 vs 0.53 - 0.48) counts as no spread too.
    rounded = corrected_resampled_ttest([0.55 - 0.50, 0.53 - 0.48, 0.05], 0.5)
    assert rounded.t is None and rounded.p_value is None
    assert corrected_resampled_ttest([0.1], 0.5).t is None
    assert cv_test_train_ratio(560, 5) == pytest.approx(0.25)
    assert cv_test_train_ratio(100, 10) == pytest.approx(1 / 9)
    # d = [1, 2, 3]: mean 2, var 1, ratio 0.5 -> t = 2 / sqrt(1/3 + 1/2) = 2.1909.
    r = corrected_resampled_ttest([1.0, 2.0, 3.0], 0.5)
    assert r.t == pytest.approx(2 / math.sqrt(1 / 3 + 0.5)) and r.df == 2
