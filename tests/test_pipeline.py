"""End to end: a fresh clone, the bundled data, the smoke params, `dvc repro`.

One clone is shared by the tests of this module (module-scoped fixture): the full run
is the expensive part, the checks after it are cheap. Tests that edit the clone put it
back as they found it, so they pass in any order. The last test looks at the finished
run in `genebench ui` through headless Chromium, as a user would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from selenium.webdriver.common.by import By

from benchmark import ARCHS, TASKS

from browser import chromium_binaries, headless_chromium, wait_for
from conftest import REPO, cli_env, genebench_ui

pytestmark = pytest.mark.slow

SMOKE_DATASETS = ("pbmc68k", "synthetic")
SIZES = {"pbmc68k": 700, "synthetic": 2000}


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _stages(dataset: str) -> set[str]:
    return {f"prepare@{dataset}"} | {f"run@{dataset}-{arch}" for arch in ARCHS}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e") / "genebench"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True)
    shutil.copy(REPO / "configs" / "smoke.yaml", path / "params.yaml")
    subprocess.run(["git", "commit", "-qam", "smoke params"], cwd=path, check=True)
    _run(["genebench", "data", "bootstrap"], path)
    first = _run(["dvc", "repro"], path, timeout=1800)
    (path / "first_repro.log").write_text(first.stdout)
    (path / "first_repro.stderr.log").write_text(first.stderr)
    return path


def test_smoke_config_covers_at_least_two_datasets_with_the_positive_control():
    datasets = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())["datasets"]
    assert set(datasets) == set(SMOKE_DATASETS)


def test_repro_writes_metrics_for_every_dataset_task_and_arch(clone):
    for dataset in SMOKE_DATASETS:
        for task in TASKS:
            for arch in ARCHS:
                metrics = json.loads((clone / "metrics" / dataset / task / f"{arch}.json").read_text())
                assert (metrics["dataset"], metrics["task"], metrics["arch"]) == (dataset, task, arch)
                assert metrics["n_dev"] + metrics["n_test"] == SIZES[dataset]
                assert metrics["test"]["rmse"] > 0
                assert metrics["cv"]["rmse"]["mean"] > 0
                assert metrics["mlflow_run_id"]
    ran = _ran_stages((clone / "first_repro.log").read_text())
    assert set().union(*(_stages(d) for d in SMOKE_DATASETS)) | {"compare", "promote"} == ran


def test_repro_writes_the_leaderboard_and_a_champion_per_dataset_and_task(clone):
    report = (clone / "reports" / "benchmark.md").read_text()
    assert "leaderboard" in report.lower()
    summary = json.loads((clone / "reports" / "summary.json").read_text())
    assert set(summary["datasets"]) == set(SMOKE_DATASETS)
    for task in TASKS:
        rows = {row["arch"]: row for row in summary["leaderboard"][task]}
        assert set(ARCHS) <= set(rows)
        assert rows["mean"]["mean_scaled_score"] == 0.0
        assert all(row["datasets"] == len(SMOKE_DATASETS) for arch, row in rows.items() if arch in ARCHS)
        assert (clone / "reports" / "figures" / f"leaderboard_{task}.png").stat().st_size > 0
    promotion = json.loads((clone / "reports" / "promotion.json").read_text())
    assert set(promotion) == set(SMOKE_DATASETS)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}", registry_uri=f"sqlite:///{clone / 'mlflow.db'}")
    for dataset in SMOKE_DATASETS:
        assert set(promotion[dataset]) == set(TASKS)
        for task in TASKS:
            entry = promotion[dataset][task]
            assert entry["decision"] == "promoted" and entry["candidate_arch"] == "attention_lstm"
            champion = client.get_model_version_by_alias(f"genebench-{dataset}-{task}", "champion")
            assert str(champion.version) == entry["version"]


VERDICTS = {"better", "equivalent", "worse", "undecided"}


def test_repro_scores_importance_beside_its_ceilings(clone):
    """On the positive control, each attention model's AUROC has its tokens' ceiling beside it,
    and the task the near-oracle's permutation AUROC (every feature gene); pbmc68k has no
    planted truth, so neither."""
    summary = json.loads((clone / "reports" / "summary.json").read_text())
    for task in TASKS:
        synthetic = summary["datasets"]["synthetic"][task]
        assert synthetic["importance_ceiling"]["permutation_auroc"] > 0.85
        assert synthetic["importance_ceiling"]["targets"] == synthetic["targets"]
        for arch in ("attention_lstm", "attention_gru"):
            assert 0.5 <= synthetic["importance"][arch]["token_ceiling_auroc"] <= 1.0
        assert synthetic["importance"]["dnn"]["token_ceiling_auroc"] is None
        assert summary["datasets"]["pbmc68k"][task]["importance_ceiling"] is None
        assert summary["datasets"]["pbmc68k"][task]["importance"]["attention_lstm"]["token_ceiling_auroc"] is None
    report = (clone / "reports" / "benchmark.md").read_text()
    assert "a near-oracle that knows the generator's formula" in report


def test_repro_report_speaks_the_verdicts_with_their_numbers(clone):
    """summary.json's verdicts: every architecture against the best baseline by CV, each deep
    model against its own base too, with probabilities that add up, the rope relative to the
    reference's CV RMSE and the difference of the CV RMSEs; the report opens with them."""
    summary = json.loads((clone / "reports" / "summary.json").read_text())
    params = yaml.safe_load((clone / "params.yaml").read_text())
    rope = params["compare"]["rope"]
    report = (clone / "reports" / "benchmark.md").read_text()
    assert re.findall(r"^## (.+)$", report, re.M)[0] == "Verdicts"  # the report opens with them
    opening = report.split("## ")[1]
    for dataset in SMOKE_DATASETS:
        for task in TASKS:
            section = summary["datasets"][dataset][task]
            reference = section["best_baseline"]
            assert reference in ("mean", "ridge", "knn")
            cv = {arch: json.loads((clone / "metrics" / dataset / task / f"{arch}.json").read_text()) for arch in ARCHS}
            assert set(section["verdicts"]) == set(ARCHS) - {reference}
            for arch, verdict in section["verdicts"].items():
                assert verdict["against"] == reference and verdict["verdict"] in VERDICTS
                assert verdict["p_better"] + verdict["p_equivalent"] + verdict["p_worse"] == pytest.approx(1.0)
                assert verdict["rope"] == pytest.approx(rope * cv[reference]["cv"]["rmse"]["mean"])
                assert verdict["difference"] == pytest.approx(cv[arch]["cv"]["rmse"]["mean"]
                                                              - cv[reference]["cv"]["rmse"]["mean"], abs=1e-9)
                if arch in ("dnn", "lstm", "gru", "attention_lstm", "attention_gru"):
                    base = verdict["versus_base"]
                    assert base["against"] == "base" and base["verdict"] in VERDICTS
                    assert base["difference"] == pytest.approx(cv[arch]["cv"]["rmse"]["mean"]
                                                               - cv[arch]["base"]["cv"]["rmse"]["mean"], abs=1e-9)
                else:
                    assert verdict["versus_base"] is None
            label = "one target gene" if task == "single" else f"top {params['task']['top_k']} genes"
            assert f"`{dataset}`, {label} (task `{task}`)" in opening  # one sentence per dataset and task
    promotion = json.loads((clone / "reports" / "promotion.json").read_text())
    for dataset in SMOKE_DATASETS:
        for task in TASKS:
            assert promotion[dataset][task]["versus_best"]["verdict"] in VERDICTS | {"best"}


