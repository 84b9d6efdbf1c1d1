"""params.yaml's comments say what the code does: the experiment names they promise are the
names tracking and compare give (a stale comment once promised `genebench-single`)."""

from __future__ import annotations

import re

from benchmark import TASKS
from benchmark.config import load_config
from benchmark.report.mlflow_run import EXPERIMENT_SUFFIX
from benchmark.tracking import experiment_name
from conftest import REPO


def _comment_above(key_path: tuple[str, str]) -> str:
    """The comment lines directly above (and beside) `section: key:` in params.yaml, joined."""
    lines = (REPO / "params.yaml").read_text().splitlines()
    section = lines.index(f"{key_path[0]}:")
    at = next(i for i in range(section + 1, len(lines)) if re.match(rf"^\s+{key_path[1]}:", lines[i]))
    above = []
    for line in reversed(lines[section + 1:at]):
        if not line.strip().startswith("#"):
            break
        above.insert(0, line.strip().lstrip("#").strip())
    beside = lines[at].split("#", 1)[1].strip() if "#" in lines[at] else ""
    return " ".join([*above, beside]).strip()


def test_the_experiment_comment_names_the_experiments_genebench_creates():
    config = load_config(REPO / "params.yaml", root=REPO)
    prefix = config.params.mlflow.experiment
    created = {experiment_name(config.for_dataset(d), t) for d in config.datasets for t in TASKS}
    created.add(f"{prefix}-{EXPERIMENT_SUFFIX}")
    comment = _comment_above(("mlflow", "experiment"))
    named = set(re.findall(rf"\b{re.escape(prefix)}-[A-Za-z0-9_.-]*[A-Za-z0-9]", comment))
    assert named, comment
    assert named <= created, (named - created, comment)
    assert "<experiment>-<dataset>-<task>" in comment
