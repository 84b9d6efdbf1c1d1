"""Model assembly: the Keras network a deep `Regressor` trains, built once per shape.

The first fit builds and compiles the network (`benchmark.models.architectures`) and its
optimizer and keeps every variable's initial value (weights, dropout seed state,
optimizer slots). A later fit on the same shapes (the next CV fold, the refit) restores
those values instead of building again, so it starts from exactly the state a new network
would have (same seed, same values) while the traced training and prediction functions
are reused: tracing costs seconds per model on a CPU.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


class NetworkAssembly:
    """Builds, or resets to its initial state, one Regressor's network (`network`)."""

    def __init__(self):
        self.network = None
        self._initial_state: Optional[list] = None
        self._built_for: Optional[tuple[int, int]] = None

    def ready(self, arch: str, hp: dict, n_features: int, n_targets: int, members: int, zero_init: bool,
              assignment: Optional[np.ndarray] = None):
        """A network in its initial state for (n_features, n_targets), every
        hyperparameter in `hp` (learning rate included); sequence models get the gene
        `assignment` to tokens. Call after seeding: a first build draws the initial weights."""
        shape = (n_features, n_targets)
        if self._initial_state is not None and self._built_for == shape:
            for variable, value in zip(self._state_variables(), self._initial_state):
                variable.assign(value)
        else:
            from benchmark.models.architectures import build_model

            self.network = build_model(arch, hp, n_features, n_targets, members=members, zero_init=zero_init)
            self.network.optimizer.build(self.network.trainable_variables)
            self._initial_state = [variable.numpy() for variable in self._state_variables()]
            self._built_for = shape
        if assignment is not None:
            from benchmark.models.architectures import set_token_assignment

            set_token_assignment(self.network, assignment)
        return self.network

    def _state_variables(self) -> list:
        return list(self.network.variables) + list(self.network.optimizer.variables)
