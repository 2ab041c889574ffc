"""Import TensorFlow quietly and with the thread settings the caller asked for.

TensorFlow fixes its thread pools on first use, so the settings are applied right after import.
"""

from __future__ import annotations

import os


def import_tensorflow(threads=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads is not None:
        try:
            if threads.intra_op:
                tf.config.threading.set_intra_op_parallelism_threads(threads.intra_op)
            if threads.inter_op:
                tf.config.threading.set_inter_op_parallelism_threads(threads.inter_op)
        except RuntimeError:
            pass  # already initialized in this process: the first caller's settings stand
    return tf
