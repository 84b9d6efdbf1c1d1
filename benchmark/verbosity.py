"""Quiet by default: the libraries' chatter a user need not see, and the switch that brings it back.

A clean run should look clean. TensorFlow's C++ side logs through absl straight to fd 2
(`E0000 ... oneDNN supports DT_BOOL only on platforms with AVX-512`, `W0000 ...`), which
`TF_CPP_MIN_LOG_LEVEL=2` does not stop for ERROR lines; 3 does (measured: the pre-init
`E0000 ... failed call to cuInit` line goes at 3 and stays at 2). MLflow draws a
"Downloading artifacts" progress bar each time it reads a model back (twice per
evaluation, when it checks the logged input example), unless
`MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR` is false.

`genebench --verbose` or `GENEBENCH_LOG=debug` leaves every library at its own default.
The settings go through the environment, so DVC stage commands and spawned tune workers
inherit them; a value the user set wins.
"""

from __future__ import annotations

import os

ENV = "GENEBENCH_LOG"


def verbose() -> bool:
    """True when the user asked for the libraries' own output (`GENEBENCH_LOG=debug`)."""
    return os.environ.get(ENV, "").strip().lower() == "debug"


def set_verbose() -> None:
    """`--verbose`: this process and the processes it starts show everything."""
    os.environ[ENV] = "debug"


def quiet_environment() -> None:
    """Set the quiet defaults (before TensorFlow or MLflow is imported), unless verbose."""
    if verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run ... at: http://..." and "View experiment ..." for every run
    # that ends against a tracking server: two lines per trial.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
