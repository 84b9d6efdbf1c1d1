"""`genebench data bootstrap | import | validate`: bring a matrix into the canonical data/.

Nothing is written before every check has passed: bootstrap compares the DVC hash of the
bytes it is about to write with the md5 recorded in data.dvc first, and import validates
the whole matrix first. DVC itself runs as a subprocess (`python -m dvc`) in the project
root, so the venv's DVC is the one used whatever PATH says.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

from benchmark.config import Config
from benchmark.data.canonical import Dataset, canonical_bytes, write_dataset
from benchmark.data.readers import read_matrix
from benchmark.data.validation import check_dataset
from benchmark.errors import DataVersionMismatch, UserError


def dvc_pointer(config: Config) -> Path:
    """The .dvc file that tracks the data directory (`data.dvc` for `data.dir: data`)."""
    data_dir = config.data_dir
    return data_dir.with_name(data_dir.name + ".dvc")


def dvc_dir_md5(files: dict[str, bytes]) -> str:
    """The md5 DVC 3 records for a directory holding exactly `files` (name -> bytes).

    Uses dvc-data's own tree digest (a `.dir` object: the sorted JSON list of per-file md5
    and relpath), so the value is the one `dvc add` / `dvc commit` would write.
    """
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for name, data in files.items():
        tree.add((name,), Meta(size=len(data)), HashInfo("md5", hashlib.md5(data).hexdigest()))
    tree.digest()
    return tree.hash_info.value


def recorded_md5(pointer: Path) -> str | None:
    """The md5 of the first output recorded in a .dvc file, or None if it records none."""
    try:
        content = yaml.safe_load(pointer.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"{pointer.name}: not valid YAML; restore it with `git checkout {pointer.name}`") from None
    outs = content.get("outs") if isinstance(content, dict) else None
    if not outs or not isinstance(outs, list) or not isinstance(outs[0], dict):
        return None
    md5 = outs[0].get("md5")
    return str(md5) if md5 else None


def require_dvc_repo(config: Config) -> None:
    if not (config.root / ".dvc").is_dir():
        raise UserError(f"{config.root}: not a DVC repository (no .dvc directory); run `dvc init` there first")


class DvcFailed(Exception):
    """A DVC subprocess failed: an internal error (exit 1), reported in one line."""


def run_dvc(config: Config, *args: str) -> None:
    """Run `dvc ARGS` in the project root; raises DvcFailed with DVC's message."""
    require_dvc_repo(config)
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=config.root, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout).split())
        raise DvcFailed(f"`dvc {' '.join(args)}` failed in {config.root} (exit {result.returncode}): {detail}")


def _relative(config: Config, path: Path) -> str:
    return str(path.relative_to(config.root)) if path.is_relative_to(config.root) else str(path)


def bootstrap(config: Config) -> int:
    """Write pbmc68k_reduced into data/, check it against data.dvc, commit it to the DVC cache."""
    from benchmark.data.bundled import pbmc68k_reduced

    require_dvc_repo(config)
    ds = pbmc68k_reduced()
    files = canonical_bytes(ds)
    md5 = dvc_dir_md5(files)
    pointer = dvc_pointer(config)
    data_rel = _relative(config, config.data_dir)
    recorded = recorded_md5(pointer) if pointer.exists() else None
    if recorded is not None and recorded != md5:
        # Checked before writing, so data/ is left exactly as it was.
        raise DataVersionMismatch(
            f"{pointer.name}: records md5 {recorded} for {data_rel}/ but the bundled pbmc68k_reduced gives {md5}; "
            f"{data_rel}/ left unchanged (does {pointer.name} track an imported matrix? is the pinned scanpy installed?)"
        )
    write_dataset(ds, config.data_dir)
    try:
        if recorded is None:
            run_dvc(config, "add", "--quiet", data_rel)
            action = f"created {pointer.name}"
        else:
            run_dvc(config, "commit", "--force", "--quiet", pointer.name)
            action = f"matches {pointer.name}"
    except DvcFailed as exc:
        print(f"genebench: error: {exc}", file=sys.stderr)
        return 1
    n_samples, n_genes = ds.shape
    print(f"wrote {data_rel}/: pbmc68k_reduced raw.X, {n_samples} samples x {n_genes} genes; md5 {md5} {action}; in the DVC cache")
    return 0


def _read_checked(config: Config, path: Path, fmt: str | None, transpose: bool) -> tuple[Dataset, str]:
    ds, note = read_matrix(path, fmt=fmt, transpose=transpose)
    check_dataset(ds, config, str(path))
    return ds, note


def import_matrix(config: Config, path: Path, fmt: str | None = None, transpose: bool = False) -> int:
    """Validate a user matrix, write it as the canonical data/, `dvc add` it."""
    ds, note = _read_checked(config, path, fmt, transpose)
    require_dvc_repo(config)
    write_dataset(ds, config.data_dir)
    data_rel = _relative(config, config.data_dir)
    try:
        run_dvc(config, "add", "--quiet", data_rel)
    except DvcFailed as exc:
        print(f"genebench: error: {exc}", file=sys.stderr)
        return 1
    n_samples, n_genes = ds.shape
    print(f"{path}: {note}")
    print(f"wrote {data_rel}/: {n_samples} samples x {n_genes} genes; tracked by {dvc_pointer(config).name} "
          f"(md5 {recorded_md5(dvc_pointer(config))}); commit it with git")
    return 0


def validate_matrix(config: Config, path: Path, fmt: str | None = None, transpose: bool = False) -> int:
    """The checks of `import_matrix`; writes nothing."""
    import numpy as np

    from benchmark.data.validation import apply_transform

    ds, note = _read_checked(config, path, fmt, transpose)
    n_samples, n_genes = ds.shape
    variable = int((np.var(apply_transform(ds.X, config.params.data.transform), axis=0) > 0).sum())
    print(f"{path}: {note}")
    print(f"{path}: valid: {n_samples} samples x {n_genes} genes, {variable} vary across samples "
          f"(data.transform={config.params.data.transform})")
    return 0
