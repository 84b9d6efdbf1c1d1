"""genebench: a tracked benchmarking suite for gene-expression prediction."""

__version__ = "0.1.0"

TASKS = ("single", "multi")
DEEP_ARCHS = ("dnn", "lstm", "gru", "attention_lstm", "attention_gru")
BASELINE_ARCHS = ("mean", "ridge", "knn")
ARCHS = DEEP_ARCHS + BASELINE_ARCHS