def test_a_clean_repro_prints_no_library_log_lines_or_progress_bars(clone):
    """No TensorFlow C++ log line (E0000/W0000), no WARNING, no MLflow "Downloading artifacts"
    bar, counted over what the first `dvc repro` printed on stdout and stderr."""
    output = (clone / "first_repro.log").read_text() + (clone / "first_repro.stderr.log").read_text()
    lines = re.split(r"[\r\n]+", output)  # a progress bar redraws itself with carriage returns
    noise = [line for line in lines if re.match(r"\s*(E0000|W0000|WARNING)", line)
             or "Downloading artifacts" in line or re.search(r"\d+/\d+ \[\d\d:\d\d", line)]
    assert noise == [], f"{len(noise)} noisy lines, first: {noise[:5]}"
    assert "Running stage 'promote'" in output  # the run being counted is the whole repro


def test_second_repro_runs_nothing(clone):
    result = _run(["dvc", "repro"], clone)
    assert _ran_stages(result.stdout) == set(), result.stdout
    status = _run(["dvc", "status"], clone)
    assert "up to date" in status.stdout.lower() or status.stdout.strip() == "", status.stdout


def test_editing_one_search_space_stales_only_that_architecture(clone):
    params_path = clone / "params.yaml"
    original = params_path.read_text()
    try:
        raw = yaml.safe_load(original)
        raw["models"]["gru"]["search_space"]["dropout"]["high"] = 0.3
        params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        gru_stages = {f"run@{dataset}-gru" for dataset in SMOKE_DATASETS}
        status = _run(["dvc", "status", "--json"], clone)
        assert set(json.loads(status.stdout)) == gru_stages, status.stdout
        # A dry run cannot know that gru's new results will differ, so compare and promote
        # (which depend on every run's outputs) show as skipped there; they rerun for real.
        dry = _run(["dvc", "repro", "--dry"], clone)
        assert _ran_stages(dry.stdout) == gru_stages, dry.stdout
    finally:
        params_path.write_text(original)


