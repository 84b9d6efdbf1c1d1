"""The genebench pyfunc model, in MLflow's models-from-code form (no pickle).

`benchmark.tracking.log_model` logs this file as `python_model` with two artifacts:
`regressor` (the directory `Regressor.save` writes: JSON, `.npz`, `.keras`) and
`model_io` (feature genes, target genes, `datasets.<name>.transform`).

Input: a DataFrame of raw expression values (as in `data/`, before `datasets.<name>.transform`)
with one column per feature gene; columns may come in any order and extra columns are
ignored. Output: a DataFrame (n_samples, n_targets) with the target gene ids as columns,
in the units the benchmark scores (after `datasets.<name>.transform`).

MLflow runs this file when it logs the model as well as when it loads it, so it imports
no TensorFlow at module level: baselines log and serve without it. The attention layer
is imported (which registers `genebench>AdditiveAttention` with Keras) before a `.keras`
file loads, or that file fails to load in a fresh process.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

import benchmark.models  # noqa: F401  (TensorFlow-free package; the layer comes below)
from benchmark.data.validation import apply_transform

_SHOWN_MISSING = 5


class GeneExpressionModel(mlflow.pyfunc.PythonModel):
    """Predicts target gene expression from feature gene expression (see module docstring)."""

    def load_context(self, context) -> None:
        state_dir = Path(context.artifacts["regressor"])
        io = json.loads(Path(context.artifacts["model_io"]).read_text())
        self.feature_genes: list[str] = list(io["feature_genes"])
        self.target_genes: list[str] = list(io["target_genes"])
        self.transform: str = io["transform"]
        from benchmark.training import load_regressor  # imports Keras (quietly) and the custom layer if needed

        self.regressor = load_regressor(state_dir)

    def _features(self, model_input) -> np.ndarray:
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if not isinstance(model_input, pd.DataFrame):
            raise MlflowException(
                f"expected a DataFrame with one column per feature gene "
                f"({len(self.feature_genes)} genes), got {type(model_input).__name__}",
                error_code=INVALID_PARAMETER_VALUE,
            )
        columns = {str(c) for c in model_input.columns}
        missing = [g for g in self.feature_genes if g not in columns]
        if missing:
            shown = ", ".join(missing[:_SHOWN_MISSING])
            more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
            raise MlflowException(
                f"input is missing {len(missing)} of the model's {len(self.feature_genes)} "
                f"feature gene columns: {shown}{more}",
                error_code=INVALID_PARAMETER_VALUE,
            )
        frame = model_input.rename(columns=str)
        try:
            X = frame[self.feature_genes].to_numpy(dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise MlflowException(f"feature gene columns must be numeric: {exc}",
                                  error_code=INVALID_PARAMETER_VALUE) from None
        if not np.isfinite(X).all():
            row, col = map(int, np.argwhere(~np.isfinite(X))[0])
            raise MlflowException(
                f"row {row}, gene {self.feature_genes[col]}: expression must be a finite number",
                error_code=INVALID_PARAMETER_VALUE,
            )
        if self.transform == "log1p":
            if (X < 0).any():
                row, col = map(int, np.argwhere(X < 0)[0])
                raise MlflowException(
                    f"row {row}, gene {self.feature_genes[col]}: negative value, but the model "
                    "applies log1p to raw expression",
                    error_code=INVALID_PARAMETER_VALUE,
                )
        return apply_transform(X, self.transform)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        X = self._features(model_input)
        Y = np.asarray(self.regressor.predict(X), dtype=np.float64).reshape(len(X), -1)
        index = model_input.index if isinstance(model_input, pd.DataFrame) else None
        return pd.DataFrame(Y, columns=self.target_genes, index=index)


mlflow.models.set_model(GeneExpressionModel())
