"""Fits that depend only on a training part's values, kept for the next fit on the same rows.

A deep model's fit starts with closed-form work that no hyperparameter of the network
changes: the base (`benchmark.models.residual.fit_base`: ridge and kNN, their out-of-fold
predictions) and the gene tree the tokens are cut from (`benchmark.models.tokens`). Every
trial of a study refits on the same tuning fold, so without a cache each trial pays that
work again (0.3-1.0 s of a 2 s fit at pbmc68k's shape, results/profile_fit.md).

`FIT_CACHE.get_or_fit(key, arrays, fit)` returns what `fit()` returned the last time it
was called with the same `key` and the same `arrays` (compared by shape, dtype and a
BLAKE2 digest of their bytes), else calls `fit()` and keeps the result. Results are the
same objects, so the fits cached must be deterministic and their results never modified
(arrays are returned read-only). A streamed matrix (`RowView`) is never cached: its
digest would read the whole file, and it is too large to keep beside. The cache is per
process and holds the `MAX_ENTRIES` most recently used results.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from benchmark.data.rows import is_row_view

MAX_ENTRIES = 8


def digest(array: np.ndarray) -> tuple:
    """`(shape, dtype, hex digest)` of an array's values."""
    array = np.ascontiguousarray(array)
    return array.shape, array.dtype.str, hashlib.blake2b(memoryview(array).cast("B"), digest_size=16).hexdigest()


def _read_only(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple):
        for item in value:
            _read_only(item)
    return value


class FitCache:
    """A small least-recently-used store of deterministic fits, keyed by their inputs' values."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = int(max_entries)
        self._entries: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get_or_fit(self, key: Hashable, arrays: Sequence, fit: Callable[[], Any]) -> Any:
        """`fit()`'s result for `key` and the values of `arrays`, computed once while kept."""
        if any(is_row_view(array) for array in arrays):
            return fit()
        full_key = (key, *(digest(np.asarray(array)) for array in arrays))
        if full_key in self._entries:
            self._entries.move_to_end(full_key)
            self.hits += 1
            return self._entries[full_key]
        self.misses += 1
        value = _read_only(fit())
        self._entries[full_key] = value
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0


FIT_CACHE = FitCache()
