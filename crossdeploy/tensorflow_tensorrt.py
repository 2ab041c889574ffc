"""TF-TRT: the SavedModel converted by TensorFlow's TensorRT converter (INT8 calibrated on the
calibration set, FP16 for what stays float), for TF Serving's GPU image. The honest version of the
original article's "TensorFlow Serving INT8" row.

TensorFlow 2.18 and later ship without TensorRT in their CUDA builds, and TF Serving's 2.18+ GPU
images cannot load TF-TRT ops; there the stage records why and the TensorRT engines are the way to
INT8 on the GPU. With TensorFlow <= 2.17 built with TensorRT and a GPU, the conversion runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tftrt_unavailable_reason(tf) -> str | None:
    from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils

    if not _pywrap_py_utils.is_tensorrt_enabled():
        return f"TensorFlow {tf.__version__} is built without TensorRT (TF-TRT left TensorFlow's CUDA builds in 2.18; use 2.17 or NVIDIA's TensorFlow container)"
    if not tf.config.list_physical_devices("GPU"):
        return "TensorFlow sees no GPU here"
    return None


def convert_tftrt_int8(
    saved_model_dir: Path, out_dir: Path, calibration_nhwc: np.ndarray, batch_sizes: list[int], workspace_mib: int
) -> None:
    """Convert, calibrate on the calibration images, pre-build engines for batch_sizes, and save."""
    import tensorflow as tf
    from tensorflow.python.compiler.tensorrt import trt_convert as trt

    params = trt.TrtConversionParams(
        precision_mode=trt.TrtPrecisionMode.INT8,
        max_workspace_size_bytes=workspace_mib << 20,
        use_calibration=True,
    )
    converter = trt.TrtGraphConverterV2(
        input_saved_model_dir=str(saved_model_dir),
        conversion_params=params,
        use_dynamic_shape=True,
        dynamic_shape_profile_strategy="Optimal",
    )

    def calibration_input():
        for start in range(0, len(calibration_nhwc), 8):
            yield (tf.constant(calibration_nhwc[start : start + 8]),)

    def build_input():
        for batch in batch_sizes:
            yield (tf.zeros((batch, *calibration_nhwc.shape[1:]), tf.float32),)

    converter.convert(calibration_input_fn=calibration_input)
    converter.build(input_fn=build_input)
    converter.save(str(out_dir))
