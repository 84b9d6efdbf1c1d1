"""Atomic, deterministic output files: write to a temporary sibling, then rename.

A stage that fails half-way leaves the previous output in place, never a truncated one.

- Temporary siblings are named `.<name>.<pid>-<host>-<random>.tmp` (`host`: 8 hex digits
  of a hash of the host name). A process that is killed leaves its temporary behind; the
  next write to the same path removes those of this host whose process is gone. Another
  host's temporaries are left alone (its process ids mean nothing here): on a shared disk,
  a killed run's leftovers go when that host next writes the path.
- A directory is replaced with two renames (`path` -> `.<name>.old`, temporary -> `path`);
  POSIX has no portable atomic swap of two directories. A kill between the renames leaves
  `path` missing and `.<name>.old` holding the previous output: `recover_dir(path)`, which
  `atomic_dir` calls on entry, renames it back. Readers do not call it: a rename by a
  reader could race a writer that is between its two renames.
- Permissions follow the umask, as `open()` and `mkdir` do (files `0o666 & ~umask`,
  directories `0o777 & ~umask`), so teammates on a shared disk read what their umask
  allows, not the 0600/0700 of `tempfile.mkstemp`/`mkdtemp`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import psutil

_TMP_SUFFIX = ".tmp"
# The middle of a temporary's name: pid, host tag, random part. Anything else between
# `.<name>.` and `.tmp` belongs to some other path (e.g. `.<name>.csv.<...>.tmp` to `<name>.csv`).
_TMP_TOKEN = re.compile(r"^(\d+)-([0-9a-f]{8})-[0-9a-f]{16}$")
# Temporaries of genebench versions before this naming (tempfile's 8 random characters):
# no process id to check, and no live writer of that version once this one runs.
_LEGACY_TOKEN = re.compile(r"^[a-z0-9_]{8}$")


def dumps_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, two-space indent, trailing newline, no NaN."""
    return json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{_host_tag()}-{secrets.token_hex(8)}{_TMP_SUFFIX}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_stale_tmp(path: str | Path) -> list[Path]:
    """Remove the temporaries that killed writers of `path` left beside it; returns them.

    A temporary is stale when it was made on this host by a process that no longer runs
    (or by a genebench version that named temporaries without a process id).
    """
    path = Path(path)
    prefix, host = f".{path.name}.", _host_tag()
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(_TMP_SUFFIX)):
            continue
        token = entry.name[len(prefix):-len(_TMP_SUFFIX)]
        match = _TMP_TOKEN.match(token)
        if match:
            pid, tag = int(match.group(1)), match.group(2)
            stale = tag == host and pid != os.getpid() and not psutil.pid_exists(pid)
        else:
            stale = bool(_LEGACY_TOKEN.match(token))
        if stale:
            _remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def _old_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_dir(path: str | Path) -> bool:
    """Finish or undo an `atomic_dir` swap that a kill interrupted; True if `path` was restored.

    `path` missing and `.<name>.old` present: the kill came between the two renames, so
    the previous output is renamed back. Both present: it came after the second rename,
    so the leftover `.old` is removed.
    """
    path = Path(path)
    old = _old_name(path)
    if not old.exists():
        return False
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        return False
    os.replace(old, path)
    return True


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; the file's mode is `0o666 & ~umask`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)
    tmp = _tmp_name(path)
    # os.open applies the umask to 0o666, as open() does; mkstemp would force 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, dumps_json(obj))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces `path` as a whole on success.

    On entry, a swap that a kill interrupted is recovered (`recover_dir`) and stale
    temporaries are removed (`clean_stale_tmp`). The directory's mode is `0o777 & ~umask`;
    files written into it get the umask's modes as usual.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    clean_stale_tmp(path)
    tmp = _tmp_name(path)
    os.mkdir(tmp, 0o777)  # the umask applies, unlike mkdtemp's 0o700
    try:
        yield tmp
        if path.exists():
            old = _old_name(path)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)  # a kill just before this line is what recover_dir undoes
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
