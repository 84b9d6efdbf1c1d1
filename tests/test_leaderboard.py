"""The leaderboard's scaling between controls and its ranking, on numbers worked out by hand.

The same `scale` serves the report (tests/test_report.py checks it end to end on a
prepared project); here it is checked on its own.
"""

from __future__ import annotations

import json

import pytest

from benchmark.outputs import dumps_json
from benchmark.report.leaderboard import METRICS, PERFECT, best, dataset_scores, rank, scale, scaled_metrics, table


def test_scale_maps_the_controls_to_0_and_1_in_either_direction():
    # An error metric: the positive control errs less than the negative one.
    # mean RMSE 1.0, perfect 0.0, a model at 0.6: (0.6 - 1.0) / (0.0 - 1.0) = 0.4.
    assert scale(0.6, negative=1.0, positive=0.0) == pytest.approx(0.4)
    # A score where higher is better: mean R² 0.1, perfect 1.0, a model at 0.55: 0.45 / 0.9 = 0.5.
    assert scale(0.55, negative=0.1, positive=1.0) == pytest.approx(0.5)
    # Worse than the mean goes below 0; better than the oracle above 1.
    assert scale(1.2, negative=1.0, positive=0.2) == pytest.approx(-0.25)
    assert scale(0.1, negative=1.0, positive=0.2) == pytest.approx(1.125)
    # Undefined: coinciding controls, or a missing value.
    assert scale(0.5, negative=0.3, positive=0.3) is None
    assert scale(None, negative=1.0, positive=0.0) is None
    assert scale(0.5, negative=None, positive=0.0) is None


def test_controls_scale_exactly_to_0_and_1_on_every_metric():
    negative = {"rmse": 0.9173, "mae": 0.7311, "mse": 0.8414, "r2": -0.0213}
    oracle = {"rmse": 0.3017, "mae": 0.2398, "mse": 0.0910, "r2": 0.8861}
    tests = {"mean": negative, "dnn": {"rmse": 0.41, "mae": 0.33, "mse": 0.17, "r2": 0.79}}
    scores = dataset_scores(tests, oracle, oracle=True)
    for metric in METRICS + ("score",):
        assert scores["oracle"][metric] == 1.0 and type(scores["oracle"][metric]) is float
        # Exactly 0.0, not -0.0: 0 / (a negative span) would print as -0.0 in summary.json.
        assert scores["mean"][metric] == 0.0 and str(scores["mean"][metric]) == "0.0"
    assert json.loads(dumps_json(scores))["mean"]["rmse"] == 0.0
    assert scores["oracle"]["rank"] is None  # a yardstick, not a competitor
    assert (scores["dnn"]["rank"], scores["mean"]["rank"]) == (1.0, 2.0)
    # Against a perfect prediction (a dataset without a truth) the mean is 0 all the same.
    plain = dataset_scores(tests, PERFECT, oracle=False)
    assert "oracle" not in plain and all(plain["mean"][m] == 0.0 for m in METRICS)


def test_scaled_metrics_hand_example():
    """mean: RMSE 1.0, MAE 0.8, MSE 1.0, R² 0.0; oracle: 0.2, 0.16, 0.04, 0.96; model: 0.6, 0.48, 0.36, 0.64."""
    scaled = scaled_metrics({"rmse": 0.6, "mae": 0.48, "mse": 0.36, "r2": 0.64},
                            negative={"rmse": 1.0, "mae": 0.8, "mse": 1.0, "r2": 0.0},
                            positive={"rmse": 0.2, "mae": 0.16, "mse": 0.04, "r2": 0.96})
    # RMSE (0.6 - 1) / (0.2 - 1) = 0.5; MAE (0.48 - 0.8) / (0.16 - 0.8) = 0.5;
    # MSE (0.36 - 1) / (0.04 - 1) = 0.64 / 0.96 = 2/3; R² 0.64 / 0.96 = 2/3.
    assert scaled["rmse"] == pytest.approx(0.5)
    assert scaled["mae"] == pytest.approx(0.5)
    assert scaled["mse"] == pytest.approx(2 / 3)
    assert scaled["r2"] == pytest.approx(2 / 3)
    assert scaled["score"] == pytest.approx((0.5 + 0.5 + 2 / 3 + 2 / 3) / 4)  # = 7/12
    # Pearson r is not a leaderboard metric (undefined for the mean's constant prediction).
    assert set(scaled) == set(METRICS) | {"score"} and "pearson" not in METRICS
    # A metric the controls leave undefined drops out of the mean.
    partial = scaled_metrics({"rmse": 0.6, "r2": 0.3}, negative={"rmse": 1.0, "r2": 0.5},
                             positive={"rmse": 0.2, "r2": 0.5})
    assert partial["r2"] is None and partial["score"] == pytest.approx(0.5)


