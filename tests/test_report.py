"""`genebench compare`: the leaderboard across datasets, and per dataset the tables, statistics, plots
and the MLflow summary run.

The inputs are the evaluate stage's files, written here in exactly its layout for a small
prepared project of three datasets (real data/ and artifacts/prepared/, a real sqlite
MLflow store): `alpha` with chosen numbers (hand-computed expectations), `synthetic` with a
noiseless truth (`truth.npy`) and held-out metrics computed from real predictions, and
`empty`, listed in params.yaml but never evaluated.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmark import ARCHS, TASKS
from benchmark.config import load_config
from benchmark.data import validation
from benchmark.data.canonical import Dataset, write_dataset
from benchmark.data.prepare import load_task, prepare
from benchmark.errors import UserError
from benchmark.metrics import regression_metrics
from benchmark.report import compare
from benchmark.report.leaderboard import METRICS as LEADERBOARD_METRICS
from benchmark.report.statistics import corrected_resampled_ttest, cv_test_train_ratio

PARAMS = """\
data: {dir: data}
datasets:
  alpha: {transform: none}
  synthetic: {transform: none}
  empty: {transform: none}
task: {top_k: 3, single_gene: null}
split: {test_size: 0.2, folds: 5, seed: 7}
tuning: {folds: 1}
mlflow: {tracking_uri: "sqlite:///mlflow.db", experiment: gbtest}
"""
N_SAMPLES, N_GENES = 50, 10  # 40 development samples: 5 folds of 8, fold 0 tunes, folds 1-4 are scored

# Per-scored-fold CV RMSE of each architecture (folds 1-4). dnn is the best model, ridge the best baseline.
FOLD_RMSE = {
    "dnn": [0.52, 0.49, 0.50, 0.51],
    "lstm": [0.57, 0.55, 0.58, 0.54],
    "gru": [0.55, 0.54, 0.53, 0.56],  # identical to ridge: differences all zero
    "attention_lstm": [0.55, 0.52, 0.54, 0.51],
    "attention_gru": [0.50, 0.58, 0.52, 0.55],
    "mean": [0.92, 0.88, 0.91, 0.89],
    "ridge": [0.55, 0.54, 0.53, 0.56],
    "knn": [0.61, 0.59, 0.62, 0.58],
}
# The deep models with a ridge base (training.base: ridge) also score each fold by that base
# alone (folds.csv's base_* columns); the others have training.base: none. dnn's base scores
# like ridge (it is one model): dnn is clearly better than its base. attention_lstm's base is
# within ±0.001 of it on every fold: clearly equivalent, with a spread.
BASE_FOLD_RMSE = {
    "dnn": [0.55, 0.54, 0.53, 0.56],
    "attention_lstm": [0.551, 0.519, 0.5405, 0.5095],
}
# knn's folds.csv is written without the `repeat` column (a file from before repeated CV).
NO_REPEAT = ("knn",)
# Held-out per-gene RMSE for alpha's multi task's three target genes.
GENE_RMSE = {
    "dnn": [0.40, 0.60, 0.50],
    "ridge": [0.50, 0.50, 0.55],
}
# On synthetic, deep models predict w * truth + (1 - w) * development mean.
TRUTH_WEIGHT = {"dnn": 0.9, "lstm": 0.5, "gru": 0.6, "attention_lstm": 0.8, "attention_gru": 0.7}


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "GENEBENCH_ROOT")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _truth(cfg) -> np.ndarray:
    return np.load(cfg.data_dir / "truth.npy")


def _predict(cfg, data, arch: str) -> np.ndarray:
    """A held-out prediction (n_test, n_targets) for synthetic: controls and baselines fitted for real."""
    from sklearn.linear_model import Ridge
    from sklearn.neighbors import KNeighborsRegressor

    dev_mean = data.Y_dev.mean(axis=0, keepdims=True).repeat(len(data.test_samples), 0).astype(np.float64)
    if arch == "mean":
        return dev_mean
    if arch == "ridge":
        return Ridge(alpha=1.0).fit(data.X_dev, data.Y_dev).predict(data.X_test)
    if arch == "knn":
        return KNeighborsRegressor(n_neighbors=5).fit(data.X_dev, data.Y_dev).predict(data.X_test)
    rows = [int(s.removeprefix("cell")) for s in data.test_samples]
    genes = [int(g.removeprefix("G")) for g in data.target_genes]
    truth = _truth(cfg)[np.ix_(rows, genes)].astype(np.float64)
    return TRUTH_WEIGHT[arch] * truth + (1 - TRUTH_WEIGHT[arch]) * dev_mean


def _write_results(cfg, task: str, arch: str) -> None:
    """The files `genebench evaluate --dataset <d> --task <task> --arch <arch>` writes.

    CV numbers are chosen (FOLD_RMSE); held-out numbers are chosen on alpha and computed
    from real predictions on synthetic.
    """
    data = load_task(cfg, task, held_out=True)
    genes = data.target_genes
    folds_rmse = np.array(FOLD_RMSE[arch]) * (0.1 if task == "single" else 1.0)
    constant = arch == "mean"  # the mean baseline predicts a constant: Pearson r undefined
    scored = data.scored_folds
    folds = pd.DataFrame({
        "fold": scored, "repeat": 0, "n_train": [len(data.folds[f][0]) for f in scored],
        "n_val": [len(data.folds[f][1]) for f in scored],
        "rmse": folds_rmse, "mae": folds_rmse * 0.8, "mse": folds_rmse ** 2,
        "r2": 1 - folds_rmse, "pearson": [None] * len(scored) if constant else list(0.9 - folds_rmse / 2),
        "rmse_scaled": folds_rmse / 4, "mae_scaled": folds_rmse / 5, "pearson_undefined": 3 if constant else 0,
        "epochs_trained": 0,
    })
    if arch in NO_REPEAT:
        folds = folds.drop(columns="repeat")
    has_base = arch in BASE_FOLD_RMSE
    if has_base:
        base_rmse = np.array(BASE_FOLD_RMSE[arch]) * (0.1 if task == "single" else 1.0)
        folds = folds.assign(base_rmse=base_rmse, base_mae=base_rmse * 0.8, base_mse=base_rmse ** 2,
                             base_r2=1 - base_rmse, base_pearson=0.9 - base_rmse / 2, base_rmse_scaled=base_rmse / 4,
                             base_mae_scaled=base_rmse / 5)

    def summary(column, frame=folds):
        values = frame[column].dropna().astype(float)
        if values.empty:  # evaluate writes {"mean": null, "std": null}; DESIGN.md's schema allows null
            return {"mean": None, "std": None} if task == "multi" else None
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1))}

    base_predicted = base_gene_rmse = base_test = None
    if cfg.dataset == "synthetic":
        predicted = _predict(cfg, data, arch).reshape(len(data.test_samples), len(genes))
        full = regression_metrics(data.Y_test, predicted, data.Y_dev.min(axis=0), data.Y_dev.max(axis=0))
        gene_rmse, gene_r2 = full["per_gene"]["rmse"], full["per_gene"]["r2"]
        test = {m: full[m] for m in ("rmse", "mae", "mse", "r2", "pearson", "rmse_scaled", "mae_scaled")}
        if has_base:  # the model's own ridge base: ridge's prediction
            base_predicted = _predict(cfg, data, "ridge").reshape(predicted.shape)
            base_full = regression_metrics(data.Y_test, base_predicted, data.Y_dev.min(axis=0), data.Y_dev.max(axis=0))
            base_gene_rmse = base_full["per_gene"]["rmse"]
            base_test = {m: base_full[m] for m in test}
    else:
        base = GENE_RMSE.get(arch, [float(folds_rmse.mean())] * 3)
        gene_rmse = base[: len(genes)] if task == "multi" else [float(folds_rmse.mean())]
        gene_r2 = [1 - r for r in gene_rmse]
        test_rmse = float(np.sqrt(np.mean(np.square(gene_rmse))))
        test = {"rmse": test_rmse, "mae": test_rmse * 0.8, "mse": test_rmse ** 2, "r2": 1 - test_rmse,
                "pearson": None if constant else 0.9 - test_rmse / 2,
                "rmse_scaled": test_rmse / 4, "mae_scaled": test_rmse / 5}
        offset = 0.0 if constant else float(np.mean(gene_rmse))
        predicted = data.Y_test.mean(axis=0, keepdims=True).repeat(len(data.test_samples), 0) if constant \
            else data.Y_test + offset
        if has_base:  # the base errs like ridge on alpha's multi task, 0.02 more than the model elsewhere
            base_gene_rmse = GENE_RMSE["ridge"][: len(genes)] if task == "multi" else [gene_rmse[0] + 0.02]
            base_predicted = data.Y_test + float(np.mean(base_gene_rmse))
            base_rmse_test = float(np.sqrt(np.mean(np.square(base_gene_rmse))))
            base_test = {"rmse": base_rmse_test, "mae": base_rmse_test * 0.8, "mse": base_rmse_test ** 2,
                         "r2": 1 - base_rmse_test, "pearson": 0.9 - base_rmse_test / 2,
                         "rmse_scaled": base_rmse_test / 4, "mae_scaled": base_rmse_test / 5}
    metrics = {
        "dataset": cfg.dataset, "task": task, "arch": arch,
        "n_dev": len(data.dev_samples), "n_test": len(data.test_samples),
        "cv": {m: summary(m) for m in ("rmse", "mae", "mse", "r2", "pearson", "rmse_scaled", "mae_scaled")},
        "test": test, "mlflow_run_id": f"run-{cfg.dataset}-{task}-{arch}",
    }
    if has_base:
        base_folds = folds[[c for c in folds.columns if c.startswith("base_")]].rename(columns=lambda c: c[5:])
        metrics["base"] = {"cv": {m: summary(m, base_folds) for m in metrics["cv"]}, "test": base_test}
    mfile = cfg.root / "metrics" / cfg.dataset / task / f"{arch}.json"
    mfile.parent.mkdir(parents=True, exist_ok=True)
    mfile.write_text(json.dumps(metrics))
    edir = cfg.root / "artifacts" / "evaluation" / cfg.dataset / task / arch
    edir.mkdir(parents=True, exist_ok=True)
    folds.to_csv(edir / "folds.csv", index=False)
    per_gene = pd.DataFrame({"gene": genes, "r2": gene_r2, "rmse": gene_rmse})
    if has_base:
        per_gene = per_gene.assign(base_r2=[1 - r for r in base_gene_rmse], base_rmse=base_gene_rmse)
    per_gene.to_csv(edir / "test_per_gene.csv", index=False)
    n, k = predicted.shape
    long = pd.DataFrame({"sample": np.repeat(data.test_samples, k), "gene": np.tile(genes, n),
                         "observed": data.Y_test.astype(np.float64).reshape(-1), "predicted": predicted.reshape(-1)})
    if has_base:
        long["base_predicted"] = np.asarray(base_predicted, dtype=np.float64).reshape(-1)
    long.to_csv(edir / "test_predictions.csv", index=False)
    features = data.feature_genes
    if arch == "attention_lstm":  # one token per feature gene: attention.csv and gene_importance.csv
        weight = np.linspace(0.3, 0.01, len(features))
        pd.DataFrame({"token": range(len(features)), "first_gene": features, "last_gene": features, "n_inputs": 1,
                      "mean_weight": weight, "std_weight": 0.01}).to_csv(edir / "attention.csv", index=False)
        pd.DataFrame({"rank": range(1, len(features) + 1), "gene": features, "module": range(len(features)),
                      "module_size": 1, "weight": weight, "std": 0.01}).to_csv(edir / "gene_importance.csv", index=False)
    if arch == "attention_gru":  # 3 tokens of several genes each: per-token table only
        chunks = np.array_split(np.arange(len(features)), 3)
        pd.DataFrame({"token": range(3), "first_gene": [features[c[0]] for c in chunks],
                      "last_gene": [features[c[-1]] for c in chunks], "n_inputs": [len(c) for c in chunks],
                      "mean_weight": [0.2, 0.5, 0.3], "std_weight": 0.05}).to_csv(edir / "attention.csv", index=False)
    _write_importance(cfg, edir, task, arch, features, list(genes))
    (edir / "run.json").write_text(json.dumps({"run_id": metrics["mlflow_run_id"], "data_version": data.data_version,
                                               "target_genes": list(genes)}))


# synthetic's generator: readout G00-G06 reads the programmes listed, G07-G09 are the products
# z0*z1, z1*z2, z0*z2 (the targets: the three most variable genes).
READS = [[0], [1], [2], [0], [1], [2], [0, 2]]
PROGRAMMES = {**{f"G{i:02d}": set(r) for i, r in enumerate(READS)}, "G07": {0, 1}, "G08": {1, 2}, "G09": {0, 2}}


def _write_importance(cfg, edir, task: str, arch: str, features: list[str], targets: list[str]) -> None:
    """permutation_importance.csv and its per-target table as evaluate writes them. On synthetic a
    model's importance is 1 for the genes that share a programme with the target, 0 elsewhere, plus
    a tie-break below 0.01 (AUROC 1); on alpha it falls along the feature list. `mean` predicts a
    constant, so permuting changes nothing: importance 0 everywhere (AUROC 0.5)."""
    rows = []
    for target in targets:
        for i, gene in enumerate(features):
            if arch == "mean":
                value = 0.0
            elif cfg.dataset == "synthetic":
                value = float(bool(PROGRAMMES[gene] & PROGRAMMES[target])) + 0.001 * i
            else:
                value = 0.01 * (len(features) - i)
            # The RMSE increase falls along the feature list (mean's is flat).
            increase = 0.0 if arch == "mean" else 0.01 * (len(features) - i)
            rows.append({"gene": gene, "target": target, "importance": value, "rmse_increase": increase})
    long = pd.DataFrame(rows)
    long.to_csv(edir / "permutation_importance_targets.csv", index=False)
    pooled = long.groupby("gene", sort=False)[["importance", "rmse_increase"]].mean().reset_index()
    pooled = pooled.sort_values(["importance", "gene"], ascending=[False, True], kind="stable")
    pooled.assign(rank=range(1, len(pooled) + 1)).to_csv(edir / "permutation_importance.csv", index=False)


def _ids(n: int, prefix: str, width: int = 2) -> list[str]:
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def _write_data(root: Path) -> None:
    """alpha: plain random expression. synthetic: three latent programmes; the three most
    variable genes are their pairwise products (what ridge cannot reach), the others linear
    read-outs; `truth.npy` holds the noiseless values."""
    rng = np.random.default_rng(0)
    X = rng.normal(2.0, 1.0, size=(N_SAMPLES, N_GENES)).astype(np.float32) * np.linspace(0.5, 2.0, N_GENES,
                                                                                          dtype=np.float32)
    write_dataset(Dataset(X=X, genes=_ids(N_GENES, "G"), samples=_ids(N_SAMPLES, "cell"),
                          provenance={"source": "test"}), root / "data" / "alpha")
    z = rng.standard_normal((N_SAMPLES, 3))
    mask = np.array([[p in r for r in READS] for p in range(3)], dtype=np.float64)  # each readout's programmes
    readouts = z @ (rng.normal(0.0, 0.6, size=(3, N_GENES - 3)) * mask)
    products = 3.0 * np.stack([z[:, 0] * z[:, 1], z[:, 1] * z[:, 2], z[:, 0] * z[:, 2]], axis=1)
    truth = (np.concatenate([readouts, products], axis=1) + 5.0).astype(np.float32)
    observed = (truth + rng.normal(0.0, 0.3, size=truth.shape)).astype(np.float32)
    write_dataset(Dataset(X=observed, genes=_ids(N_GENES, "G"), samples=_ids(N_SAMPLES, "cell"),
                          provenance={"source": "test synthetic"}, truth=truth,
                          programmes={"genes": {g: {"programmes": sorted(p)} for g, p in PROGRAMMES.items()}}),
                  root / "data" / "synthetic")


def make_project(root: Path, skip=(), evaluated=("alpha", "synthetic")):
    """A project with data, prepared splits and evaluate outputs; `skip`: (dataset, task, arch) left out."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(PARAMS)
    _write_data(root)
    config = load_config(root / "params.yaml", root=root)
    # Hand-sized: 40 development samples in 5 folds of 8, below prepare's 10 per part.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(validation, "MIN_SAMPLES_PER_PART", 8)
        for name in ("alpha", "synthetic"):
            prepare(config.for_dataset(name))
    for name in evaluated:
        cfg = config.for_dataset(name)
        for task in TASKS:
            for arch in ARCHS:
                if (name, task, arch) not in skip:
                    _write_results(cfg, task, arch)
    return config


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A fixture project (alpha's single lstm never evaluated, `empty` never) after one `compare`; its Config."""
    root = tmp_path_factory.mktemp("report") / "proj"
    config = make_project(root, skip={("alpha", "single", "lstm")})
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


def _section(report: str, dataset: str, task: str) -> str:
    start = report.index(f"### `{dataset}`, task `{task}`")
    end = report.find("\n### ", start + 1)
    return report[start:] if end < 0 else report[start:end]


def _leaderboard_section(report: str, task: str) -> str:
    start = report.index(f"### Task `{task}`")
    end = report.find("\n## ", start + 1)
    nxt = report.find("\n### ", start + 1)
    return report[start:min(e for e in (end, nxt) if e >= 0)]


def _sub(section: str, heading: str) -> str:
    """The `#### <heading>...` subsection of a dataset/task section."""
    start = section.index(f"#### {heading}")
    end = section.find("\n#### ", start + 1)
    return section[start:] if end < 0 else section[start:end]


def _row(section: str, arch: str, nth: int = 0) -> list[str]:
    rows = [line for line in section.splitlines() if line.startswith(f"| `{arch}`")]
    return [cell.strip() for cell in rows[nth].strip("|").split("|")]


def test_metrics_table_lists_every_architecture_with_cv_and_held_out_values(report):
    multi = _section(report, "alpha", "multi")
    for arch in ARCHS:
        assert _row(multi, arch), arch
    dnn = _row(multi, "dnn")
    # RMSE CV over the 4 scored folds: mean of 0.52 0.49 0.50 0.51 = 0.505; std (ddof=1) = sqrt(5e-4 / 3) = 0.0129.
    assert dnn[0] == "`dnn` (best CV RMSE)"
    assert dnn[1] == "0.5050 ± 0.0129"
    # Held-out RMSE pools the genes: sqrt((0.16 + 0.36 + 0.25) / 3) = 0.5066.
    assert dnn[2] == f"{math.sqrt((0.16 + 0.36 + 0.25) / 3):.4f}" == "0.5066"
    assert _row(multi, "ridge")[0] == "`ridge` (best baseline)"
    # The mean baseline's Pearson r is undefined (JSON null): a dash in CV and test columns.
    mean = _row(multi, "mean")
    assert mean[9:11] == ["–", "–"]
    assert mean[1] == "0.9000 ± 0.0183"


def test_scaled_table_sits_beside_the_seeds_figures_with_the_caveat(report):
    multi, single = _section(report, "alpha", "multi"), _section(report, "alpha", "single")
    scaled = _row(multi, "attention_lstm", nth=1)
    assert scaled[-1] == "0.1651 / 0.1040"
    folds = np.array(FOLD_RMSE["attention_lstm"]) / 4
    assert scaled[1] == f"{folds.mean():.4f} ± {np.std(folds, ddof=1):.4f}"
    assert _row(multi, "dnn", nth=1)[-1] == "–"
    assert _row(single, "attention_lstm", nth=1)[-1] == "0.0107 / 0.0078"
    assert "whether they are CV or held-out numbers, are unknown" in multi
    # This project's multi task has K=3, not the seed's 50: the report says so.
    assert "top 50 genes; this run's multi task has 3" in multi


def test_corrected_resampled_ttest_over_the_scored_folds_matches_hand_computation(summary):
    multi = summary["datasets"]["alpha"]["multi"]
    c = multi["versus_best_baseline"]["dnn"]
    assert multi["best_baseline"] == "ridge"
    assert multi["scored_folds"] == [1, 2, 3, 4]
    # d = dnn - ridge per scored fold = [-0.03, -0.05, -0.03, -0.05]; mean -0.04; var (ddof=1) = 4e-4 / 3.
    # 40 dev samples in 5 folds of 8: n_test/n_train = 8 / 32 = 0.25; (1/4 + 0.25) * 4e-4 / 3 = 2e-4 / 3.
    t = -0.04 / math.sqrt(2e-4 / 3)  # = -2 sqrt(6) = -4.8990
    assert c["mean_difference"] == pytest.approx(-0.04)
    assert c["test_train_ratio"] == pytest.approx(0.25)
    assert c["t"] == pytest.approx(t) and round(c["t"], 4) == -4.8990
    assert c["df"] == 3 and c["folds"] == 4
    assert c["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 3))
    assert 0.016 < c["p_value"] < 0.017  # t table, df 3: two-sided p for |t| = 4.899
    # The plain paired t-test has 1/4 in place of 0.5: t = -0.04 / sqrt(1e-4 / 3) = -6.93, a smaller p.
    plain = stats.ttest_rel(FOLD_RMSE["dnn"], FOLD_RMSE["ridge"])
    assert plain.statistic == pytest.approx(-0.04 / math.sqrt(1e-4 / 3))
    assert plain.pvalue < c["p_value"] / 2


def test_comparison_table_and_undefined_t(report, summary):
    multi = _section(report, "alpha", "multi")
    frequentist = _sub(multi, "Frequentist tests")
    dnn = _row(frequentist, "dnn")
    versus = summary["datasets"]["alpha"]["multi"]["versus_best_baseline"]
    holm = format(versus["dnn"]["p_value_holm"], ".3g")
    assert dnn == ["`dnn`", "-0.0400", "-4.90", "3", "0.0163", holm, "0.67 (2/3)"]
    # gru's fold RMSEs equal ridge's: the differences do not vary, t is undefined.
    assert versus["gru"]["t"] is None and versus["gru"]["p_value"] is None and versus["gru"]["p_value_holm"] is None
    assert _row(frequentist, "gru")[2:6] == ["–", "3", "–", "–"]
    # Every architecture but the best baseline itself is compared with it, the other baselines too.
    assert set(versus) == set(ARCHS) - {"ridge"}
    assert [r[0] for r in (_row(frequentist, a) for a in ("mean", "knn"))] == ["`mean`", "`knn`"]
    assert "decide no wording" in frequentist


def _holm_by_hand(p: dict) -> dict:
    """Holm's step-down: the i-th smallest of m p-values times (m - i), kept monotone, capped at 1."""
    ranked = sorted((v, k) for k, v in p.items() if v is not None)
    m, out, running = len(ranked), {k: None for k in p}, 0.0
    for i, (value, key) in enumerate(ranked):
        running = max(running, min(1.0, (m - i) * value))
        out[key] = running
    return out


def test_holm_adjustment_by_hand():
    from benchmark.report.statistics import holm_adjusted

    # Sorted: a 0.01 x 3 = 0.03; c 0.03 x 2 = 0.06; b 0.04 x 1 = 0.04, raised to 0.06 to stay monotone.
    # d's test is undefined: it stays None and is not one of the m = 3.
    got = holm_adjusted({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert got == {"a": pytest.approx(0.03), "b": pytest.approx(0.06), "c": pytest.approx(0.06), "d": None}
    assert holm_adjusted({"a": 0.4, "b": 0.7}) == {"a": pytest.approx(0.8), "b": pytest.approx(0.8)}  # 0.4 x 2
    assert holm_adjusted({"a": 0.6, "b": 0.9}) == {"a": 1.0, "b": 1.0}  # capped at 1
    assert holm_adjusted({"a": None}) == {"a": None} and holm_adjusted({}) == {}


def test_p_values_are_holm_adjusted_per_dataset_and_task(summary, report):
    for name in ("alpha", "synthetic"):
        for task in TASKS:
            versus = summary["datasets"][name][task]["versus_best_baseline"]
            raw = {arch: c["p_value"] for arch, c in versus.items()}
            expected = _holm_by_hand(raw)
            for arch, c in versus.items():
                if c["p_value"] is None:
                    assert c["p_value_holm"] is None
                else:
                    assert c["p_value_holm"] == pytest.approx(expected[arch], rel=1e-12)
                    assert c["p_value_holm"] >= c["p_value"]
    # alpha/multi: six defined tests (gru's is undefined). Ranked: mean (p 0.000233) x 6, dnn
    # (0.0163) x 5, knn (0.0741) x 4, then attention_lstm, lstm, attention_gru (p 0.48 to 0.79)
    # x 3, 2, 1, capped at 1. dnn beats ridge at p < 0.05 alone, not once adjusted for six.
    multi = summary["datasets"]["alpha"]["multi"]["versus_best_baseline"]
    assert sum(c["p_value"] is not None for c in multi.values()) == 6
    assert multi["mean"]["p_value_holm"] == pytest.approx(6 * multi["mean"]["p_value"])
    assert multi["dnn"]["p_value_holm"] == pytest.approx(5 * multi["dnn"]["p_value"])
    assert multi["knn"]["p_value_holm"] == pytest.approx(4 * multi["knn"]["p_value"])
    assert [multi[a]["p_value_holm"] for a in ("attention_lstm", "lstm", "attention_gru")] == [1.0, 1.0, 1.0]
    assert multi["dnn"]["p_value"] < 0.05 < multi["dnn"]["p_value_holm"]
    assert "p (Holm)" in _section(report, "alpha", "multi")
    assert "6 architectures whose test is defined" in _section(report, "alpha", "multi")


def test_per_gene_win_rate(summary, report):
    # dnn 0.40 0.60 0.50 vs ridge 0.50 0.50 0.55 per gene: dnn wins on genes 1 and 3.
    c = summary["datasets"]["alpha"]["multi"]["versus_best_baseline"]["dnn"]
    assert (c["wins"], c["genes"], c["win_rate"]) == (2, 3, pytest.approx(2 / 3))
    single = summary["datasets"]["alpha"]["single"]["versus_best_baseline"]
    assert all(v["genes"] == 1 and v["win_rate"] in (0.0, 1.0) for v in single.values())
    assert "one target gene, so the win rate is 0 or 1" in _section(report, "alpha", "single")
    assert "win rate is 0 or 1" not in _section(report, "alpha", "multi")


def test_missing_architecture_and_dataset_are_listed_not_fatal(summary, report):
    alpha = summary["datasets"]["alpha"]
    assert alpha["single"]["missing"] == {"lstm": "metrics/alpha/single/lstm.json"}
    assert "lstm" not in alpha["single"]["versus_best_baseline"]
    assert "`lstm` (`metrics/alpha/single/lstm.json` missing)" in _section(report, "alpha", "single")
    assert alpha["multi"]["missing"] == {}
    # `empty` is listed in params.yaml but has no results at all.
    for task in TASKS:
        empty = summary["datasets"]["empty"][task]
        assert empty["architectures"] == {}
        assert empty["missing"]["dnn"] == f"metrics/empty/{task}/dnn.json"
        assert "`empty` (no results)" in _leaderboard_section(report, task)
        assert all("empty" not in e["scaled_scores"] for e in summary["leaderboard"][task])
    assert "## Dataset `empty`" in report
    assert "**No results**: `metrics/empty/multi/dnn.json`" in report


def test_leaderboard_scales_between_the_controls(summary):
    """Held-out scores scaled between mean (0) and the positive control (1), checked by hand on alpha."""
    for task in TASKS:
        for name in ("alpha", "synthetic"):
            scaled = summary["datasets"][name][task]["scaled"]
            # The controls come out exactly at the ends of the scale, on every metric.
            for metric in LEADERBOARD_METRICS + ("score",):
                assert scaled["mean"][metric] == 0.0
                if name == "synthetic":
                    assert scaled["oracle"][metric] == 1.0
            assert ("oracle" in scaled) == (name == "synthetic")
    alpha = summary["datasets"]["alpha"]["multi"]
    assert alpha["controls"]["positive"] == {"name": "perfect prediction", "truth": None,
                                             "test": {"rmse": 0.0, "mae": 0.0, "mse": 0.0, "r2": 1.0}}
    # mean: RMSE 0.9, MAE 0.72, MSE 0.81, R² 0.1. dnn: RMSE r = sqrt(0.77 / 3), MAE 0.8 r, MSE r², R² 1 - r.
    r = math.sqrt(0.77 / 3)
    expected = {"rmse": (r - 0.9) / (0 - 0.9), "mae": (0.8 * r - 0.72) / (0 - 0.72),
                "mse": (r * r - 0.81) / (0 - 0.81), "r2": ((1 - r) - 0.1) / (1 - 0.1)}
    dnn = alpha["scaled"]["dnn"]
    for metric, value in expected.items():
        assert dnn[metric] == pytest.approx(value)
    assert dnn["score"] == pytest.approx(sum(expected.values()) / 4)
    assert dnn["rank"] == 1.0


def test_oracle_is_the_truth_scored_like_a_model(reported, summary):
    cfg = reported.for_dataset("synthetic")
    for task in TASKS:
        data = load_task(cfg, task, held_out=True)
        rows = [int(s.removeprefix("cell")) for s in data.test_samples]
        genes = [int(g.removeprefix("G")) for g in data.target_genes]
        truth = _truth(cfg)[np.ix_(rows, genes)]
        oracle = regression_metrics(data.Y_test, truth, data.Y_dev.min(axis=0), data.Y_dev.max(axis=0))
        positive = summary["datasets"]["synthetic"][task]["controls"]["positive"]
        assert positive["name"] == "oracle" and positive["truth"] == "data/synthetic/truth.npy"
        for metric in LEADERBOARD_METRICS:
            assert positive["test"][metric] == pytest.approx(oracle[metric], rel=1e-6)
        # Ridge reads linear read-outs of the programmes; the targets are their products: far below the oracle.
        scaled = summary["datasets"]["synthetic"][task]["scaled"]
        assert scaled["ridge"]["score"] < 0.5 < scaled["dnn"]["score"]
        assert scaled["oracle"]["rank"] is None


def test_leaderboard_ranks_on_mean_scaled_score_with_mean_rank(summary, report):
    for task in TASKS:
        entries = summary["leaderboard"][task]
        datasets = {"alpha": summary["datasets"]["alpha"][task]["scaled"],
                    "synthetic": summary["datasets"]["synthetic"][task]["scaled"]}
        scores = [e["mean_scaled_score"] for e in entries]
        assert scores == sorted(scores, reverse=True)
        by_arch = {e["arch"]: e for e in entries}
        assert by_arch["oracle"]["role"] == "positive control" and by_arch["oracle"]["mean_rank"] is None
        assert by_arch["oracle"]["mean_scaled_score"] == 1.0 and by_arch["oracle"]["datasets"] == 1
        assert by_arch["mean"]["role"] == "negative control" and by_arch["mean"]["mean_scaled_score"] == 0.0
        for arch, entry in by_arch.items():
            present = {d: s[arch] for d, s in datasets.items() if arch in s}
            assert entry["scaled_scores"] == {d: e["score"] for d, e in present.items()}
            assert entry["mean_scaled_score"] == pytest.approx(np.mean([e["score"] for e in present.values()]))
            if arch != "oracle":
                assert entry["mean_rank"] == pytest.approx(np.mean([e["rank"] for e in present.values()]))
        table = _leaderboard_section(report, task)
        assert _row(table, "dnn")[:3] == ["`dnn`", f"{by_arch['dnn']['mean_scaled_score']:.4f}",
                                         f"{by_arch['dnn']['mean_rank']:.2f}"]
        assert _row(table, "oracle")[0] == "`oracle` (positive control)"
        assert _row(table, "oracle")[1:] == ["1.0000", "–", "1/2", "–", "1.0000", "–"]  # no verdict: a yardstick
        assert _row(table, "mean")[0] == "`mean` (negative control)"
    # alpha's single task lacks lstm: its mean is over synthetic alone, and the table says so.
    lstm = {e["arch"]: e for e in summary["leaderboard"]["single"]}["lstm"]
    assert lstm["datasets"] == 1 and set(lstm["scaled_scores"]) == {"synthetic"}
    row = _row(_leaderboard_section(report, "single"), "lstm")
    assert row[3:6] == ["1/2", "–", f"{lstm['mean_scaled_score']:.4f}"]


def test_report_states_the_oracle_and_ridge_on_synthetic(summary, report):
    assert report.index("## Leaderboard") < report.index("## Dataset `alpha`")
    for task in TASKS:
        scaled = summary["datasets"]["synthetic"][task]["scaled"]
        text = _leaderboard_section(report, task)
        assert "`oracle` on `synthetic` scores 1.0000 (by construction 1 on every metric" in text
        assert f"`ridge` on `synthetic` scores {scaled['ridge']['score']:.4f} (the linear reference" in text
        assert f"![Leaderboard, task {task}](figures/leaderboard_{task}.png)" in text


def test_figures_and_plot_data_are_written(reported, summary):
    reports = reported.root / "reports"
    for name in ("alpha", "synthetic"):
        for task in TASKS:
            for figure in ("cv_rmse", "predicted_vs_observed", "per_gene_r2", "attention"):
                assert (reports / "figures" / f"{figure}_{name}_{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                assert (reports / "plots" / f"{figure}_{name}_{task}.csv").stat().st_size > 0
            for path in summary["datasets"][name][task]["figures"].values():
                assert (reports / path).exists()
    assert not list((reports / "figures").glob("*empty*"))
    cv = pd.read_csv(reports / "plots" / "cv_rmse_alpha_multi.csv")
    assert list(cv.columns) == ["arch", "rmse_mean", "rmse_std"]
    assert list(cv["arch"]) == list(ARCHS)
    assert cv.set_index("arch").loc["knn", "rmse_mean"] == pytest.approx(0.60)
    r2 = pd.read_csv(reports / "plots" / "per_gene_r2_alpha_multi.csv")
    assert len(r2) == 8 * 3


def test_leaderboard_heatmap_and_its_data(reported, summary):
    reports = reported.root / "reports"
    for task in TASKS:
        assert (reports / "figures" / f"leaderboard_{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        data = pd.read_csv(reports / "plots" / f"leaderboard_{task}.csv")
        assert list(data.columns) == ["arch", "role", "dataset", "scaled_score", "rank"]
        entries = summary["leaderboard"][task]
        assert list(dict.fromkeys(data["arch"])) == [e["arch"] for e in entries]  # leaderboard order
        assert list(dict.fromkeys(data["dataset"])) == ["alpha", "synthetic"]
        cells = data.set_index(["arch", "dataset"])["scaled_score"]
        assert cells[("oracle", "synthetic")] == 1.0 and math.isnan(cells[("oracle", "alpha")])
        assert cells[("mean", "alpha")] == 0.0
        dnn = next(e for e in entries if e["arch"] == "dnn")
        assert cells[("dnn", "alpha")] == pytest.approx(dnn["scaled_scores"]["alpha"], rel=1e-9)


def test_predicted_vs_observed_uses_the_best_model_and_the_held_out_truth(reported, summary):
    assert summary["datasets"]["alpha"]["multi"]["best_model"] == "dnn"
    data = load_task(reported.for_dataset("alpha"), "multi", held_out=True)
    table = pd.read_csv(reported.root / "reports" / "plots" / "predicted_vs_observed_alpha_multi.csv",
                        dtype={"sample": str})
    assert len(table) == len(data.test_samples) * 3
    observed = table.pivot(index="sample", columns="gene", values="observed").loc[data.test_samples, data.target_genes]
    np.testing.assert_allclose(observed.to_numpy(), data.Y_test, rtol=1e-6)
    # The fixture's dnn predicts observed + mean per-gene RMSE (0.5).
    np.testing.assert_allclose(table["predicted"] - table["observed"], 0.5, atol=1e-5)


def test_attention_plot_data_ranks_genes_or_tokens(reported):
    table = pd.read_csv(reported.root / "reports" / "plots" / "attention_alpha_multi.csv", dtype={"label": str})
    lstm = table[table["arch"] == "attention_lstm"]
    gru = table[table["arch"] == "attention_gru"]
    assert set(lstm["kind"]) == {"gene"} and set(gru["kind"]) == {"token"}
    features = load_task(reported.for_dataset("alpha"), "multi").feature_genes
    assert list(lstm["label"]) == features  # weights decrease along the feature list
    assert list(lstm["rank"]) == list(range(1, len(features) + 1))
    # Tokens of several genes are labelled by their first and last gene, by decreasing weight 0.5 0.3 0.2.
    chunks = np.array_split(np.arange(len(features)), 3)
    expected = [f"{features[chunks[t][0]]}…{features[chunks[t][-1]]} ({len(chunks[t])} genes)" for t in (1, 2, 0)]
    assert list(gru["label"]) == expected
    assert list(gru["weight"]) == [0.5, 0.3, 0.2]


def _pair_auroc(scores: list[float], labels: list[int]) -> float:
    """AUROC as the share of (positive, negative) pairs ranked right, ties half: no sklearn."""
    pairs = [(p, n) for p, lp in zip(scores, labels) if lp for n, ln in zip(scores, labels) if not ln]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_summary_scores_each_importance_against_the_planted_genes(reported, summary, report):
    for task in TASKS:
        data = load_task(reported.for_dataset("synthetic"), task)
        entries = summary["datasets"]["synthetic"][task]["importance"]
        assert set(entries) == set(ARCHS)
        for arch, entry in entries.items():
            assert set(entry) == {"attention_auroc", "token_ceiling_auroc", "permutation_auroc",
                                  "rmse_increase_auroc", "rank_correlation", "targets"}
            assert entry["targets"] == len(data.target_genes)
            # Permutation importance is the truth itself (1.0); mean's is flat (0.5, chance).
            assert entry["permutation_auroc"] == pytest.approx(0.5 if arch == "mean" else 1.0), arch
            # Only attention_lstm has a gene table (attention_gru's tokens are modules without one).
            assert (entry["attention_auroc"] is None) == (arch != "attention_lstm"), arch
            assert (entry["rank_correlation"] is None) == (arch != "attention_lstm"), arch
            # One gene per token: a perfect attention could rank every driving gene first.
            assert entry["token_ceiling_auroc"] == (1.0 if arch == "attention_lstm" else None), arch
        # This synthetic is not the bundled positive control: no near-oracle knows its formula.
        assert summary["datasets"]["synthetic"][task]["importance_ceiling"] is None
        # attention_lstm's weights fall along the feature list; per target, against the genes that
        # share a programme with it, then the mean over targets.
        features = data.feature_genes
        expected = np.mean([_pair_auroc(list(-np.arange(len(features))),
                                        [int(bool(PROGRAMMES[g] & PROGRAMMES[t])) for g in features])
                            for t in data.target_genes])
        assert entries["attention_lstm"]["attention_auroc"] == pytest.approx(expected)
        for arch, entry in entries.items():  # the RMSE increase, scored beside it, falls along the list too
            assert entry["rmse_increase_auroc"] == pytest.approx(0.5 if arch == "mean" else expected), arch
        pooled = pd.read_csv(reported.root / "artifacts" / "evaluation" / "synthetic" / task / "attention_lstm"
                             / "permutation_importance.csv").set_index("gene").reindex(features)["importance"]
        rho = stats.spearmanr(-np.arange(len(features)), pooled).statistic
        assert entries["attention_lstm"]["rank_correlation"] == pytest.approx(rho)
    # multi: targets G07 (z0 z1), G08 (z1 z2), G09 (z0 z2) over readouts G00-G06 by hand: 6/10, 2/10, 4/10.
    assert summary["datasets"]["synthetic"]["multi"]["importance"]["attention_lstm"]["attention_auroc"] == \
        pytest.approx(0.4)
    # alpha has no planted truth: AUROCs null; the rank correlation needs none (both fall along the list).
    alpha = summary["datasets"]["alpha"]["multi"]["importance"]
    assert alpha["attention_lstm"] == {"attention_auroc": None, "token_ceiling_auroc": None, "permutation_auroc": None,
                                       "rmse_increase_auroc": None, "rank_correlation": 1.0, "targets": 0}
    assert alpha["ridge"]["rank_correlation"] is None
    table = _sub(_section(report, "synthetic", "multi"), "Importance against the planted genes")
    assert _row(table, "attention_lstm") == ["`attention_lstm`", "0.400", "1.000", "1.000", "0.400",
                                             f"{entries['attention_lstm']['rank_correlation']:.3f}"]
    assert _row(table, "mean")[1:5] == ["–", "–", "0.500", "0.500"]
    assert "mean over 3 targets" in table
    assert "No planted truth" in _sub(_section(report, "alpha", "multi"), "Importance against the planted genes")


def test_the_token_ceiling_is_the_best_map_constant_within_tokens():
    """Scoring genes by their token's share of driving genes beats or ties every other map that
    gives a token's genes one weight (all orderings of three tokens, ties included)."""
    import itertools

    from benchmark.report.importance import auroc, token_ceiling

    tokens = pd.Series([0, 0, 1, 1, 1, 2, 2])
    labels = np.array([1, 1, 1, 0, 0, 1, 0])
    # Token shares 1, 1/3, 1/2: positives g0 g1 beat all 3 negatives; g5 beats g3 g4, ties g6;
    # g2 ties g3 g4, loses to g6: (6 + 2.5 + 1) / 12.
    assert token_ceiling(tokens, labels) == pytest.approx(9.5 / 12)
    best = max(auroc(pd.Series(np.array(scores, dtype=float)[tokens]), labels)
               for scores in itertools.product(range(3), repeat=3))
    assert token_ceiling(tokens, labels) == pytest.approx(best)
    assert token_ceiling(pd.Series([0, 1, 2]), np.array([1, 0, 1])) == 1.0  # one gene per token


def test_a_malformed_importance_file_names_the_file_and_column(tmp_path):
    from benchmark.report import build

    config = make_project(tmp_path / "bad", evaluated=("alpha", "synthetic"))
    path = config.root / "artifacts" / "evaluation" / "alpha" / "multi" / "ridge" / "permutation_importance.csv"
    good = path.read_text()
    pd.read_csv(path).drop(columns="importance").to_csv(path, index=False)
    with pytest.raises(UserError, match=r"alpha/multi/ridge/permutation_importance.csv: missing column 'importance'"):
        build(config)
    path.write_text(good)
    programmes = config.root / "data" / "synthetic" / "programmes.json"
    programmes.write_text(json.dumps({"genes": {"G00": {"programmes": "0"}}}))
    with pytest.raises(UserError, match=r"data/synthetic/programmes.json: genes.G00.programmes: expected a list"):
        build(config)


def test_wide_predictions_take_observed_values_from_the_prepared_split(tmp_path):
    from benchmark.report import build

    config = make_project(tmp_path / "wide", evaluated=("alpha",))
    edir = config.root / "artifacts" / "evaluation" / "alpha" / "multi" / "dnn"
    long = pd.read_csv(edir / "test_predictions.csv", dtype={"sample": str})
    wide = long.pivot(index="sample", columns="gene", values="predicted").reset_index()
    wide.to_csv(edir / "test_predictions.csv", index=False)
    summary, _, plot_data = build(config)
    table = pd.read_csv(io.BytesIO(plot_data["predicted_vs_observed_alpha_multi.csv"]), dtype={"sample": str})
    merged = table.merge(long, on=["sample", "gene"], suffixes=("", "_evaluate"))
    assert len(merged) == len(long)
    np.testing.assert_allclose(merged["observed"], merged["observed_evaluate"], rtol=1e-6)
    np.testing.assert_allclose(merged["predicted"], merged["predicted_evaluate"], rtol=1e-9)
    # synthetic and empty have no results here: listed, and the leaderboard stands on alpha alone.
    assert summary["datasets"]["synthetic"]["multi"]["architectures"] == {}
    assert {d for e in summary["leaderboard"]["multi"] for d in e["scaled_scores"]} == {"alpha"}


def test_dataset_without_the_negative_control_is_left_off_the_leaderboard(tmp_path):
    from benchmark.report import build
    from benchmark.report.markdown import render

    config = make_project(tmp_path / "nomean", skip={("synthetic", "multi", "mean")})
    summary, _, _ = build(config)
    section = summary["datasets"]["synthetic"]["multi"]
    assert section["scaled"] == {} and section["controls"]["negative"]["test"] is None
    assert {d for e in summary["leaderboard"]["multi"] for d in e["scaled_scores"]} == {"alpha"}
    assert all(e["arch"] != "oracle" for e in summary["leaderboard"]["multi"])
    text = _leaderboard_section(render(summary, config.datasets), "multi")
    assert "`synthetic` (`mean`, the negative control, has no results)" in text


def test_results_from_different_data_versions_are_refused(tmp_path):
    config = make_project(tmp_path / "stale", evaluated=("alpha",))
    path = config.root / "artifacts" / "evaluation" / "alpha" / "multi" / "knn" / "run.json"
    run = json.loads(path.read_text())
    run["data_version"] = "0123456789abcdef"
    path.write_text(json.dumps(run))
    with pytest.raises(UserError, match=r"artifacts/evaluation/alpha/multi/knn/run.json: data_version "
                                        r"0123456789abcdef differs.*genebench evaluate --dataset alpha --task multi"):
        compare(config)


def test_rerun_is_byte_identical(reported):
    reports = reported.root / "reports"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        # Both runs here: the reports on disk may come from another test's compare, in a
        # subprocess whose imports (and so matplotlib's settings) differ from this one's.
        compare(reported)
        files = ["summary.json", "benchmark.md"] + [f"figures/{p.name}" for p in (reports / "figures").iterdir()] \
            + [f"plots/{p.name}" for p in (reports / "plots").iterdir()]
        before = {f: (reports / f).read_bytes() for f in files}
        compare(reported)
    assert {f: (reports / f).read_bytes() for f in files} == before
    text = before["summary.json"].decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert set(json.loads(text)) == {"leaderboard", "friedman", "compare", "datasets", "seed_reported"}


def test_one_summary_run_holds_the_leaderboard_table_and_few_metrics(reported, summary, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=reported.tracking_uri)
    experiment = client.get_experiment_by_name("gbtest-leaderboard")
    assert experiment is not None
    assert experiment.artifact_location == (reported.root / "mlruns").as_uri()
    # No per-(dataset, task) compare runs any more: the evaluate experiments are left alone.
    assert client.get_experiment_by_name("gbtest-alpha-multi") is None
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'compare'")
    assert runs
    run = runs[-1]
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["stage"] == "compare" and tags["git_commit"]
    for task in TASKS:
        top = next(e["arch"] for e in summary["leaderboard"][task] if e["arch"] != "oracle")
        assert tags[f"best_model_{task}"] == top
    assert tags["missing"] == "empty/single,empty/multi"
    # The verdicts as tags: one per (dataset, task, architecture but the reference), with the ablation.
    verdict_tags = {k: v for k, v in tags.items() if k.startswith("verdict.")}
    assert len(verdict_tags) == sum(len(s.get("verdicts", {})) for t in summary["datasets"].values()
                                    for s in t.values()) == 2 * 7 + 7 + 6
    assert tags["verdict.alpha.multi.dnn"] == "better vs ridge (P=0.98); vs base: better (P=0.98)"
    assert tags["verdict.alpha.multi.gru"] == "equivalent vs ridge (P=1.00)"
    assert tags["verdict.alpha.multi.attention_lstm"].startswith("undecided vs ridge (P(better)=0.")
    assert tags["verdict.alpha.multi.attention_lstm"].endswith("; vs base: equivalent (P=0.99)")
    assert "verdict.alpha.multi.ridge" not in tags and "verdict.omitted" not in tags
    metrics = run.data.metrics
    assert 0 < len(metrics) <= 20
    best_multi = next(e for e in summary["leaderboard"]["multi"] if e["arch"] != "oracle")
    assert metrics["multi.best_mean_scaled_score"] == pytest.approx(best_multi["mean_scaled_score"])
    assert metrics["synthetic.multi.ridge_scaled_score"] == pytest.approx(
        summary["datasets"]["synthetic"]["multi"]["scaled"]["ridge"]["score"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"benchmark.md", "summary.json", "leaderboard.json", "figures", "plots"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/leaderboard_multi.png", "figures/cv_rmse_synthetic_multi.png"} <= figures
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "leaderboard.json", str(tmp_path))).read_text())
    frame = pd.DataFrame(table["data"], columns=table["columns"])
    assert len(frame) == sum(len(e) for e in summary["leaderboard"].values())
    assert {"task", "position", "arch", "role", "mean_scaled_score", "mean_rank", "scaled_alpha",
            "scaled_synthetic", "scaled_empty", "verdict_vs_ridge_alpha"} <= set(frame.columns)
    dnn = frame[(frame["task"] == "multi") & (frame["arch"] == "dnn")].iloc[0]
    assert dnn["verdict_vs_ridge_alpha"] == "better (P=0.98)"
    oracle = frame[(frame["task"] == "multi") & (frame["arch"] == "oracle")].iloc[0]
    assert oracle["role"] == "positive control" and oracle["scaled_synthetic"] == 1.0


def test_compare_does_not_import_tensorflow(reported):
    code = ("import sys; from benchmark.config import load_config; from benchmark.report import compare; "
            f"compare(load_config({str(reported.root / 'params.yaml')!r}, root=__import__('pathlib').Path({str(reported.root)!r}))); "
            "print('TF' if 'tensorflow' in sys.modules or 'keras' in sys.modules else 'NO-TF')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "NO-TF"


def test_no_results_on_any_dataset_exits_2_with_one_line_naming_the_file(tmp_path):
    root = tmp_path / "none"
    make_project(root, evaluated=())
    done = subprocess.run([sys.executable, "-m", "benchmark", "compare", "--params", str(root / "params.yaml")],
                          capture_output=True, text=True, env=_env(), cwd=root, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "metrics/alpha/single/dnn.json: not found, and no dataset has results" in lines[0]
    assert "genebench evaluate --dataset" in lines[0]
    assert not (root / "reports" / "summary.json").exists()


def test_malformed_metrics_file_names_the_key(tmp_path):
    config = make_project(tmp_path / "bad", evaluated=("alpha",))
    path = config.root / "metrics" / "alpha" / "multi" / "ridge.json"
    data = json.loads(path.read_text())
    del data["cv"]["mae"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"metrics/alpha/multi/ridge.json: missing key 'cv.mae'"):
        compare(config)
    data = json.loads(path.read_text())
    path.write_text(json.dumps(dict(data, dataset="synthetic")))
    with pytest.raises(UserError, match=r"metrics/alpha/multi/ridge.json: holds dataset 'synthetic', expected 'alpha'"):
        compare(config)


def test_malformed_base_section_of_a_metrics_file_names_the_key(tmp_path):
    config = make_project(tmp_path / "badbase", evaluated=("alpha",))
    path = config.root / "metrics" / "alpha" / "multi" / "dnn.json"
    data = json.loads(path.read_text())
    assert "base" in data  # the fixture's dnn has a ridge base
    del data["base"]["cv"]["rmse"]
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"metrics/alpha/multi/dnn.json: missing key 'base.cv.rmse'"):
        compare(config)
    path.write_text(json.dumps(dict(data, base=[1, 2])))
    with pytest.raises(UserError, match=r"metrics/alpha/multi/dnn.json: base: expected"):
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


# --- The verdicts (DESIGN.md, protocol item 6) ---------------------------------------------


def _t3_cdf(t: float) -> float:
    """Student t CDF with 3 degrees of freedom in closed form (no scipy):
    F(t) = 1/2 + (1/pi) (t / (sqrt 3 (1 + t^2/3)) + arctan(t / sqrt 3))."""
    return 0.5 + (t / (math.sqrt(3) * (1 + t * t / 3)) + math.atan(t / math.sqrt(3))) / math.pi


def test_bayesian_correlated_ttest_matches_hand_computation():
    from benchmark.report.statistics import bayesian_correlated_ttest

    # alpha/multi, dnn - ridge per scored fold: d = [-0.03, -0.05, -0.03, -0.05], n = 4.
    # mean -0.04; var (ddof=1) = 4 * 0.01**2 / 3 = 4e-4 / 3. Folds of 8 held out of 40: rho = 0.2,
    # rho / (1 - rho) = 0.25; scale^2 = (1/4 + 0.25) * 4e-4 / 3 = 2e-4 / 3, scale = 0.0081650.
    # rope = 0.01 x ridge's mean CV RMSE 0.545 = 0.00545.
    # P(better) = F3((-0.00545 + 0.04) / 0.0081650) = F3(4.2315) = 0.9879;
    # P(worse) = 1 - F3((0.00545 + 0.04) / 0.0081650) = 1 - F3(5.5665) = 0.0057; P(equivalent) the rest.
    scale = math.sqrt(2e-4 / 3)
    r = bayesian_correlated_ttest([-0.03, -0.05, -0.03, -0.05], rho=0.2, rope=0.00545)
    assert (r.df, r.n, r.location) == (3, 4, pytest.approx(-0.04))
    assert r.scale == pytest.approx(scale) and round(scale, 7) == 0.0081650
    assert r.p_better == pytest.approx(_t3_cdf((0.04 - 0.00545) / scale), abs=1e-12)
    assert r.p_worse == pytest.approx(1 - _t3_cdf((0.04 + 0.00545) / scale), abs=1e-12)
    assert (round(r.p_better, 4), round(r.p_worse, 4)) == (0.9879, 0.0057)
    assert r.p_better + r.p_equivalent + r.p_worse == pytest.approx(1.0, abs=1e-15)
    # rho = 0 is the plain (uncorrelated) Bayesian t-test: a narrower posterior, a surer P(better).
    plain = bayesian_correlated_ttest([-0.03, -0.05, -0.03, -0.05], rho=0.0, rope=0.00545)
    assert plain.scale == pytest.approx(math.sqrt(1e-4 / 3)) and plain.p_better > r.p_better


@pytest.mark.parametrize("runs, folds", [(1, 5), (2, 5), (3, 10)])
def test_bayesian_correlated_ttest_agrees_with_baycomp(runs, folds):
    """baycomp's correlated t-test fixes rho = 1/k (k folds a run); ours takes rho from the fold sizes."""
    baycomp = pytest.importorskip("baycomp")
    from benchmark.report.statistics import bayesian_correlated_ttest

    rng = np.random.default_rng(runs * 100 + folds)
    reference = rng.normal(0.5, 0.02, runs * folds)
    for shift in (-0.01, -0.001, 0.0, 0.004):
        model = reference + rng.normal(shift, 0.005, runs * folds)
        rope = 0.01 * reference.mean()
        ours = bayesian_correlated_ttest(model - reference, rho=1 / folds, rope=rope)
        # baycomp's difference is y - x and its p_left P(y - x < -rope): x the reference, y the model.
        left, within, right = baycomp.two_on_single(reference, model, rope=rope, runs=runs)
        assert (ours.p_better, ours.p_equivalent, ours.p_worse) == (
            pytest.approx(left, abs=1e-12), pytest.approx(within, abs=1e-12), pytest.approx(right, abs=1e-12))
        posterior = baycomp.CorrelatedTTest(reference, model, rope=rope, runs=runs)
        assert ours.scale == pytest.approx(math.sqrt(posterior.var)) and ours.df == posterior.df
    # Zero variance, where baycomp too answers with a point mass: d = 0.25 on every fold.
    x = np.array([0.5, 0.25, 0.75, 0.5, 0.25])
    assert baycomp.two_on_single(x, x - 0.25, rope=0.1) == (1.0, 0.0, 0.0)
    flat = bayesian_correlated_ttest((x - 0.25) - x, rho=0.2, rope=0.1)
    assert (flat.p_better, flat.p_equivalent, flat.p_worse, flat.scale) == (1.0, 0.0, 0.0, 0.0)


def test_bayesian_correlated_ttest_edge_cases():
    from benchmark.report.statistics import bayesian_correlated_ttest, verdict

    # Fewer than two resamples: undefined, undecided.
    for d in ([], [-0.2]):
        r = bayesian_correlated_ttest(d, rho=0.2, rope=0.01)
        assert (r.p_better, r.p_equivalent, r.p_worse) == (None, None, None)
        assert verdict(r, 0.95) == "undecided"
    # No spread (up to rounding): a point mass at mean(d), placed against the rope.
    assert bayesian_correlated_ttest([0.0, 0.0, 0.0], 0.2, 0.01).p_equivalent == 1.0
    same = [0.55 - 0.50, 0.53 - 0.48, 0.05]  # equal up to float rounding
    assert bayesian_correlated_ttest(same, 0.2, 0.01).p_worse == 1.0
    assert bayesian_correlated_ttest(same, 0.2, 0.06).p_equivalent == 1.0
    assert bayesian_correlated_ttest([-0.01, -0.01], 0.2, 0.01).p_equivalent == 1.0  # on the edge: inside
    # rope 0: nothing is equivalent unless the point mass sits on 0.
    r = bayesian_correlated_ttest([-0.03, -0.05, -0.03, -0.05], 0.2, 0.0)
    assert r.p_equivalent == 0.0 and r.p_better == pytest.approx(_t3_cdf(0.04 / math.sqrt(2e-4 / 3)))
    with pytest.raises(ValueError, match="rho"):
        bayesian_correlated_ttest([0.1, 0.2], rho=1.0, rope=0.0)


def test_verdict_thresholds():
    from benchmark.report.statistics import BayesianTTest, verdict

    def posterior(better, equivalent, worse):
        return BayesianTTest(better, equivalent, worse, 0.0, 1.0, 3, 4, 0.2, 0.01)

    assert verdict(posterior(0.95, 0.04, 0.01), 0.95) == "better"  # at the threshold: decided
    assert verdict(posterior(0.9499, 0.04, 0.0101), 0.95) == "undecided"  # just below
    assert verdict(posterior(0.01, 0.9501, 0.0399), 0.95) == "equivalent"
    assert verdict(posterior(0.01, 0.9499, 0.0401), 0.95) == "undecided"
    assert verdict(posterior(0.0, 0.0, 1.0), 0.95) == "worse"
    assert verdict(posterior(0.0, 0.0501, 0.9499), 0.95) == "undecided"
    assert verdict(posterior(0.41, 0.52, 0.07), 0.95) == "undecided"
    assert verdict(posterior(0.41, 0.52, 0.07), 0.51) == "equivalent"  # another confidence, another verdict


def test_paired_bootstrap_of_the_held_out_rmse_difference():
    import hashlib

    from benchmark.report.statistics import BOOTSTRAP_RESAMPLES, paired_bootstrap_rmse, stable_seed

    rng = np.random.default_rng(3)
    observed = rng.normal(size=(40, 5))
    # Errors the same on every entry: every resample gives RMSE 0.1 - 0.2, so the interval is that point.
    exact = paired_bootstrap_rmse(observed, observed + 0.1, observed - 0.2, seed=1)
    assert exact.difference == pytest.approx(-0.1) and exact.ci95 == (pytest.approx(-0.1), pytest.approx(-0.1))
    model = observed + rng.normal(0, 0.3, observed.shape)
    reference = observed + rng.normal(0, 0.5, observed.shape)
    a = paired_bootstrap_rmse(observed, model, reference, seed=stable_seed("alpha", "multi", "dnn", "ridge"))
    b = paired_bootstrap_rmse(observed, model, reference, seed=stable_seed("alpha", "multi", "dnn", "ridge"))
    assert a == b and a.resamples == BOOTSTRAP_RESAMPLES == 2000  # deterministic
    # The point estimate: pooled RMSE over all 40 x 5 entries, as benchmark.metrics defines it.
    rmse = lambda p: math.sqrt(np.mean((p - observed) ** 2))  # noqa: E731
    assert a.difference == pytest.approx(rmse(model) - rmse(reference))
    assert a.ci95[0] < a.difference < a.ci95[1] < 0
    # The seed is a hash of the names, not Python's salted hash(): the same on every run.
    digest = hashlib.sha256("alpha\x1fmulti\x1fdnn\x1fridge".encode()).digest()[:8]
    assert a.seed == int.from_bytes(digest, "little")
    other = paired_bootstrap_rmse(observed, model, reference, seed=stable_seed("alpha", "multi", "lstm", "ridge"))
    assert other.ci95 != a.ci95 and other.difference == a.difference
    # Samples are drawn whole (all their genes together): a model that errs on one sample only has
    # resamples without that sample, where it ties the reference; so the interval reaches 0.
    spiky = observed.copy()
    spiky[0] += 1.0
    one = paired_bootstrap_rmse(observed, spiky, observed, seed=5)
    assert one.ci95[0] == 0.0 and one.difference > 0


def _verdicts(summary, dataset="alpha", task="multi"):
    return summary["datasets"][dataset][task]["verdicts"]


def test_summary_verdicts_winner_equivalent_undecided(summary):
    multi = summary["datasets"]["alpha"]["multi"]
    verdicts = _verdicts(summary)
    assert multi["best_baseline"] == "ridge" and "ridge" not in verdicts  # the reference: no verdict on itself
    assert set(verdicts) == set(ARCHS) - {"ridge"}
    assert multi["rho"] == pytest.approx(0.2) and multi["repeats"] == 1
    dnn = verdicts["dnn"]
    scale = math.sqrt(2e-4 / 3)
    assert set(dnn) == {"against", "verdict", "p_better", "p_equivalent", "p_worse", "rope", "difference",
                        "resamples", "rho", "held_out", "versus_base"}
    assert (dnn["against"], dnn["verdict"], dnn["resamples"]) == ("ridge", "better", 4)
    assert dnn["rope"] == pytest.approx(0.01 * 0.545) and dnn["difference"] == pytest.approx(-0.04)
    assert dnn["p_better"] == pytest.approx(_t3_cdf((0.04 - 0.00545) / scale), abs=1e-12)
    # Held out: dnn predicts observed + 0.5 on every entry, ridge observed + mean(0.50, 0.50, 0.55):
    # RMSE 0.5 - 0.51667 = -1/60 on every bootstrap resample too.
    held = dnn["held_out"]
    assert held["difference"] == pytest.approx(-1 / 60, abs=1e-6)
    assert held["ci95"] == [pytest.approx(-1 / 60, abs=1e-6)] * 2
    assert (held["wins"], held["genes"], held["win_rate"]) == (2, 3, pytest.approx(2 / 3))
    # gru's folds equal ridge's: a point mass at 0, inside the rope.
    assert verdicts["gru"]["verdict"] == "equivalent"
    assert (verdicts["gru"]["p_equivalent"], verdicts["gru"]["p_better"]) == (1.0, 0.0)
    # attention_lstm: d = [0, -0.02, 0.01, -0.05], mean -0.015, a wide posterior: undecided.
    al = verdicts["attention_lstm"]
    assert al["verdict"] == "undecided" and al["difference"] == pytest.approx(-0.015)
    assert max(al["p_better"], al["p_equivalent"], al["p_worse"]) < 0.95
    assert verdicts["mean"]["verdict"] == "worse" and verdicts["mean"]["p_worse"] > 0.95
    # On synthetic the held-out predictions differ per sample: a real interval around the difference.
    syn = _verdicts(summary, "synthetic")["dnn"]["held_out"]
    assert syn["ci95"][0] < syn["difference"] < syn["ci95"][1] < 0


def test_versus_base_only_for_deep_models_with_base_columns(summary):
    for dataset in ("alpha", "synthetic"):
        for task in TASKS:
            for arch, entry in _verdicts(summary, dataset, task).items():
                assert (entry["versus_base"] is not None) == (arch in BASE_FOLD_RMSE), (dataset, task, arch)
    dnn = _verdicts(summary)["dnn"]["versus_base"]
    # dnn's base scores like ridge on every fold: the same test as against ridge.
    assert dnn["against"] == "base" and dnn["verdict"] == "better"
    assert dnn["p_better"] == pytest.approx(_verdicts(summary)["dnn"]["p_better"], abs=1e-12)
    # Held out, its base errs like ridge's per-gene RMSEs: -1/60 again, and the per-gene win rate 2/3.
    assert dnn["held_out"]["difference"] == pytest.approx(-1 / 60, abs=1e-6)
    assert dnn["held_out"]["wins"] == 2
    # attention_lstm - its base: d = [-0.001, 0.001, -0.0005, 0.0005], mean 0, var 2.5e-6 / 3;
    # scale sqrt(0.5 var) = 6.455e-4; rope 0.01 x the base's mean 0.53 = 0.0053:
    # P(equivalent) = 2 F3(0.0053 / 6.455e-4) - 1 = 2 F3(8.211) - 1 = 0.9962.
    al = _verdicts(summary)["attention_lstm"]["versus_base"]
    scale = math.sqrt(0.5 * 2.5e-6 / 3)
    assert al["rope"] == pytest.approx(0.0053) and al["difference"] == pytest.approx(0.0, abs=1e-12)
    assert al["p_equivalent"] == pytest.approx(2 * _t3_cdf(0.0053 / scale) - 1, abs=1e-9)
    assert round(al["p_equivalent"], 4) == 0.9962 and al["verdict"] == "equivalent"


def test_report_opens_with_the_verdicts_in_words(summary, report):
    lines = report.splitlines()
    assert lines[0] == "# genebench: benchmark report" and lines[2] == "## Verdicts"
    opening = report[report.index("## Verdicts"):report.index("\n## ", report.index("## Verdicts") + 1)]
    assert "posterior probabilities from the Bayesian correlated t-test" in opening
    assert "a verdict needs 0.95 or more, else it is undecided" in opening
    bullets = {line.split(" (task ")[0]: line for line in opening.splitlines() if line.startswith("- ")}
    multi = bullets["- `alpha`, top 3 genes"]
    assert "reference `ridge` (the best baseline by CV)" in multi
    assert "`dnn` is better than `ridge` (P = 0.98)" in multi
    assert "`gru` is practically equivalent to `ridge` (P = 1.00)" in multi
    al = _verdicts(summary)["attention_lstm"]
    assert (f"`attention_lstm` is undecided (P(better) {math.floor(al['p_better'] * 100) / 100:.2f}, "
            f"P(equivalent) {math.floor(al['p_equivalent'] * 100) / 100:.2f}") in multi
    assert ("What the network adds over its own base (the ridge it corrects): `dnn` is better than its base "
            "(P = 0.98), `attention_lstm` is practically equivalent to its base (P = 0.99).") in multi
    assert "- `alpha`, one target gene (task `single`)" in opening
    assert "- `empty`, task `multi`: no results." in opening
    assert opening.index("`alpha`, one target gene") < opening.index("`synthetic`, one target gene")


def test_no_sentence_calls_a_model_better_without_that_verdict(summary, report):
    import re

    for line in report.splitlines():
        for arch, against in re.findall(r"`(\w+)` is better than (`\w+`|its base)", line):
            dataset, task = re.match(r"- `(\w+)`, .*?\(task `(\w+)`\)", line).groups()
            entry = _verdicts(summary, dataset, task)[arch]
            entry = entry["versus_base"] if against == "its base" else entry
            assert entry["verdict"] == "better", line
    # Nor any other word that claims a win: the frequentist columns and the ranks decide no wording.
    assert not re.search(r"\bbeats?\b|\bbeaten\b|\boutperform|\bwins\b|\bsuperior", report, re.IGNORECASE)
    undecided = [a for a, e in _verdicts(summary).items() if e["verdict"] != "better"]
    multi = _section(report, "alpha", "multi")
    for arch in undecided:
        assert f"`{arch}` is better" not in report
        assert _row(_sub(multi, "Verdicts"), arch)[1] != "**better**"


def test_dataset_section_tables_the_verdicts_and_the_ablation(summary, report):
    verdicts = _sub(_section(report, "alpha", "multi"), "Verdicts")
    dnn = _row(verdicts, "dnn")
    entry = _verdicts(summary)["dnn"]
    assert dnn[:3] == ["`dnn`", "**better**", f"{math.floor(entry['p_better'] * 100) / 100:.2f}"]
    assert dnn[5:8] == ["-0.0400", "± 0.0055", "-0.0167 [-0.0167, -0.0167]"]
    assert dnn[8] == "0.67 (2/3)"
    assert "rho = 0.2000" in verdicts and "1 repeat of the folds" in verdicts
    assert "it has no verdict against itself" in verdicts and not _row_or_none(verdicts, "ridge")
    # The ablation table: the deep models with a base only.
    ablation = verdicts[verdicts.index("The ablation"):]
    assert _row(ablation, "attention_lstm")[1] == "**equivalent**"
    assert {r.split("|")[1].strip() for r in ablation.splitlines() if r.startswith("| `")} == {
        "`dnn`", "`attention_lstm`"}


def _row_or_none(section: str, arch: str):
    return next((line for line in section.splitlines() if line.startswith(f"| `{arch}`")), None)


def test_leaderboard_rows_carry_their_verdict_against_ridge(summary, report):
    for task in TASKS:
        entries = {e["arch"]: e for e in summary["leaderboard"][task]}
        assert entries["ridge"]["verdicts_vs_ridge"] == {} and entries["oracle"]["verdicts_vs_ridge"] == {}
        for arch, entry in entries.items():
            for dataset, v in entry["verdicts_vs_ridge"].items():
                full = summary["datasets"][dataset][task]["versus_ridge"][arch]
                assert v == {k: full[k] for k in ("against", "verdict", "p_better", "p_equivalent", "p_worse")}
                # ridge is the best baseline here, so the leaderboard's verdict is the dataset's verdict.
                assert v["verdict"] == summary["datasets"][dataset][task]["verdicts"][arch]["verdict"]
        table = _leaderboard_section(report, task)
        assert "| verdict vs ridge (CV) |" in table.splitlines()[2]
        assert _row(table, "dnn")[-1] == "`alpha` better (P=0.98); `synthetic` better (P=0.98)"
        assert _row(table, "ridge")[-1] == "reference"
        assert _row(table, "gru")[-1].startswith("`alpha` equivalent (P=1.00)")
    # alpha's single task has no lstm: its verdict column names synthetic only.
    assert set({e["arch"]: e for e in summary["leaderboard"]["single"]}["lstm"]["verdicts_vs_ridge"]) == {"synthetic"}


def test_leaderboard_says_plainly_there_are_too_few_datasets(summary, report, reported):
    for task in TASKS:
        friedman = summary["friedman"][task]
        assert friedman["datasets"] == 2 and friedman["min_datasets"] == 5 and friedman["claim"] is False
        # The test runs and is shown beside the leaderboard, labelled as supporting no claim.
        assert friedman["statistic"] is not None and 0 <= friedman["p_value"] <= 1
        assert friedman["critical_difference"] > 0
        text = _leaderboard_section(report, task)
        assert ("**Across datasets: too few for a claim.** This leaderboard has 2 datasets, fewer than the 5 "
                "that this report requires for a claim across datasets") in text
        assert f"For the record, not as evidence: Friedman χ² = {friedman['statistic']:.2f}" in text
        assert (reported.root / "reports" / "figures" / f"cd_{task}.png").stat().st_size > 0
    # lstm lacks alpha's single task: the complete design leaves it out, and says so.
    assert summary["friedman"]["single"]["left_out"] == ["lstm"]
    assert "Left out (not scored on every dataset): `lstm`." in _leaderboard_section(report, "single")


def _rewrite_folds(config, task: str, arch: str, edit) -> Path:
    path = config.root / "artifacts" / "evaluation" / "alpha" / task / arch / "folds.csv"
    frame = edit(pd.read_csv(path))
    frame.to_csv(path, index=False)
    return path


def test_repeated_resamples_are_paired_by_fold_id(tmp_path):
    """Two repeats of the 4 scored folds: 8 resamples with global fold ids, written in a
    different row order per architecture; the verdict pairs them by `fold`, not by row."""
    from benchmark.report import build
    from benchmark.report.statistics import bayesian_correlated_ttest

    config = make_project(tmp_path / "repeats", evaluated=("alpha",))
    second = {arch: list(np.array(r) + 0.01 * (i % 3)) for i, (arch, r) in enumerate(FOLD_RMSE.items())}

    def repeated(arch):
        def edit(frame):
            again = frame.assign(fold=frame["fold"] + 4, rmse=second[arch])
            if "repeat" in frame.columns:
                again["repeat"] = 1
            both = pd.concat([frame, again], ignore_index=True)
            if "base_rmse" in both.columns:
                both.loc[4:, "base_rmse"] = np.array(BASE_FOLD_RMSE[arch]) + 0.002
            return both.iloc[::-1] if arch in ("dnn", "lstm") else both  # row order must not matter
        return edit

    for arch in ARCHS:
        _rewrite_folds(config, "multi", arch, repeated(arch))
    with pytest.raises(UserError, match=r"artifacts/evaluation/alpha/multi/knn/folds.csv: column 'repeat': fold 5 "
                                        r"is in repeat 0 but in repeat 1"):
        build(config)  # knn's file has no repeat column: all read as repeat 0, unlike the others
    _rewrite_folds(config, "multi", "knn", lambda f: f.assign(repeat=[0] * 4 + [1] * 4))
    summary, _, _ = build(config)
    multi = summary["datasets"]["alpha"]["multi"]
    assert multi["repeats"] == 2 and multi["folds"] == 8 and multi["scored_folds"] == list(range(1, 9))
    d = np.array(FOLD_RMSE["dnn"] + second["dnn"]) - np.array(FOLD_RMSE["ridge"] + second["ridge"])
    ridge_mean = np.mean(FOLD_RMSE["ridge"] + second["ridge"])
    expected = bayesian_correlated_ttest(d, rho=0.2, rope=0.01 * ridge_mean)
    dnn = multi["verdicts"]["dnn"]
    assert dnn["resamples"] == 8 and dnn["difference"] == pytest.approx(d.mean())
    assert dnn["p_better"] == pytest.approx(expected.p_better, abs=1e-12)
    assert dnn["p_worse"] == pytest.approx(expected.p_worse, abs=1e-12)
    base = multi["verdicts"]["dnn"]["versus_base"]
    d_base = np.array(FOLD_RMSE["dnn"] + second["dnn"]) - np.array(BASE_FOLD_RMSE["dnn"] * 2) \
        - np.array([0] * 4 + [0.002] * 4)
    assert base["difference"] == pytest.approx(d_base.mean())


def test_folds_that_differ_between_architectures_are_refused(tmp_path):
    from benchmark.report import build

    config = make_project(tmp_path / "otherfolds", evaluated=("alpha",))
    _rewrite_folds(config, "multi", "lstm", lambda f: f.assign(fold=f["fold"] + 10))
    with pytest.raises(UserError, match=r"artifacts/evaluation/alpha/multi/lstm/folds.csv: folds \[11, 12, 13, 14\] "
                                        r"differ from dnn's \[1, 2, 3, 4\]"):
        build(config)


@pytest.mark.parametrize("edit, file, message", [
    (lambda f: f.drop(columns="base_rmse"), "folds.csv", "missing column 'base_rmse'"),
    (lambda f: f.assign(base_rmse=["x"] * len(f)), "folds.csv", "column 'base_rmse': expected a number"),
    (lambda f: f.assign(repeat=[0.5] * len(f)), "folds.csv", r"column 'repeat': expected a repeat number"),
    (lambda f: f.assign(n_val=0), "folds.csv", "column 'n_val': expected a positive sample count"),
    (lambda f: f.drop(columns="base_predicted"), "test_predictions.csv", "missing column 'base_predicted'"),
    (lambda f: f.drop(columns="base_rmse"), "test_per_gene.csv", "missing column 'base_rmse'"),
])
def test_malformed_base_and_repeat_columns_name_the_file_and_column(tmp_path, edit, file, message):
    from benchmark.report import build

    config = make_project(tmp_path / "malformed", evaluated=("alpha",))
    path = config.root / "artifacts" / "evaluation" / "alpha" / "multi" / "dnn" / file
    pd.read_csv(path).pipe(edit).to_csv(path, index=False)
    with pytest.raises(UserError, match=rf"artifacts/evaluation/alpha/multi/dnn/{file}: {message}"):
        build(config)


def test_held_out_predictions_of_other_samples_are_refused(tmp_path):
    from benchmark.report import build

    config = make_project(tmp_path / "othersamples", evaluated=("alpha",))
    path = config.root / "artifacts" / "evaluation" / "alpha" / "multi" / "gru" / "test_predictions.csv"
    table = pd.read_csv(path, dtype={"sample": str})
    first = table["sample"].iloc[0]
    table.loc[table["sample"] == first, "sample"] = "cell99"
    table.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"artifacts/evaluation/alpha/multi/gru/test_predictions.csv: column "
                                        r"'sample': sample '(cell99|" + first + r")' is not a held-out sample of both"):
        build(config)


def test_a_reference_other_than_ridge_and_the_leaderboard_still_against_ridge(tmp_path):
    """knn made the best baseline by CV: the verdicts are against knn (ridge gets one too); the
    leaderboard's column stays against ridge, as DESIGN.md's item 7 asks."""
    from benchmark.report import build
    from benchmark.report.markdown import render

    config = make_project(tmp_path / "knnref", evaluated=("alpha",))
    better = [0.53, 0.52, 0.51, 0.54]  # ridge - 0.02 on every fold
    _rewrite_folds(config, "multi", "knn", lambda f: f.assign(rmse=better))
    path = config.root / "metrics" / "alpha" / "multi" / "knn.json"
    metrics = json.loads(path.read_text())
    metrics["cv"]["rmse"] = {"mean": float(np.mean(better)), "std": float(np.std(better, ddof=1))}
    path.write_text(json.dumps(metrics))
    summary, _, _ = build(config)
    multi = summary["datasets"]["alpha"]["multi"]
    assert multi["best_baseline"] == "knn"
    assert set(multi["verdicts"]) == set(ARCHS) - {"knn"}
    assert multi["verdicts"]["ridge"]["against"] == "knn" and multi["verdicts"]["ridge"]["verdict"] == "worse"
    # ridge - knn = +0.02 on every fold: a point mass far above the rope (0.01 x 0.525).
    assert multi["verdicts"]["ridge"]["p_worse"] == 1.0
    assert multi["verdicts"]["ridge"]["versus_base"] is None
    assert "ridge" not in multi["versus_ridge"] and multi["versus_ridge"]["knn"]["verdict"] == "better"
    assert multi["versus_ridge"]["gru"]["verdict"] == "equivalent"  # gru's folds equal ridge's
    assert multi["verdicts"]["gru"]["verdict"] == "worse"  # but 0.02 above knn's
    board = {e["arch"]: e for e in summary["leaderboard"]["multi"]}
    assert board["knn"]["verdicts_vs_ridge"]["alpha"]["verdict"] == "better"
    text = render(summary, config.datasets)
    sentence = next(line for line in text.splitlines() if line.startswith("- `alpha`, top 3 genes"))
    assert "no deep model is better than `knn` (the best baseline by CV)" in sentence
    assert "`ridge` is worse than `knn` (P = 1.00)" in sentence
    assert _row(_leaderboard_section(text, "multi"), "ridge")[-1] == "reference"
    assert _row(_leaderboard_section(text, "multi"), "knn")[-1] == "`alpha` better (P=1.00)"


def test_five_datasets_allow_the_friedman_claim_and_its_diagram(tmp_path):
    """Five datasets (copies of alpha's data, multi task only): the leaderboard states the Friedman
    test and Nemenyi's CD and draws the critical-difference diagram."""
    from benchmark.report import build
    from benchmark.report.markdown import render

    root = tmp_path / "five"
    root.mkdir()
    names = [f"copy{i}" for i in range(5)]
    params = PARAMS.replace("  alpha: {transform: none}\n  synthetic: {transform: none}\n  empty: {transform: none}\n",
                            "".join(f"  {n}: {{transform: none}}\n" for n in names))
    (root / "params.yaml").write_text(params)
    _write_data(root)
    config = load_config(root / "params.yaml", root=root)
    for name in names:
        shutil.copytree(root / "data" / "alpha", root / "data" / name)
        cfg = config.for_dataset(name)
        with pytest.MonkeyPatch.context() as mp:  # hand-sized folds of 8, like the shared fixture's
            mp.setattr(validation, "MIN_SAMPLES_PER_PART", 8)
            prepare(cfg)
        for arch in ARCHS:
            _write_results(cfg, "multi", arch)
    summary, figures, plot_data = build(config)
    result = summary["friedman"]["multi"]
    assert result["claim"] is True and result["datasets"] == 5 and len(result["architectures"]) == 8
    # The same scores on every dataset: every architecture keeps its rank; the ranks differ beyond chance.
    assert result["mean_ranks"]["dnn"] == 1.0 and result["p_value"] < 0.001
    assert figures["cd_multi.png"][:8] == b"\x89PNG\r\n\x1a\n" and b"dnn" in plot_data["cd_multi.csv"]
    assert "cd_single.png" not in figures  # no results for the single task at all
    text = _leaderboard_section(render(summary, config.datasets), "multi")
    assert f"Friedman test over 5 datasets × 8 architectures: χ² = {result['statistic']:.2f}" in text
    assert "the architectures' ranks differ across datasets" in text
    assert f"CD = {result['critical_difference']:.2f}" in text
    assert "![Critical-difference diagram, task multi](figures/cd_multi.png)" in text
    assert "too few for a claim" not in text


def test_the_search_budget_is_drawn_from_the_tuning_results_defaults_first(tmp_path):
    """What the search bought: per architecture with a study, the best validation RMSE after each
    complete trial (0 = the defaults), the index of its last improvement, a table and a figure."""
    from benchmark.paths import tuning_result
    from benchmark.report import build
    from benchmark.report.markdown import render

    config = make_project(tmp_path / "budget", evaluated=("alpha",))
    cfg = config.for_dataset("alpha")
    curves = {"dnn": [0.9, 0.7, 0.8, 0.6, 0.65], "ridge": [0.5, 0.55, 0.52]}
    for arch, values in curves.items():
        best = np.minimum.accumulate(values)
        curve = [{"trial": i, "value": v, "best_value": float(b)} for i, (v, b) in enumerate(zip(values, best))]
        path = tuning_result(cfg, "multi", arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"best_params": {}, "budget_curve": curve}))
    summary, figures, plot_data = build(config)
    budget = summary["datasets"]["alpha"]["multi"]["budget"]
    assert budget == {"dnn": {"trials": 5, "best_values": [0.9, 0.7, 0.7, 0.6, 0.6], "last_improvement": 3},
                      "ridge": {"trials": 3, "best_values": [0.5, 0.5, 0.5], "last_improvement": 0}}
    assert "budget_alpha_multi.png" in figures and "budget_alpha_single.png" not in figures
    drawn = pd.read_csv(io.BytesIO(plot_data["budget_alpha_multi.csv"]))
    assert list(drawn[drawn["arch"] == "dnn"]["best_value"]) == [0.9, 0.7, 0.7, 0.6, 0.6]
    table = _sub(_section(render(summary, config.datasets), "alpha", "multi"), "What the search bought")
    assert _row(table, "dnn") == ["`dnn`", "5", "0.9000", "0.6000", "3"]
    assert _row(table, "ridge") == ["`ridge`", "3", "0.5000", "0.5000", "0"]

    path = tuning_result(cfg, "multi", "ridge")
    path.write_text(json.dumps({"budget_curve": [{"trial": 0}]}))
    with pytest.raises(UserError, match=r"artifacts/tuning/alpha/multi/ridge.json: budget_curve: expected"):
        build(config)
