"""Where a genebench command's memory peaks: its anonymous RSS, with the main thread's stack at each new peak.

    python scripts/memory_peaks.py evaluate --dataset scale --task multi --arch dnn   # in a project

Runs `python -m benchmark ARGS` in this process; a thread samples the anonymous RSS (RssAnon of
/proc/self/status, what a cgroup memory limit counts and cannot reclaim) every 50 ms and,
whenever it is 16 MiB above the last peak recorded, keeps the main thread's stack. At exit
(the CLI ends with `os._exit`, which this wraps) it prints the highest peak and the last 14
recorded peaks, each with its genebench, scikit-learn and Keras frames (`MEMORY_PEAKS_ALL=1`:
first every recorded peak, one line each). `MEMORY_PEAKS_LIVE=1` prints each peak's line as
it is recorded, so a process killed at a memory limit (SIGKILL: no exit to report at) still
shows its climb up to the kill. This is how
results/scale.md found the dnn's peak in the held-out permutation importance. Needs psutil.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import traceback

import psutil

STEP = 16 << 20
SHOWN = 14


def anonymous_rss() -> int:
    """This process's anonymous resident memory (RssAnon), in bytes: what a memory limit
    cannot reclaim. Plain RSS also counts the pages of a memory-mapped matrix, which the
    kernel drops under pressure, and overstates a streamed fit by gigabytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) << 10
    return psutil.Process().memory_info().rss  # no RssAnon (not Linux): plain RSS


def _line(rss: int, seconds: float, stack: list[str]) -> str:
    """One peak on one line: RSS, time, its innermost genebench frames (innermost first)."""
    ours = [line.split("/benchmark/")[-1] for line in stack if "/benchmark/" in line]
    return f"{rss >> 20:6d} MiB {seconds:7.1f} s  " + " < ".join(reversed(ours[-4:]))


def main() -> None:
    main_thread = threading.get_ident()
    peaks: list[tuple[int, float, list[str]]] = []
    done = threading.Event()
    started = time.time()
    live = bool(os.environ.get("MEMORY_PEAKS_LIVE"))

    def sample() -> None:
        best = 0
        while not done.wait(0.05):
            rss = anonymous_rss()
            if rss > best + STEP:
                best = rss
                stack = traceback.extract_stack(sys._current_frames().get(main_thread))
                peaks.append((rss, time.time() - started, [f"{f.filename}:{f.lineno} {f.name}" for f in stack]))
                if live:
                    print("peak " + _line(*peaks[-1]), flush=True)

    def report() -> None:
        done.set()
        if not peaks:
            return
        print(f"peak rss {max(p[0] for p in peaks) >> 20} MiB", flush=True)
        if os.environ.get("MEMORY_PEAKS_ALL"):  # the whole climb, one line a peak: its innermost genebench frames
            for peak in peaks:
                print(_line(*peak))
        for rss, seconds, stack in peaks[-SHOWN:]:
            print(f"--- {rss >> 20} MiB at {seconds:.1f} s")
            print("\n".join("   " + line for line in stack
                            if any(key in line for key in ("benchmark", "sklearn", "keras"))), flush=True)

    real_exit = os._exit

    def exit_after_report(code: int) -> None:
        report()
        real_exit(code)

    os._exit = exit_after_report
    threading.Thread(target=sample, daemon=True).start()
    sys.argv = ["benchmark", *sys.argv[1:]]
    try:
        runpy.run_module("benchmark", run_name="__main__")
    finally:
        report()


if __name__ == "__main__":
    main()