def test_rank_is_1_for_the_best_and_ties_share_the_mean_rank():
    assert rank({"a": 0.2, "b": 0.9, "c": 0.5}) == {"b": 1.0, "c": 2.0, "a": 3.0}
    assert rank({"a": 0.5, "b": 0.9, "c": 0.5, "d": 0.0}) == {"b": 1.0, "a": 2.5, "c": 2.5, "d": 4.0}
    assert rank({"a": None, "b": 0.1}) == {"b": 1.0}


def test_table_orders_by_mean_scaled_score_with_mean_rank_beside_it():
    """Two datasets, RMSE only (the other metrics absent, so the score is the scaled RMSE).

    d1: mean 1.0, dnn 0.2, ridge 0.5, knn 0.5, perfect 0 -> scaled dnn 0.8, ridge 0.5, knn 0.5, mean 0;
        ranks dnn 1, ridge 2.5, knn 2.5 (tied), mean 4.
    d2: mean 2.0, dnn 1.2, ridge 0.8 (knn not evaluated) -> scaled dnn 0.4, ridge 0.6, mean 0;
        ranks ridge 1, dnn 2, mean 3.
    Mean scaled score: dnn 0.6, ridge 0.55, knn 0.5 (d1 only), mean 0.
    Mean rank: dnn 1.5, ridge 1.75, knn 2.5, mean 3.5.
    """
    perfect = {"rmse": 0.0}
    d1 = dataset_scores({"mean": {"rmse": 1.0}, "dnn": {"rmse": 0.2}, "ridge": {"rmse": 0.5},
                         "knn": {"rmse": 0.5}}, perfect, oracle=False)
    d2 = dataset_scores({"mean": {"rmse": 2.0}, "dnn": {"rmse": 1.2}, "ridge": {"rmse": 0.8}}, perfect, oracle=False)
    assert {a: e["rank"] for a, e in d1.items()} == {"dnn": 1.0, "ridge": 2.5, "knn": 2.5, "mean": 4.0}
    entries = table({"d1": d1, "d2": d2})
    assert [e["arch"] for e in entries] == ["dnn", "ridge", "knn", "mean"]
    got = {e["arch"]: (e["mean_scaled_score"], e["mean_rank"], e["datasets"]) for e in entries}
    assert got["dnn"] == (pytest.approx(0.6), 1.5, 2)
    assert got["ridge"] == (pytest.approx(0.55), 1.75, 2)
    assert got["knn"] == (pytest.approx(0.5), 2.5, 1)
    assert got["mean"] == (0.0, 3.5, 2)
    assert entries[0]["scaled_scores"] == {"d1": pytest.approx(0.8), "d2": pytest.approx(0.4)}
    assert entries[0]["ranks"] == {"d1": 1.0, "d2": 2.0}
    assert [e["role"] for e in entries] == ["deep", "baseline", "baseline", "negative control"]
    assert best(entries) == "dnn"


def test_oracle_row_heads_the_table_unranked_and_is_never_the_best_model():
    d1 = dataset_scores({"mean": {"rmse": 1.0}, "ridge": {"rmse": 0.6}}, {"rmse": 0.2}, oracle=True)
    d2 = dataset_scores({"mean": {"rmse": 1.0}, "ridge": {"rmse": 0.5}}, PERFECT, oracle=False)
    entries = table({"synthetic": d1, "real": d2})
    assert [e["arch"] for e in entries] == ["oracle", "ridge", "mean"]
    oracle = entries[0]
    assert oracle["role"] == "positive control"
    assert (oracle["mean_scaled_score"], oracle["mean_rank"], oracle["datasets"]) == (1.0, None, 1)
    assert oracle["scaled_scores"] == {"synthetic": 1.0} and oracle["ranks"] == {}
    # ridge: (0.6 - 1) / (0.2 - 1) = 0.5 on synthetic, (0.5 - 1) / (0 - 1) = 0.5 on real.
    assert entries[1]["mean_scaled_score"] == pytest.approx(0.5) and entries[1]["mean_rank"] == 1.0
    assert best(entries) == "ridge"


