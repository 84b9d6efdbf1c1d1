"""TensorFlow and Keras for the deep architectures: imported once, quietly, and seeded.

Baselines never come here, so a baseline run never imports TensorFlow:

    limit_threads(1)             # TensorFlow's and BLAS's threads (`training.threads`)
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
_THREADS: int | None = None  # the threads `limit_threads` set, once it has
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

        if _THREADS is not None:
            _limit_tensorflow(_THREADS)
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


def limit_threads(threads: int) -> None:
    """Run TensorFlow's ops and the BLAS and OpenMP libraries' on `threads` threads here.

    Results depend on the thread count in their last digits: a dense layer's products and
    the ridge base's BLAS calls sum in another order on one thread than on two (seen in
    the 9th-10th significant digit of a fit's predictions). So it is a parameter,
    `training.threads`, and a task gives the same bits alone or beside another
    (`benchmark.run_stage`). Does not import TensorFlow; where it is imported it takes the
    count now, else when `import_keras` first sets it up. Its runtime keeps the pools it
    started with, so a model built before any fit or load (none of genebench's commands
    does that) keeps TensorFlow's default.
    """
    global _THREADS
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"training.threads: expected at least 1, got {threads}")
    if _THREADS == threads:
        return
    import scipy.linalg  # noqa: F401  (its own OpenBLAS: loaded, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    _THREADS = threads
    if "tensorflow" in sys.modules:
        _limit_tensorflow(threads)


def _limit_tensorflow(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime has started: its thread pools stay as they are
        pass


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow ops deterministic.

    Safe to call repeatedly. With op determinism on, the same parameters on the same
    machine (and TensorFlow build) give bit-identical weights and predictions.
    """
    tf, keras = import_keras()
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()
