"""genebench's compare stage: the leaderboard across datasets and per dataset the tables,
verdicts, statistics and figures (`benchmark.report.summary`, which says what it writes).

Rooms: `results` reads the evaluate stage's files; `held_out` the prepared held-out split;
`statistics` and `verdicts` decide the words; `leaderboard` ranks across datasets;
`importance` scores the importance tables; `markdown`, `plots` and `wording` write;
`mlflow_run` logs the summary run.
"""

from benchmark.report.summary import build, compare

__all__ = ["build", "compare"]
