"""Import TensorFlow quietly and with the thread settings the caller asked for.

TensorFlow fixes its thread pools on first use, so the settings are applied right after import.
"""

from __future__ import annotations

import importlib.util
import os


def import_tensorflow(threads=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if importlib.util.find_spec("tf_keras") is not None:
        # TensorFlow resolves tf.keras as it is imported: to Keras 3 by default, whose import (with the
        # scikit-learn and IPython it pulls in) is a third of TensorFlow's, about 1.3 s a process. Nothing
        # here uses tf.keras, and onnx2tf builds with tf_keras and sets this itself when it is imported;
        # set first, every process that imports TensorFlow skips Keras 3.
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
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
