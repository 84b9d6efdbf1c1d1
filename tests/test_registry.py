"""`genebench promote`: registration, the champion gate, --force, --rollback, like with like.

The tests share the shared project's store, but each starts from a registry without
`genebench-toy-single` (the `client` fixture deletes it and the version links it left on
the logged models) and promotes its way to the state it checks, so they pass in any
order, beside test_serving's promotions too. Ridge (good on the linear data) and mean
(bad) are the candidates.
"""

from __future__ import annotations

import json

import mlflow
import pytest
import yaml

from benchmark.data.prepare import prepare
from benchmark.errors import UserError
from benchmark.registry import promote
from mlflow_project import N_GENES, shared_project

NAME = "genebench-toy-single"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    return shared_project(tmp_path_factory)


@pytest.fixture
def client(evaluated):
    """The store's client, after removing `genebench-toy-single` as if nothing was ever promoted."""
    client = mlflow.MlflowClient(evaluated.tracking_uri, registry_uri=evaluated.tracking_uri)
    if client.search_registered_models(f"name='{NAME}'"):
        for version in client.search_model_versions(f"name='{NAME}'"):
            # mlflow.register_model appends the version to its logged model's tag; a
            # fresh registry has no such link.
            client.delete_logged_model_tag(version.source.removeprefix("models:/"), "mlflow.modelVersions")
        client.delete_registered_model(NAME)
    return client


def _promote(evaluated, **kwargs) -> dict:
    assert promote(evaluated.config(), task="single", **kwargs) == 0
    return json.loads((evaluated.root / "reports" / "promotion.json").read_text())["toy"]["single"]


def _versions(client) -> dict[str, object]:
    return {str(v.version): v for v in client.search_model_versions(f"name='{NAME}'")}


def _alias(client, alias: str) -> str:
    return str(client.get_model_version_by_alias(NAME, alias).version)


def test_first_candidate_becomes_champion(evaluated, client):
    entry = _promote(evaluated, candidate="ridge")
    assert entry["decision"] == "promoted" and entry["reason"] == "no champion yet"
    assert (entry["version"], entry["champion_before"], entry["champion_after"]) == ("1", None, "1")
    assert _alias(client, "champion") == _alias(client, "challenger") == "1"
    version = client.get_model_version(NAME, "1")
    metrics = evaluated.metrics("single", "ridge")
    summary = json.loads((evaluated.root / "artifacts" / "prepared" / "toy" / "summary.json").read_text())
    assert version.run_id == metrics["mlflow_run_id"]
    assert version.tags["arch"] == "ridge" and version.tags["data_version"] == summary["data_version"]
    assert float(version.tags["test_rmse"]) == metrics["test"]["rmse"]
    assert len(version.tags["git_commit"]) == 40
    assert version.tags["decision"] == "promoted"
    # The logged model knows it is registered (the UI's "Registered models" on its page).
    model_id = evaluated.run_record("single", "ridge")["model_id"]
    assert version.source == f"models:/{model_id}"
    assert json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"]) == [{"name": NAME, "version": 1}]


def test_promoting_the_same_run_twice_adds_no_version(evaluated, client):
    _promote(evaluated, candidate="ridge")
    entry = _promote(evaluated, candidate="ridge")
    assert entry["decision"] == "unchanged" and entry["new_version"] is False
    assert list(_versions(client)) == ["1"]


def test_gate_rejects_a_worse_candidate(evaluated, client):
    _promote(evaluated, candidate="ridge")
    entry = _promote(evaluated, candidate="mean")
    assert entry["decision"] == "rejected" and entry["version"] == "2"
    assert _alias(client, "champion") == "1" and _alias(client, "challenger") == "2"
    assert entry["candidate_rmse"] > entry["champion_rmse"]
    # the champion is scored through its pyfunc on today's held-out split
    assert entry["champion_rmse"] == pytest.approx(evaluated.metrics("single", "ridge")["test"]["rmse"], rel=1e-6)
    assert client.get_model_version(NAME, "2").tags["decision"] == "rejected"



