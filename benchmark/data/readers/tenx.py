"""10x Genomics (Cell Ranger) matrix directories, read whole with scanpy's `read_10x_mtx`.

v3 `matrix.mtx.gz`, `features.tsv.gz`, `barcodes.tsv.gz`, or v2 `matrix.mtx`, `genes.tsv`,
`barcodes.tsv`, each name with an optional common prefix (pass the matrix file to pick
one of several prefixes). Barcodes are samples; genes are named by their ids (the first
column), Gene Expression features only. The sparse matrix is read whole: a Matrix Market
file lists its entries in no order the format promises, so no block of barcodes is
complete before its last line is read; it is made dense a block of barcodes at a time.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from benchmark.data.readers.source import VALUES_AS_STORED, MatrixSource, block_rows, dense_float32, one_line
from benchmark.errors import UserError

MTX_FILE = re.compile(r"^(.*)matrix\.mtx(\.gz)?$")
# The two layouts scanpy's read_10x_mtx reads (it picks v2 when genes.tsv exists).
_TENX_LAYOUTS = {
    "Cell Ranger v2": ("matrix.mtx", "genes.tsv", "barcodes.tsv"),
    "Cell Ranger v3": ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz"),
}
_TENX_PARTS = re.compile(r"^(matrix\.mtx|features\.tsv|genes\.tsv|barcodes\.tsv)(\.gz)?$")


def _tenx_location(path: Path) -> tuple[Path, str]:
    """(directory, file-name prefix) of the 10x matrix that `path` (a directory or its matrix file) names."""
    if path.is_file():
        match = MTX_FILE.match(path.name)
        if match is None:
            raise UserError(f"{path}: a 10x Genomics matrix is a directory, or its file named matrix.mtx[.gz] "
                            "(with an optional prefix)")
        return path.parent, match.group(1)
    prefixes = sorted({m.group(1) for p in path.iterdir() if (m := MTX_FILE.match(p.name)) and p.is_file()})
    if not prefixes:
        raise UserError(f"{path}: no matrix.mtx or matrix.mtx.gz: not a 10x Genomics directory (expected "
                        "matrix.mtx[.gz], features.tsv[.gz] or genes.tsv, barcodes.tsv[.gz])")
    if len(prefixes) > 1:
        raise UserError(f"{path}: holds {len(prefixes)} 10x matrices (prefixes {', '.join(map(repr, prefixes))}); "
                        f"pass one of their matrix files, e.g. {path / (prefixes[0] + 'matrix.mtx.gz')}")
    return path, prefixes[0]


def open_10x(path: Path, fmt: str, transpose: bool | None, block_size: int | None) -> MatrixSource:
    """A 10x Genomics matrix directory via `scanpy.read_10x_mtx`: barcodes x genes, in dense blocks of barcodes.

    Genes are named by their ids (features.tsv's first column): the symbols of the second
    column repeat (scanpy would rename them '-1', '-2'), ids do not. Only 'Gene
    Expression' features are kept (antibody or guide captures are not expression).
    """
    if transpose:
        raise UserError(f"{path}: --transpose does not apply to a 10x directory (barcodes are samples by definition)")
    directory, prefix = _tenx_location(path)
    present = {p.name[len(prefix):] for p in directory.iterdir()
               if p.name.startswith(prefix) and _TENX_PARTS.match(p.name[len(prefix):])}
    layout = "Cell Ranger v2" if "genes.tsv" in present else "Cell Ranger v3"
    missing = [name for name in _TENX_LAYOUTS[layout] if name not in present]
    if missing:
        found = ", ".join(prefix + name for name in sorted(present)) or "none of its files"
        raise UserError(
            f"{directory}: found {found} but not {prefix}{missing[0]}; a 10x directory is read in scanpy's two "
            f"layouts, v3 ({', '.join(_TENX_LAYOUTS['Cell Ranger v3'])}) or v2 "
            f"({', '.join(_TENX_LAYOUTS['Cell Ranger v2'])}): gzip or gunzip the files to match one"
        )
    import scanpy as sc
    import scipy.sparse

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scanpy/anndata chatter about names and dtypes
            adata = sc.read_10x_mtx(directory, var_names="gene_ids", prefix=prefix or None)
        matrix = scipy.sparse.csr_matrix(adata.X)  # row slices of CSR are cheap
    except Exception as exc:  # a malformed .mtx or .tsv raises ValueError, KeyError, EOFError, ...
        raise UserError(f"{directory}: not a readable 10x Genomics matrix ({one_line(exc)})") from None
    genes_file = prefix + _TENX_LAYOUTS[layout][1]
    provenance = {"format": "10x", "layout": layout, "orientation": "barcodes (cells) as samples, genes as columns",
                  "gene_ids": f"first column of {_TENX_LAYOUTS[layout][1]}; Gene Expression features only",
                  "values": VALUES_AS_STORED}
    note = (f"10x Genomics matrix ({layout}{', prefix ' + repr(prefix) if prefix else ''}): barcodes as samples, "
            f"genes named by {genes_file}'s first column (ids are unique; symbols may repeat)")
    barcodes = [str(s) for s in adata.obs_names]
    step = block_rows(matrix.shape[1], block_size)
    blocks = ((barcodes[start:start + step], dense_float32(matrix[start:start + step]))
              for start in range(0, len(barcodes), step))
    return MatrixSource(path=path, genes_are_rows=False, col_ids=[str(g) for g in adata.var_names], note=note,
                        provenance=provenance, blocks=blocks)
