"""The bundled default dataset: scanpy's pbmc68k_reduced, its log-normalised `raw.X`.

The file ships inside the scanpy package (pinned exactly in pyproject.toml), so this works
offline and gives the same bytes wherever that scanpy version is installed. The file is
read with anndata directly, which is what `scanpy.datasets.pbmc68k_reduced()` does,
without paying for importing scanpy.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

from benchmark.data.canonical import Dataset
from benchmark.data.readers import dense_float32
from benchmark.errors import UserError

PBMC68K_FILE = Path("datasets") / "10x_pbmc68k_reduced.h5ad"

PROVENANCE = {
    "source": "scanpy pbmc68k_reduced (raw.X): 10x Genomics fresh 68k PBMCs (donor A), subsampled to 700 cells",
    "values": "log-normalised by the source (scanpy: per-cell normalisation, then log1p); not scaled",
    "format": "h5ad",
    "matrix": "raw.X",
    "orientation": "samples as rows, genes as columns",
}


def pbmc68k_path() -> Path:
    spec = importlib.util.find_spec("scanpy")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("scanpy is not installed; install the project with `pip install -c requirements.lock -e .`")
    path = Path(next(iter(spec.submodule_search_locations))) / PBMC68K_FILE
    if not path.exists():
        raise UserError(f"{path}: the scanpy package does not ship pbmc68k_reduced; reinstall the pinned scanpy")
    return path


def pbmc68k_reduced() -> Dataset:
    """700 cells x 765 genes, float32, the log-normalised `raw.X` of pbmc68k_reduced."""
    import anndata

    with warnings.catch_warnings():
        # The 2018 file stores graphs under uns; anndata moves them to obsp and warns (as scanpy silences).
        warnings.simplefilter("ignore", FutureWarning)
        adata = anndata.read_h5ad(pbmc68k_path())
    return Dataset(
        X=dense_float32(adata.raw.X),
        genes=[str(g) for g in adata.raw.var_names],
        samples=[str(s) for s in adata.obs_names],
        provenance=dict(PROVENANCE),
    )