def test_importing_a_dataset_stales_only_its_stages_and_the_report(clone):
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 1.0, size=(50, 30)).round(3)  # 50: the smoke split needs 10 held-out samples
    lines = ["sample," + ",".join(f"gene{g:02d}" for g in range(30))]
    lines += [f"cell{s:02d}," + ",".join(map(str, row)) for s, row in enumerate(values)]
    (clone / "extra.csv").write_text("\n".join(lines) + "\n")
    saved = {name: (clone / name).read_text() for name in ("params.yaml", "data.dvc")}
    try:
        _run(["genebench", "data", "import", "extra.csv", "--name", "extra"], clone)
        assert "extra" in yaml.safe_load((clone / "params.yaml").read_text())["datasets"]
        # `dvc status`, not `dvc repro --dry`: a dry run cannot plan run@extra-* (DVC 3.67
        # fails hashing artifacts/prepared/extra, which only prepare@extra will write).
        status = _run(["dvc", "status", "--json"], clone)
        assert set(json.loads(status.stdout)) == _stages("extra") | {"compare", "promote"}, status.stdout
    finally:
        for name, text in saved.items():
            (clone / name).write_text(text)
        shutil.rmtree(clone / "data" / "extra", ignore_errors=True)
        (clone / "extra.csv").unlink()
    assert json.loads(_run(["dvc", "status", "--json"], clone).stdout) == {}


def test_an_experiment_registers_only_a_challenger(clone):
    saved = {name: (clone / name).read_text() for name in ("params.yaml", "dvc.lock", "reports/promotion.json")}
    try:
        result = _run(["dvc", "exp", "run", "-S", "promotion.min_improvement=0.5"], clone, timeout=1200)
        assert _ran_stages(result.stdout) == {"promote"}, result.stdout
        promotion = json.loads((clone / "reports" / "promotion.json").read_text())
        for dataset in SMOKE_DATASETS:
            for task in TASKS:
                entry = promotion[dataset][task]
                assert entry["decision"] == "registered", entry
                assert entry["champion_after"] == entry["champion_before"]
    finally:
        for name, text in saved.items():
            (clone / name).write_text(text)


@pytest.fixture(scope="session")
def chromium():
    """Session-scoped, so a missing browser skips (or fails, under CI) before the clone is built."""
    return chromium_binaries()


