"""Architectures (Keras) and baselines (scikit-learn).

Importing this package does not import TensorFlow; `benchmark.models.attention` and
`benchmark.models.architectures` do.
"""