def test_the_gate_scores_the_held_out_split_block_by_block_as_the_evaluation_did(evaluated, client, monkeypatch):
    """Blocks of 4 rows: the held-out rows reach the pyfunc in several frames (memory bounded by
    a block), and both scores equal the evaluations' held-out RMSE all the same."""
    import pandas as pd

    from benchmark import tracking
    from benchmark.data import rows

    config = evaluated.config().for_dataset("toy")
    whole = tracking.raw_frame(config, "test")
    monkeypatch.setattr(rows, "BLOCK_BYTES", 4 * 4 * N_GENES)
    frames = list(tracking.raw_frames(config, "test"))
    assert [len(f) for f in frames[:-1]] == [4] * (len(frames) - 1) and len(frames) == -(-len(whole) // 4)
    pd.testing.assert_frame_equal(pd.concat(frames), whole)
    _promote(evaluated, candidate="ridge")
    entry = _promote(evaluated, candidate="mean")
    assert entry["champion_rmse"] == pytest.approx(evaluated.metrics("single", "ridge")["test"]["rmse"], rel=1e-6)
    assert entry["candidate_rmse"] == pytest.approx(evaluated.metrics("single", "mean")["test"]["rmse"], rel=1e-6)

def test_force_skips_the_gate(evaluated, client):
    _promote(evaluated, candidate="ridge")
    entry = _promote(evaluated, candidate="mean", force=True)
    assert entry["decision"] == "promoted" and "--force" in entry["reason"]
    assert _alias(client, "champion") == "2" and list(sorted(_versions(client))) == ["1", "2"]


def test_gate_promotes_a_better_candidate(evaluated, client):
    _promote(evaluated, candidate="ridge")
    _promote(evaluated, candidate="mean", force=True)  # v2, a worse champion
    entry = _promote(evaluated, candidate="ridge")
    assert entry["decision"] == "promoted" and entry["new_version"] is False  # v1 again
    assert entry["versus_champion"]["verdict"] == "better" and entry["versus_champion"]["p_better"] >= 0.95
    assert entry["candidate_rmse"] < entry["champion_rmse"] * (1 - 0.01)
    assert (entry["champion_before"], entry["champion_after"]) == ("2", "1")
    assert _alias(client, "champion") == "1"


def test_gate_decides_on_cv_never_on_the_held_out_split(evaluated, client):
    """A candidate whose held-out RMSE is far lower but whose scored CV folds equal the
    champion's is practically equivalent on CV: rejected, with both held-out scores reported."""
    import pandas as pd

    _promote(evaluated, candidate="mean")  # v1 champion: the mean
    folds_csv = evaluated.evaluation("single", "ridge") / "folds.csv"
    original = folds_csv.read_bytes()
    folds = pd.read_csv(folds_csv)
    mean_folds = pd.read_csv(evaluated.evaluation("single", "mean") / "folds.csv")
    try:
        folds["rmse"] = mean_folds["rmse"] * (1 - 0.001)  # 0.1% better: inside the 1% region
        folds.to_csv(folds_csv, index=False)
        entry = _promote(evaluated, candidate="ridge")
    finally:
        folds_csv.write_bytes(original)
    gate = entry["versus_champion"]
    assert entry["decision"] == "rejected" and _alias(client, "champion") == "1"
    assert gate["verdict"] == "equivalent" and gate["p_equivalent"] >= 0.95 and gate["resamples"] == len(folds)
    assert gate["rope"] == pytest.approx(0.01 * mean_folds["rmse"].mean())
    assert entry["candidate_rmse"] < 0.5 * entry["champion_rmse"]  # held-out: reported, not deciding
    assert "CV verdict equivalent" in entry["reason"]
    # The label of the candidate against the best architecture by CV, also on the version.
    assert entry["versus_best"]["verdict"] in {"best", "better", "equivalent", "worse", "undecided"}
    assert client.get_model_version(NAME, entry["version"]).tags["versus_best"]


def test_champion_scored_on_other_folds_is_refused_without_force(evaluated, client):
    _promote(evaluated, candidate="mean")
    client.set_model_version_tag(NAME, "1", "folds_md5", "0" * 32)
    entry = _promote(evaluated, candidate="ridge")
    assert entry["decision"] == "refused" and "other CV folds" in entry["reason"]


def test_rollback_restores_the_previous_champions(evaluated, client):
    for candidate, force in (("ridge", False), ("mean", True), ("ridge", False)):  # champions 1, 2, 1
        _promote(evaluated, candidate=candidate, force=force)
    entry = _promote(evaluated, rollback=True)
    assert entry["decision"] == "rolled_back" and (entry["champion_before"], entry["champion_after"]) == ("1", "2")
    assert _alias(client, "champion") == "2"
    _promote(evaluated, rollback=True)
    assert _alias(client, "champion") == "1"
    result = evaluated.cli("promote", "--task", "single", "--rollback")
    assert result.rc == 2
    assert result.stderr_lines == [f"genebench: error: {NAME}: version 1 is the only champion it has had; nothing to roll back to"]
    assert _alias(client, "champion") == "1"


def test_champion_from_another_data_version_is_refused_without_force(evaluated, client):
    _promote(evaluated, candidate="ridge")
    client.set_model_version_tag(NAME, "1", "data_version", "0" * 32)  # as if trained on older data
    entry = _promote(evaluated, candidate="mean")
    assert entry["decision"] == "refused" and "data version 00000000" in entry["reason"]
    assert entry["champion_rmse"] is None and _alias(client, "champion") == "1"
    entry = _promote(evaluated, candidate="mean", force=True)
    assert entry["decision"] == "promoted" and _alias(client, "champion") == "2"


def test_stale_candidate_must_be_evaluated_again(evaluated):
    provenance = evaluated.root / "data" / "toy" / "provenance.json"
    saved = provenance.read_text()
    provenance.write_text(saved.replace("{", '{"note": "re-imported",', 1))  # new bytes: a new data version
    try:
        prepare(evaluated.config())
        with pytest.raises(UserError, match=r"metrics/toy/single/ridge.json: its evaluation .* used data version"):
            promote(evaluated.config(), task="single", candidate="ridge")
    finally:
        provenance.write_text(saved)
        prepare(evaluated.config())


def test_inside_dvc_exp_run_only_a_challenger_is_registered(evaluated, client, monkeypatch):
    _promote(evaluated, candidate="mean")  # v1: the worse champion, which ridge would replace outside an experiment
    monkeypatch.setenv("DVC_EXP_NAME", "exp-1234")
    entry = _promote(evaluated, candidate="ridge")
    assert entry["decision"] == "registered"
    assert _alias(client, "challenger") == "2" and _alias(client, "champion") == "1"


def test_best_picks_the_lowest_cv_rmse_never_the_held_out_one(evaluated, client):
    _promote(evaluated, candidate="mean")  # v1, champion
    cv = {arch: evaluated.metrics("single", arch)["cv"]["rmse"]["mean"] for arch in ("ridge", "mean", "attention_lstm")}
    # Give `mean` the best held-out RMSE on file: `best` must still go by CV.
    path = evaluated.root / "metrics" / "toy" / "single" / "mean.json"
    saved = path.read_text()
    doc = json.loads(saved)
    doc["test"]["rmse"] = 0.0
    path.write_text(json.dumps(doc))
    try:
        entry = _promote(evaluated, candidate="best")
    finally:
        path.write_text(saved)
    # The lowest CV RMSE, whichever model that is (ridge until 5003701, attention_lstm since
    # its gene tokens start small), and never `mean`, the best held-out figure on file.
    assert entry["candidate_arch"] == min(cv, key=cv.get) != "mean" and entry["decision"] == "promoted"
    assert _alias(client, "champion") == entry["version"] == "2"


def test_disabled_promotion_is_skipped(evaluated, client):
    _promote(evaluated, candidate="ridge")
    params = yaml.safe_load((evaluated.root / "params.yaml").read_text())
    params["promotion"]["enabled"] = False
    path = evaluated.root / "params-disabled.yaml"
    path.write_text(yaml.safe_dump(params))
    before = {v: (x.aliases, x.tags.get("decision")) for v, x in _versions(client).items()}
    assert promote(evaluated.config(path), task=None) == 0
    report = json.loads((evaluated.root / "reports" / "promotion.json").read_text())
    assert {t: e["decision"] for t, e in report["toy"].items()} == {"single": "skipped", "multi": "skipped"}
    after = {v: (x.aliases, x.tags.get("decision")) for v, x in _versions(client).items()}
    assert after == before
