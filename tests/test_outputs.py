"""Atomic outputs: a kill between `atomic_dir`'s two renames is recovered, killed writers'
temporaries are cleaned, and files and directories get the modes the umask asks for."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmark import outputs
from benchmark.outputs import atomic_dir, clean_stale_tmp, recover_dir, write_bytes, write_text

REPO = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (`umask(value)`), restoring the previous one after."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda value: os.umask(value)
    os.umask(previous)


def _write_tree(path: Path, text: str) -> None:
    with atomic_dir(path) as tmp:
        (tmp / "result.txt").write_text(text)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_kill_between_the_two_renames_is_recovered_by_the_next_write(tmp_path):
    """A real SIGKILL right before the second rename: the output is gone, `.old` holds it;
    the next `atomic_dir` on the path restores it first, so a failing write keeps it."""
    out = tmp_path / "prepared"
    _write_tree(out, "first")
    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from benchmark import outputs

        real_replace = os.replace
        calls = []

        def replace_then_die(src, dst):
            calls.append(src)
            if len(calls) == 2:  # path -> .old done; temporary -> path not yet
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        outputs.os.replace = replace_then_die
        with outputs.atomic_dir(Path({str(out)!r})) as tmp:
            (tmp / "result.txt").write_text("second")
    """)
    killed = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The state a kill between the renames leaves: no output, the previous one in .old, and
    # the dead writer's temporary holding the new one.
    assert not out.exists()
    assert (tmp_path / ".prepared.old" / "result.txt").read_text() == "first"
    leftovers = [n for n in _siblings(out) if n.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".prepared.")

    with pytest.raises(RuntimeError, match="stage failed"):
        with atomic_dir(out):
            raise RuntimeError("stage failed")
    assert (out / "result.txt").read_text() == "first"
    assert _siblings(out) == ["prepared"]  # .old renamed back, the dead writer's temporary removed

    _write_tree(out, "third")
    assert (out / "result.txt").read_text() == "third" and _siblings(out) == ["prepared"]


def test_recover_dir_restores_old_or_drops_a_leftover(tmp_path):
    out, old = tmp_path / "figures", tmp_path / ".figures.old"
    old.mkdir()
    (old / "a.png").write_bytes(b"previous")
    assert recover_dir(out) is True
    assert (out / "a.png").read_bytes() == b"previous" and not old.exists()
    # Killed after the second rename: the output is the new one, .old a leftover.
    old.mkdir()
    (old / "a.png").write_bytes(b"older")
    assert recover_dir(out) is False
    assert (out / "a.png").read_bytes() == b"previous" and not old.exists()
    assert recover_dir(out) is False  # nothing to do


def test_only_temporaries_of_dead_writers_on_this_host_are_cleaned(tmp_path):
    target = tmp_path / "ridge.json"
    host = outputs._host_tag()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    names = {
        "dead writer here": f".ridge.json.{dead_pid}-{host}-{'0' * 16}.tmp",
        "live writer here": f".ridge.json.{os.getppid()}-{host}-{'1' * 16}.tmp",
        "other host": f".ridge.json.{dead_pid}-{'f' * 8 if host != 'f' * 8 else '0' * 8}-{'2' * 16}.tmp",
        "older genebench": ".ridge.json.ab_c12x9.tmp",
        "another file's": f".ridge.json.bak.{dead_pid}-{host}-{'3' * 16}.tmp",
    }
    for what, name in names.items():
        (tmp_path / name).mkdir() if what == "dead writer here" else (tmp_path / name).write_text(what)
    removed = clean_stale_tmp(target)
    assert sorted(p.name for p in removed) == sorted([names["dead writer here"], names["older genebench"]])
    write_text(target, "{}\n")
    assert sorted(_siblings(target)) == sorted(
        [names["live writer here"], names["other host"], names["another file's"], "ridge.json"])


def test_a_failed_directory_write_keeps_the_previous_output_and_no_temporary(tmp_path):
    out = tmp_path / "evaluation"
    _write_tree(out, "first")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "result.txt").write_text("half")
            raise KeyboardInterrupt
    assert (out / "result.txt").read_text() == "first" and _siblings(out) == ["evaluation"]


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                       (0o077, 0o600, 0o700)])
def test_modes_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    path = tmp_path / "metrics" / "mean.json"
    write_bytes(path, b"{}\n")
    assert _mode(path) == file_mode
    write_bytes(path, b"[]\n")  # replacing a file gives the same mode
    assert _mode(path) == file_mode
    out = tmp_path / "prepared"
    _write_tree(out, "x")
    assert _mode(out) == dir_mode and _mode(out / "result.txt") == file_mode
    _write_tree(out, "y")  # the swap path
    assert _mode(out) == dir_mode
