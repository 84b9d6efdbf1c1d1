"""h5ad (AnnData) files, read in anndata's backed mode a block of obs at a time.

The matrix is `adata.raw.X` with `raw.var_names` when `raw` is present (scanpy keeps the
full log-normalised matrix there, while `X` is often scaled or subset), else `adata.X`;
dense or sparse. obs are samples, var are genes (the other way round with `--transpose`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from benchmark.data.readers.source import (GENES_AS_ROWS, SAMPLES_AS_ROWS, VALUES_AS_STORED, MatrixSource,
                                           block_rows, dense_float32, one_line)
from benchmark.errors import UserError


def h5ad_matrix(adata) -> tuple[object, list[str], str]:
    """(matrix, gene ids, which) of an AnnData: `raw.X` when raw is present, else `X`."""
    if adata.raw is not None and adata.raw.X is not None:
        return adata.raw.X, [str(g) for g in adata.raw.var_names], "raw.X"
    return adata.X, [str(g) for g in adata.var_names], "X"


def open_h5ad(path: Path, fmt: str, transpose: bool | None, block_size: int | None) -> MatrixSource:
    """The h5ad file in anndata's backed mode: its matrix is read block by block of obs."""
    import anndata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # old-layout files: anndata moves elements and warns
            adata = anndata.read_h5ad(path, backed="r")
        matrix, var_ids, which = h5ad_matrix(adata)
        if matrix is None:
            raise UserError(f"{path}: the AnnData object has no X matrix")
        dtype = np.dtype(matrix.dtype)
        obs_ids = [str(s) for s in adata.obs_names]
    except UserError:
        raise
    except Exception as exc:  # h5py/anndata raise OSError, KeyError, ... for a damaged file
        raise UserError(f"{path}: not a readable h5ad file ({one_line(exc)})") from None
    if not np.issubdtype(dtype, np.number) and dtype.kind != "b":
        raise UserError(f"{path}: {which} is not numeric")
    step = block_rows(len(var_ids), block_size)

    def blocks():
        try:
            for start in range(0, len(obs_ids), step):
                yield obs_ids[start:start + step], dense_float32(matrix[start:start + step])
        except Exception as exc:
            raise UserError(f"{path}: not a readable h5ad file ({one_line(exc)})") from None
        finally:
            adata.file.close()

    orientation = GENES_AS_ROWS if transpose else SAMPLES_AS_ROWS
    note = f"used {which} ({'raw is present' if which == 'raw.X' else 'no raw'}); obs as {'genes (--transpose)' if transpose else 'samples'}"
    provenance = {"format": fmt, "matrix": which, "orientation": orientation, "values": VALUES_AS_STORED}
    return MatrixSource(path=path, genes_are_rows=bool(transpose), col_ids=var_ids, note=note, provenance=provenance,
                        blocks=blocks())