def test_oracle_is_the_transformed_truth_scored_with_the_development_ranges(tmp_path):
    """On a log1p dataset the oracle predicts log1p(truth) of the target genes on the held-out samples."""
    import numpy as np

    from benchmark.config import load_config
    from benchmark.data.canonical import Dataset, write_dataset
    from benchmark.data.prepare import load_task, prepare
    from benchmark.metrics import regression_metrics
    from benchmark.report.leaderboard import has_truth, oracle_metrics, oracle_predictions

    (tmp_path / "params.yaml").write_text(
        "datasets: {counts: {transform: log1p}, plain: {transform: none}}\n"
        "task: {top_k: 2}\nsplit: {test_size: 0.25, folds: 4, seed: 3}\ntuning: {folds: 1}\n")
    rng = np.random.default_rng(1)
    truth = rng.gamma(2.0, 20.0, size=(60, 6)).astype(np.float32)
    counts = rng.poisson(truth).astype(np.float32)
    genes, samples = [f"g{i}" for i in range(6)], [f"s{i:02d}" for i in range(60)]
    write_dataset(Dataset(X=counts, genes=genes, samples=samples, truth=truth), tmp_path / "data" / "counts")
    write_dataset(Dataset(X=counts, genes=genes, samples=samples), tmp_path / "data" / "plain")
    config = load_config(tmp_path / "params.yaml", root=tmp_path)
    cfg = config.for_dataset("counts")
    prepare(cfg)
    assert has_truth(cfg) and not has_truth(config.for_dataset("plain"))
    data = load_task(cfg, "multi", held_out=True)
    rows = [samples.index(s) for s in data.test_samples]
    cols = [genes.index(g) for g in data.target_genes]
    expected = np.log1p(truth[np.ix_(rows, cols)]).astype(np.float64)
    predicted = oracle_predictions(cfg, data)
    assert predicted.shape == (15, 2)
    np.testing.assert_allclose(predicted, expected, rtol=1e-6)
    metrics = oracle_metrics(cfg, data)
    reference = regression_metrics(data.Y_test, expected, data.Y_dev.min(axis=0), data.Y_dev.max(axis=0))
    for name in METRICS + ("pearson", "rmse_scaled", "mae_scaled"):
        assert metrics[name] == pytest.approx(reference[name], rel=1e-6)
    assert "per_gene" not in metrics


def _scores(rows: dict[str, list[float]]) -> dict[str, dict]:
    """dataset -> {arch: {"score": s}}: the part of `dataset_scores` that `friedman` reads."""
    n = len(next(iter(rows.values())))
    return {f"d{i}": {arch: {"score": values[i]} for arch, values in rows.items()} for i in range(n)}


def test_friedman_and_nemenyi_by_hand_over_five_datasets():
    import math

    from scipy.stats import chi2

    from benchmark.report.leaderboard import friedman, nemenyi_critical_difference

    # Three architectures ranked 1, 2, 3 on each of N = 5 datasets: R = (1, 2, 3).
    # chi^2_F = 12 N / (k (k + 1)) * sum R_j^2 - 3 N (k + 1) = 12*5/12 * 14 - 3*5*4 = 70 - 60 = 10, df 2:
    # p = exp(-10 / 2) = 0.006738 (chi-square with 2 df).
    result = friedman(_scores({"dnn": [0.9, 0.8, 0.7, 0.95, 0.85], "ridge": [0.5, 0.45, 0.4, 0.6, 0.5],
                               "mean": [0.0] * 5}))
    assert result["claim"] is True and result["datasets"] == 5
    assert result["architectures"] == ["dnn", "mean", "ridge"]  # ARCHS order
    assert result["mean_ranks"] == {"dnn": 1.0, "ridge": 2.0, "mean": 3.0}
    assert result["statistic"] == pytest.approx(10.0)
    assert result["p_value"] == pytest.approx(math.exp(-5)) == pytest.approx(chi2.sf(10, 2))
    # Nemenyi: q_0.05 for k = 3 is 2.343 (Demšar 2006, table 5); CD = 2.343 sqrt(3 * 4 / (6 * 5)) = 1.482.
    assert result["critical_difference"] == pytest.approx(2.3437 * math.sqrt(12 / 30), abs=1e-3)
    assert nemenyi_critical_difference(8, 10) == pytest.approx(3.031 * math.sqrt(8 * 9 / 60), abs=1e-3)
    assert nemenyi_critical_difference(5, 5) == pytest.approx(2.728 * math.sqrt(5 * 6 / 30), abs=1e-3)


