"""Metric definitions, checked on numbers small enough to work out by hand."""

import json
import math

import numpy as np
import pytest

from benchmark.metrics import METRICS, fold_summary, per_gene_pearson, regression_metrics


def test_hand_checked_two_gene_case():
    y_true = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 3.0]])
    y_pred = np.array([[1.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    m = regression_metrics(y_true, y_pred, y_min=[0.0, 0.0], y_max=[2.0, 4.0])
    # errors: gene 0 = [0, 0, 1], gene 1 = [1, 1, -2]
    # MSE = (0 + 0 + 1 + 1 + 1 + 4) / 6 = 7/6; RMSE = sqrt(7/6); MAE = (1 + 1 + 1 + 2) / 6 = 5/6
    assert m["mse"] == pytest.approx(7 / 6)
    assert m["rmse"] == pytest.approx(math.sqrt(7 / 6))
    assert m["mae"] == pytest.approx(5 / 6)
    # per-gene RMSE: sqrt(1/3), sqrt(6/3)
    assert m["per_gene"]["rmse"] == pytest.approx([math.sqrt(1 / 3), math.sqrt(2)])
    # gene 0: SS_res = 1, SS_tot = 2 -> R^2 = 0.5; gene 1: SS_res = 6, SS_tot = 6 -> 0
    assert m["per_gene"]["r2"] == pytest.approx([0.5, 0.0])
    assert m["r2"] == pytest.approx(0.25)
    # gene 1's prediction [1, 1, 1] is constant: Pearson undefined, left out of the mean;
    # gene 0: r([1,2,3], [1,2,4]) = 3 / sqrt(2 * 14/3) = 0.981981
    assert m["pearson"] == pytest.approx(3 / math.sqrt(2 * 14 / 3))
    # scaled by training ranges [0, 2] and [0, 4]: errors / 2 and errors / 4
    # squared: [0, 0, 1/4] and [1/16, 1/16, 4/16] -> sum = 0.625, MSE = 0.625 / 6
    assert m["rmse_scaled"] == pytest.approx(math.sqrt(0.625 / 6))
    # absolute: [0, 0, 1/2] and [1/4, 1/4, 1/2] -> sum = 1.5, MAE = 0.25
    assert m["mae_scaled"] == pytest.approx(0.25)
    assert set(METRICS) <= set(m)
    assert m["pearson_undefined"] == 1  # gene 1, left out of the mean above


def test_pearson_is_none_for_constant_predictions_and_json_null():
    y_true = np.array([[1.0], [2.0], [3.0]])
    m = regression_metrics(y_true, np.full((3, 1), 2.0), y_min=[1.0], y_max=[3.0])
    assert m["pearson"] is None
    assert '"pearson": null' in json.dumps(m)
    assert "NaN" not in json.dumps(m)


def test_undefined_pearson_is_counted_not_hidden():
    """A model that predicts a constant for its hard genes is not flattered silently: the mean
    covers the defined genes only, and `pearson_undefined` says how many were left out."""
    y_true = np.array([[1.0, 5.0, 2.0, 7.0], [2.0, 5.0, 4.0, 1.0], [3.0, 5.0, 6.0, 4.0]])
    y_pred = np.array([[1.0, 5.0, 3.0, 2.0], [2.0, 6.0, 3.0, 2.0], [3.0, 7.0, 3.0, 2.0]])
    # gene 0: r = 1; gene 1: truth constant; genes 2, 3: prediction constant -> 3 of 4 undefined.
    m = regression_metrics(y_true, y_pred, y_min=[0.0] * 4, y_max=[1.0] * 4)
    assert m["pearson"] == pytest.approx(1.0)
    assert m["pearson_undefined"] == 3 and isinstance(m["pearson_undefined"], int)
    every = regression_metrics(y_true, np.full((3, 4), 2.0), y_min=[0.0] * 4, y_max=[1.0] * 4)
    assert every["pearson"] is None and every["pearson_undefined"] == 4
    assert '"pearson_undefined": 4' in json.dumps(every)
    perfect = regression_metrics(y_true[:, [0, 2]], y_true[:, [0, 2]], y_min=[0.0] * 2, y_max=[1.0] * 2)
    assert perfect["pearson"] == pytest.approx(1.0) and perfect["pearson_undefined"] == 0



@pytest.mark.parametrize("n", [2, 3, 40, 500])
def test_per_gene_pearson_is_scipy_pearsonr_of_every_column(n):
    """Every gene's r is the one `scipy.stats.pearsonr` gives for that column alone, exactly;
    None where r is undefined: a constant truth or prediction, or NaN in a column."""
    from scipy.stats import pearsonr

    rng = np.random.default_rng(n)
    y_true = rng.normal(size=(n, 7)) * 3 + 5
    y_pred = 0.5 * y_true + rng.normal(size=(n, 7))
    y_true[:, 1] = 2.0  # constant truth
    y_pred[:, 2] = -1.0  # constant prediction
    y_pred[0, 3] = np.nan
    gene_r = per_gene_pearson(y_true, y_pred)
    assert len(gene_r) == 7 and gene_r[1] is None and gene_r[2] is None and gene_r[3] is None
    for gene in (0, 4, 5, 6):
        assert type(gene_r[gene]) is float
        assert gene_r[gene] == float(pearsonr(y_true[:, gene], y_pred[:, gene]).statistic)


def test_per_gene_pearson_of_one_sample_or_one_gene():
    assert per_gene_pearson(np.array([[1.0, 2.0]]), np.array([[3.0, 1.0]])) == [None, None]
    assert per_gene_pearson(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx([0.9819805])

def test_scaled_metrics_use_the_training_range_not_the_scored_rows():
    y_true = np.array([[10.0], [20.0]])
    y_pred = np.array([[12.0], [18.0]])
    wide = regression_metrics(y_true, y_pred, y_min=[0.0], y_max=[100.0])
    narrow = regression_metrics(y_true, y_pred, y_min=[0.0], y_max=[10.0])
    assert wide["rmse_scaled"] == pytest.approx(0.02)  # errors of 2 over a range of 100
    assert narrow["rmse_scaled"] == pytest.approx(0.2)
    assert wide["rmse"] == narrow["rmse"] == pytest.approx(2.0)


def test_zero_training_range_divides_by_one():
    m = regression_metrics([[1.0], [2.0]], [[1.5], [2.5]], y_min=[5.0], y_max=[5.0])
    assert m["mae_scaled"] == pytest.approx(0.5)


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match="y_pred"):
        regression_metrics(np.zeros((3, 2)), np.zeros((3, 1)), [0, 0], [1, 1])


def test_fold_summary_mean_sample_std_and_none():
    folds = [
        {"rmse": 1.0, "pearson": None, "per_gene": {"r2": [0.1]}},
        {"rmse": 3.0, "pearson": None, "per_gene": {"r2": [0.2]}},
        {"rmse": 2.0, "pearson": 0.5},
    ]
    summary = fold_summary(folds)
    assert summary["rmse"]["mean"] == pytest.approx(2.0)
    assert summary["rmse"]["std"] == pytest.approx(1.0)  # ddof=1: sqrt((1 + 1 + 0) / 2)
    assert summary["pearson"] == {"mean": 0.5, "std": None}  # one defined fold
    assert "per_gene" not in summary
    assert fold_summary([{"pearson": None}, {"pearson": None}]) == {"pearson": None}
