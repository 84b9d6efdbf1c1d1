"""TensorFlow and Keras for the deep architectures: imported once, quietly, and seeded.

Baselines never come here, so a baseline run never imports TensorFlow:

    tf, keras = import_keras()   # the first call imports and sets up TensorFlow
    seed_everything(seed)        # Python, NumPy and TensorFlow seeds; deterministic ops
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

from benchmark.verbosity import quiet_environment, verbose

_TF_READY = False
# Lines TensorFlow 2.21's C++ side writes to fd 2 while it loads and first probes devices,
# before any setting is read (TF_CPP_MIN_LOG_LEVEL does not reach absl's pre-init log):
# absl's "All log messages before absl::InitializeLog()" notice, oneDNN's and the CUDA
# stubs' notes on a machine without a GPU. One copy per process, 36 processes per repro.
_STARTUP_CHATTER = re.compile(r"absl::InitializeLog|oneDNN custom operations|Could not find cuda drivers|"
                              r"failed call to cuInit|cpu_feature_guard|TF_ENABLE_ONEDNN_OPTS")


@contextlib.contextmanager
def _without_startup_chatter():
    """Capture fd 2 for the block and replay every line but `_STARTUP_CHATTER`'s."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not _STARTUP_CHATTER.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def import_keras():
    """`(tf, keras)`, imported and set up on the first call (only deep architectures get here)."""
    global _TF_READY
    # TensorFlow's C++ log lines, read when it loads; a user's own setting (or --verbose) wins.
    quiet_environment()
    if _TF_READY:
        import tensorflow as tf
        import keras

        return tf, keras
    # The import and the first device probe, their start-up lines dropped unless verbose.
    with contextlib.nullcontext() if verbose() else _without_startup_chatter():
        import tensorflow as tf
        import keras

        gpus = tf.config.list_physical_devices("GPU")
    if not _TF_READY:
        # Every new model traces new tf.functions; across a study that warning is noise.
        tf.get_logger().setLevel("ERROR")
        if not gpus:
            # Grappler's graph rewrites are made for large graphs and accelerators. For the
            # small recurrent models here on a 2-core CPU, skipping them made refits up to
            # 13% faster, first fits within 0.3 s either way, with bit-identical predictions
            # (scripts/bench_overheads.py, results/overheads.md).
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        _TF_READY = True
    return tf, keras


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow ops deterministic.

    Safe to call repeatedly. With op determinism on, the same parameters on the same
    machine (and TensorFlow build) give bit-identical weights and predictions.
    """
    tf, keras = import_keras()
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
