"""The canonical `data/` form: what every stage after import reads.

Files (all written deterministically and atomically, as one directory swap):

- `expression.npy`: float32 matrix, samples x genes, C order (memory-mappable).
- `genes.txt`, `samples.txt`: one id per line, in matrix order.
- `provenance.json`: where the matrix came from and what the source already did to the
  values; sorted keys, no paths, versions or timestamps (so the bytes are stable).
"""

from __future__ import annotations

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
FILES = (MATRIX_FILE, GENES_FILE, SAMPLES_FILE, PROVENANCE_FILE)


@dataclass(frozen=True)
class Dataset:
    """An expression matrix: `X` is float32 (n_samples, n_genes)."""

    X: np.ndarray
    genes: list[str]
    samples: list[str]
    provenance: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape


def _ids_text(ids: list[str]) -> bytes:
    return ("".join(f"{i}\n" for i in ids)).encode("utf-8")


def _npy_bytes(X: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(X, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def canonical_bytes(ds: Dataset) -> dict[str, bytes]:
    """The exact bytes of every canonical file, keyed by file name."""
    return {
        MATRIX_FILE: _npy_bytes(ds.X),
        GENES_FILE: _ids_text(ds.genes),
        SAMPLES_FILE: _ids_text(ds.samples),
        PROVENANCE_FILE: dumps_json(ds.provenance).encode("utf-8"),
    }


def write_dataset(ds: Dataset, directory: str | Path) -> None:
    """Replace `directory` with the canonical form of `ds` in one atomic swap."""
    with atomic_dir(directory) as tmp:
        for name, data in canonical_bytes(ds).items():
            (tmp / name).write_bytes(data)


def load_dataset(directory: str | Path, mmap: bool = True) -> Dataset:
    """Read the canonical form; raises UserError naming what is missing."""
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
    return Dataset(X=X, genes=genes, samples=samples, provenance=provenance)
