"""The canonical `data/` form: what every stage after import reads.

Files (all written deterministically and atomically, as one directory swap):

- `expression.npy`: float32 matrix, samples x genes, C order (memory-mappable).
- `genes.txt`, `samples.txt`: one id per line, in matrix order.
- `provenance.json`: where the matrix came from and what the source already did to the
  values; sorted keys, no paths, versions or timestamps (so the bytes are stable).
- `truth.npy` (optional, generated datasets only): float32, the same shape and units as
  `expression.npy`, the noiseless value of every cell, so a report can score the oracle.
  `FILES` lists the files every dataset has; this one is not among them.
- `programmes.json` (optional, generated datasets only): which latent programmes each gene
  reads, `{"genes": {gene id: {"kind": ..., "programmes": [int, ...], ...}}, "note": ...}`
  with sorted keys, so the report can score an importance against the genes that truly
  drive a target (`benchmark.report.importance`).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.errors import UserError
from benchmark.outputs import atomic_dir, dumps_json

MATRIX_FILE = "expression.npy"
GENES_FILE = "genes.txt"
SAMPLES_FILE = "samples.txt"
PROVENANCE_FILE = "provenance.json"
TRUTH_FILE = "truth.npy"
PROGRAMMES_FILE = "programmes.json"
FILES = (MATRIX_FILE, GENES_FILE, SAMPLES_FILE, PROVENANCE_FILE)


@dataclass(frozen=True)
class Dataset:
    """An expression matrix: `X` is float32 (n_samples, n_genes).

    `truth`, where known (a generated dataset), is the noiseless value of every cell:
    float32, the shape and units of `X`; `programmes`, where known, the latent programmes
    each gene reads (see the module docstring).
    """

    X: np.ndarray
    genes: list[str]
    samples: list[str]
    provenance: dict = field(default_factory=dict)
    truth: np.ndarray | None = None
    programmes: dict | None = None  # PROGRAMMES_FILE's content, where the generator is known

    def __post_init__(self):
        if self.truth is not None and self.truth.shape != self.X.shape:
            raise ValueError(f"truth is {self.truth.shape} but X is {self.X.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape


def _ids_text(ids: list[str]) -> bytes:
    return ("".join(f"{i}\n" for i in ids)).encode("utf-8")


def _npy_bytes(X: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(X, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def canonical_text_files(genes: list[str], samples: list[str], provenance: dict) -> dict[str, bytes]:
    """The bytes of the id files and the provenance, keyed by file name (all but the matrices)."""
    return {
        GENES_FILE: _ids_text(genes),
        SAMPLES_FILE: _ids_text(samples),
        PROVENANCE_FILE: dumps_json(provenance).encode("utf-8"),
    }


def canonical_bytes(ds: Dataset) -> dict[str, bytes]:
    """The exact bytes of every canonical file, keyed by file name (`truth.npy` only with a truth)."""
    files = {MATRIX_FILE: _npy_bytes(ds.X), **canonical_text_files(ds.genes, ds.samples, ds.provenance)}
    if ds.truth is not None:
        files[TRUTH_FILE] = _npy_bytes(ds.truth)
    if ds.programmes is not None:
        files[PROGRAMMES_FILE] = dumps_json(ds.programmes).encode("utf-8")
    return files


def write_dataset(ds: Dataset, directory: str | Path) -> None:
    """Replace `directory` with the canonical form of `ds` in one atomic swap."""
    write_files(canonical_bytes(ds), directory)


def write_files(files: dict[str, bytes], directory: str | Path) -> None:
    """Replace `directory` with exactly `files` (name -> bytes, e.g. `canonical_bytes`) in one atomic swap."""
    with atomic_dir(directory) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data)


def load_dataset(directory: str | Path, mmap: bool = True) -> Dataset:
    """Read the canonical form (and `truth.npy`, `programmes.json` where present); raises UserError naming what is missing."""
    directory = Path(directory)
    missing = [name for name in FILES if not (directory / name).exists()]
    if missing:
        raise UserError(
            f"{directory}: no canonical dataset ({missing[0]} missing); "
            "run `genebench data bootstrap` or `genebench data import PATH` first"
        )
    X = np.load(directory / MATRIX_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
    genes = (directory / GENES_FILE).read_text(encoding="utf-8").splitlines()
    samples = (directory / SAMPLES_FILE).read_text(encoding="utf-8").splitlines()
    provenance = json.loads((directory / PROVENANCE_FILE).read_text(encoding="utf-8"))
    if X.shape != (len(samples), len(genes)):
        raise UserError(
            f"{directory}: {MATRIX_FILE} is {X.shape[0]} x {X.shape[1]} but the id files "
            f"list {len(samples)} samples and {len(genes)} genes"
        )
    truth = None
    if (directory / TRUTH_FILE).exists():
        truth = np.load(directory / TRUTH_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
        if truth.shape != X.shape:
            raise UserError(f"{directory}: {TRUTH_FILE} is {truth.shape[0]} x {truth.shape[1]} "
                            f"but {MATRIX_FILE} is {X.shape[0]} x {X.shape[1]}")
    programmes = None
    if (directory / PROGRAMMES_FILE).exists():
        try:
            programmes = json.loads((directory / PROGRAMMES_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{directory / PROGRAMMES_FILE}: not valid JSON") from None
    return Dataset(X=X, genes=genes, samples=samples, provenance=provenance, truth=truth, programmes=programmes)


# -- versions: the md5s DVC records ----------------------------------------------------


def dvc_dir_md5(files: dict[str, bytes]) -> str:
    """The md5 DVC 3 records for a directory holding exactly `files` (relpath -> bytes).

    Relpaths may name sub-directories (`pbmc68k/expression.npy`). Uses dvc-data's own
    tree digest (a `.dir` object: the sorted JSON list of per-file md5 and relpath), so
    the value is the one `dvc add` / `dvc commit` would write.
    """
    return _tree_md5({name: (len(data), hashlib.md5(data).hexdigest()) for name, data in files.items()})


def _tree_md5(entries: dict[str, tuple[int, str]]) -> str:
    """DVC's `.dir` md5 over `entries`: relpath -> (size in bytes, md5 hex of the content)."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for name, (size, md5) in entries.items():
        tree.add(tuple(name.split("/")), Meta(size=size), HashInfo("md5", md5))
    tree.digest()
    return tree.hash_info.value


def dvc_tree_md5(directory: str | Path) -> str:
    """DVC's md5 of `directory` as it is on disk (files streamed, so any size will do)."""
    directory = Path(directory)
    entries = {}
    for path in sorted(directory.rglob("*")):
        if not path.is_file() or {".git", ".dvc"} & set(path.relative_to(directory).parts):
            continue
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        entries[path.relative_to(directory).as_posix()] = (path.stat().st_size, digest.hexdigest())
    return _tree_md5(entries)