def test_friedman_makes_no_claim_under_five_datasets_or_three_architectures():
    from benchmark.report.leaderboard import MIN_DATASETS, friedman

    assert MIN_DATASETS == 5
    four = friedman(_scores({"dnn": [0.9, 0.8, 0.7, 0.95], "ridge": [0.5, 0.45, 0.4, 0.6], "mean": [0.0] * 4}))
    assert four["claim"] is False and four["datasets"] == 4
    # Computed and shown, but no claim rests on it: chi-square of ranks (1, 2, 3) on 4 datasets
    # is 12 / (4 * 3 * 4) * 4^2 * (1 + 4 + 9) - 3 * 4 * 4 = 8.
    assert four["statistic"] == pytest.approx(8.0) and four["critical_difference"] > 0
    one = friedman(_scores({"dnn": [0.9], "ridge": [0.5], "mean": [0.0]}))
    assert (one["statistic"], one["p_value"], one["critical_difference"]) == (None, None, None)
    assert four["mean_ranks"] == {"dnn": 1.0, "ridge": 2.0, "mean": 3.0}  # still described
    two_archs = friedman(_scores({"dnn": [0.9] * 6, "mean": [0.0] * 6}))
    assert two_archs["claim"] is False
    # An architecture missing on one dataset is left out of the complete design, not imputed.
    scores = _scores({"dnn": [0.9, 0.8, 0.7, 0.95, 0.85], "knn": [0.6, 0.5, 0.5, 0.6, 0.55],
                      "ridge": [0.5, 0.45, 0.4, 0.6, 0.5], "mean": [0.0] * 5, "lstm": [0.7] * 5})
    del scores["d3"]["lstm"]
    result = friedman(scores)
    assert result["left_out"] == ["lstm"] and "lstm" not in result["architectures"] and result["claim"]
    # Every architecture tied on every dataset: no evidence of a difference at all.
    tied = friedman(_scores({"dnn": [0.5] * 5, "ridge": [0.5] * 5, "mean": [0.5] * 5}))
    assert (tied["statistic"], tied["p_value"]) == (0.0, 1.0)


def test_critical_difference_diagram_groups_what_nemenyi_cannot_tell_apart():
    from benchmark.report.leaderboard import friedman
    from benchmark.report.plots import cliques, critical_difference, png_bytes

    # CD 1.0: dnn 1.0 and gru 1.8 are within it, so are gru 1.8 and ridge 2.5; mean at 4.0 stands alone.
    assert cliques({"dnn": 1.0, "gru": 1.8, "ridge": 2.5, "mean": 4.0}, 1.0) == [["dnn", "gru"], ["gru", "ridge"]]
    assert cliques({"dnn": 1.0, "gru": 1.1, "ridge": 1.2}, 1.0) == [["dnn", "gru", "ridge"]]
    result = friedman(_scores({"dnn": [0.9, 0.8, 0.7, 0.95, 0.85], "ridge": [0.5, 0.45, 0.4, 0.6, 0.5],
                               "mean": [0.0] * 5}))
    fig, data = critical_difference("multi", result)
    assert list(data["arch"]) == ["dnn", "ridge", "mean"] and list(data["mean_rank"]) == [1.0, 2.0, 3.0]
    # CD 1.48: dnn-ridge (1 apart) and ridge-mean are joined; dnn-mean (2 apart) are not.
    assert list(data["cliques"]) == ["0", "0;1", "1"]
    first, second = png_bytes(fig), png_bytes(critical_difference("multi", result)[0])
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and first == second  # deterministic bytes


def test_friedman_and_critical_difference_agree_with_autorank():
    """autorank (Friedman + Nemenyi, forced nonparametric) on the same datasets x architectures scores."""
    import numpy as np
    import pandas as pd

    autorank = pytest.importorskip("autorank")
    from benchmark import ARCHS
    from benchmark.report.leaderboard import friedman

    rng = np.random.default_rng(0)
    level = dict(zip(ARCHS, [0.8, 0.6, 0.62, 0.7, 0.65, 0.0, 0.55, 0.4]))
    scores = {f"d{i}": {a: {"score": v + rng.normal(0, 0.08)} for a, v in level.items()} for i in range(6)}
    ours = friedman(scores)
    frame = pd.DataFrame({a: [scores[d][a]["score"] for d in scores] for a in ARCHS})
    theirs = autorank.autorank(frame, alpha=0.05, verbose=False, force_mode="nonparametric")
    assert theirs.omnibus == "friedman" and ours["claim"]
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-9)
    # autorank's q is statsmodels' qsturng (an interpolated table), ours scipy's studentized_range: 1e-5 apart.
    assert ours["critical_difference"] == pytest.approx(theirs.cd, rel=1e-5)
    assert ours["mean_ranks"] == pytest.approx(theirs.rankdf["meanrank"].to_dict(), abs=1e-12)