def test_mlflow_ui_names_datasets_links_the_champion_version_and_keeps_the_leaderboard_run_short(chromium, clone,
                                                                                                   tmp_path):
    """`genebench ui` over the finished smoke run, read in headless Chromium as a user reads it: an
    evaluate run's row names its dataset and data version, the champion's logged model links its
    registered version (which carries the champion alias), and the leaderboard run lists at most
    20 metrics (its table is an artifact), not one per architecture and score."""
    from mlflow import MlflowClient

    dataset, task = "pbmc68k", "single"
    store = f"sqlite:///{clone / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.get_experiment_by_name(f"genebench-{dataset}-{task}").experiment_id
    # The newest evaluate run is the runs table's first evaluate row (sorted by Created).
    evaluate_runs = [client.get_run(json.loads((clone / "metrics" / dataset / task / f"{arch}.json").read_text())
                                    ["mlflow_run_id"]) for arch in ARCHS]
    newest = max(evaluate_runs, key=lambda run: run.info.start_time)
    data_version = newest.data.tags["data_version"]
    model_name = f"genebench-{dataset}-{task}"
    champion = client.get_model_version_by_alias(model_name, "champion")
    logged_model = champion.source.removeprefix("models:/")  # the logged model's id, m-...
    leaderboard = client.get_experiment_by_name("genebench-leaderboard").experiment_id
    summary = client.search_runs([leaderboard], order_by=["attributes.start_time DESC"], max_results=1)[0]

    with genebench_ui(clone, tmp_path / "ui.log") as url, headless_chromium(*chromium) as browser:
        browser.get(f"{url}/#/experiments/{experiment}/runs")
        cell = f'[role=row][row-id="{newest.info.run_id}"] [role=gridcell][col-id="attributes.`Dataset`"]'
        shown = wait_for(browser, f"Dataset cell for run {newest.info.run_name}",
                         lambda b: next((e.text for e in b.find_elements(By.CSS_SELECTOR, cell) if e.text), None))
        assert shown.startswith(f"{dataset}-development ({data_version[:8]})"), shown

        browser.get(f"{url}/#/experiments/{experiment}/models/{logged_model}")
        version_page = f"#/models/{model_name}/versions/{champion.version}"
        wait_for(browser, f"link from the champion's logged model to {model_name} version {champion.version}",
                 lambda b: b.find_elements(By.CSS_SELECTOR, f'a[href="{version_page}"]'))
        # The logged model's sidebar: its registered version under "Model versions", and the
        # datasets its metrics name under "Datasets used": the development samples (CV) shown,
        # the held-out ones (test) behind "+1", in the popover it opens.
        versions = wait_for(browser, "the champion's version under Model versions of its logged model",
                            lambda b: _section_text(b, "Model versions", model_name))
        assert f"v{champion.version}" in versions, versions
        digest = data_version[:8]
        used = wait_for(browser, "the development dataset under Datasets used of the champion's logged model",
                        lambda b: _section_text(b, "Datasets used", f"{dataset}-development (#{digest})"))
        assert used.splitlines()[-1] == "+1", used  # one more dataset: the held-out samples
        _section(browser, "Datasets used").find_element(By.XPATH, ".//*[normalize-space(text())='+1']").click()
        wait_for(browser, "the held-out dataset in the Datasets used popover",
                 lambda b: [e for e in b.find_elements(By.CSS_SELECTOR, "[role=dialog]")
                            if f"{dataset}-held-out (#{digest})" in e.text])
        assert browser.find_elements(By.CSS_SELECTOR, f'a[href$="/runs/{champion.run_id}"]'), \
            "the logged model links its source run"
        browser.get(f"{url}/{version_page}")  # where the link leads (a click can land on a re-rendering page)
        wait_for(browser, "champion alias on the linked version page",
                 lambda b: b.find_elements(By.CSS_SELECTOR, '[role=status][title="champion"]'))

        browser.get(f"{url}/#/experiments/{leaderboard}/runs/{summary.info.run_id}")
        heading = wait_for(browser, "Metrics (N) heading of the leaderboard run",
                           lambda b: next((e.text for e in b.find_elements(By.TAG_NAME, "h4")
                                           if re.fullmatch(r"Metrics \(\d+\)", e.text.strip())), None))
        shown_count = int(re.search(r"\d+", heading).group())
        assert shown_count == len(summary.data.metrics) <= 20, (shown_count, sorted(summary.data.metrics))


def _section(browser, title: str):
    """The logged model page's sidebar section headed `title` (an h4 and what follows it)."""
    return browser.find_element(By.XPATH, f"//h4[normalize-space()='{title}']/..")


def _section_text(browser, title: str, expected: str) -> str | None:
    """That section's text once it shows `expected`; None before (the page still loading)."""
    sections = browser.find_elements(By.XPATH, f"//h4[normalize-space()='{title}']/..")
    text = sections[0].text if sections else ""
    return text if expected in text else None
