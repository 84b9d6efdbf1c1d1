"""Dead trials: a RUNNING trial whose process is gone is failed, so it never blocks a study.

RDB storage runs Optuna's heartbeat, and `study.optimize` fails trials silent for
`tuning.grace_period`. Trials also record their owner (`host`, `pid`): a RUNNING trial
whose process is gone from this host is failed at once (`study.tell`). Journal storage
has no heartbeat in Optuna 5: there a trial killed on another host stays RUNNING (it
never counts as complete).
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import psutil


def host_id() -> str:
    """Hostname plus kernel boot id: containers sharing both but not a PID namespace would
    wrongly fail each other's trials."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def claim(trial) -> None:
    """Record this process as the trial's owner (user attrs `host`, `pid`)."""
    trial.set_user_attr("host", host_id())
    trial.set_user_attr("pid", os.getpid())


def fail_dead_trials(study, grace_period: float) -> list[int]:
    """Fail RUNNING trials whose process is gone; returns their numbers.

    Optuna's heartbeat check (RDB storage) fails trials silent for `grace_period`. Beyond
    it: a trial whose owner (`host`, `pid` user attrs) is no longer alive on this host, and
    one that never recorded an owner within `grace_period` of its start (killed between
    Optuna's ask and its first heartbeat, so the heartbeat check never sees it).
    """
    from datetime import datetime

    import optuna
    from optuna.trial import TrialState

    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat; a no-op for journal storage
    here, now = host_id(), datetime.now()
    still_running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = running - {t.number for t in still_running}
    for trial in still_running:
        attrs = trial.user_attrs
        dead = attrs.get("host") == here and "pid" in attrs and not psutil.pid_exists(int(attrs["pid"]))
        unclaimed = ("pid" not in attrs and trial.datetime_start is not None
                     and (now - trial.datetime_start).total_seconds() > grace_period)
        if dead or unclaimed:
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.add(trial.number)
    return sorted(failed)
