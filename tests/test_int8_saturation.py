"""The INT8 files compute on ONNX Runtime's CPU kernels what their own QDQ arithmetic says, on every x86 CPU.

Without VNNI (AVX2, AVX-512F) those kernels add pairs of 8-bit products in 16 bits, which saturate when an
image's full 8-bit range meets large weights (quantize.reduce_range, crossdeploy/onnx_quantize.py). The plant:
a convolution whose every weight is large and positive, fed bright images, which is where saturation bites.
The file's own arithmetic is ONNX Runtime with graph optimizations off: every DequantizeLinear then runs,
and the convolution computes in float on the dequantized values.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from crossdeploy.layout import INPUT_NAME
from crossdeploy.onnx_quantize import FLAVOURS, QuantizeSettings, quantize_flavours

CHANNELS = 16


def _saturating_conv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.5, 1.0, (CHANNELS, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "w"], ["features"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "saturating", [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", CHANNELS])], [numpy_helper.from_array(weights, "w")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _bright_images(count: int) -> np.ndarray:
    # normalized pixels in [-1, 1], most of them near the top of the range, as paper and sky are
    pixels = np.random.default_rng(1).uniform(0.6, 1.0, (count, 3, 16, 16))
    pixels[:, :, ::4, ::4] = -1.0  # and the other end, so the range is the whole 8 bits
    return pixels.astype(np.float32)


def _logits(path: Path, images: np.ndarray, optimized: bool) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: images})[0]


def _gap(path: Path, images: np.ndarray) -> float:
    """How far the INT8 kernels' logits are from the file's own QDQ arithmetic, over the logits' spread."""
    kernels, arithmetic = _logits(path, images, True), _logits(path, images, False)
    return float(np.sqrt(np.mean((kernels - arithmetic) ** 2)) / arithmetic.std())


def _quantize(tmp_path: Path, **settings) -> dict[str, Path]:
    images = _bright_images(16)
    outputs = {flavour: tmp_path / f"{flavour}.onnx" for flavour in FLAVOURS}
    quantize_flavours(_saturating_conv(tmp_path / "conv.onnx"), outputs, images, QuantizeSettings(calibration_size=16, **settings))
    return outputs


def _vnni() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_default_int8_files_run_as_their_arithmetic_says(tmp_path, flavour):
    path = _quantize(tmp_path)[flavour]
    assert _gap(path, _bright_images(8)) < 0.01


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="the saturating 16-bit adds are x86's (no x86 CPU here)")
@pytest.mark.skipif(_vnni(), reason="this CPU has VNNI, whose 8-bit dot products do not saturate: the plant shows nothing here")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_eight_bit_weights_saturate_on_a_cpu_without_vnni(tmp_path, flavour):
    path = _quantize(tmp_path, reduce_range=False)[flavour]
    assert _gap(path, _bright_images(8)) > 0.05
