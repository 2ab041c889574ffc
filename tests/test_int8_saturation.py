"""The INT8 files compute on ONNX Runtime's CPU kernels what their own QDQ arithmetic says, on every x86 CPU.

Without VNNI (AVX2, AVX-512F) those kernels add pairs of 8-bit products in 16 bits, which saturate when an
image's full 8-bit range meets large weights (quantize.reduce_range, crossdeploy/onnx/quantize.py). The plant:
a convolution whose every weight is large and positive, fed bright images, which is where saturation bites.
The file's own arithmetic is ONNX Runtime with graph optimizations off: every DequantizeLinear then runs,
and the convolution computes in float on the dequantized values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from crossdeploy.device_info import int8_kernels_saturate
from crossdeploy.layout import INPUT_NAME
from crossdeploy.onnx.quantize import FLAVOURS, QuantizeSettings, quantize_flavours
from crossdeploy.validation.run import saturation_hint

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
        nodes,
        "saturating",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", CHANNELS])],
        [numpy_helper.from_array(weights, "w")],
    )
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


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_default_int8_files_run_as_their_arithmetic_says(tmp_path, flavour):
    path = _quantize(tmp_path)[flavour]
    assert _gap(path, _bright_images(8)) < 0.01


@pytest.mark.skipif(not int8_kernels_saturate(), reason="this CPU has VNNI (or is not x86): its 8-bit dot products do not saturate")
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_eight_bit_weights_saturate_on_a_cpu_without_vnni(tmp_path, flavour):
    path = _quantize(tmp_path, reduce_range=False)[flavour]
    assert _gap(path, _bright_images(8)) > 0.05


def test_vnni_and_non_x86_cpus_are_told_from_saturating_ones(monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert int8_kernels_saturate({"avx2", "avx512f", "avx512bw"})
    assert not int8_kernels_saturate({"avx2", "avx512_vnni"}) and not int8_kernels_saturate({"avx2", "amx_int8"})
    assert not int8_kernels_saturate(set())  # flags unreadable: no diagnosis
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert not int8_kernels_saturate({"asimd"})


def _variants():
    """The pipeline's own variants table (its rows are only named here, no artifact is read)."""
    from crossdeploy.compose import compose
    from crossdeploy.variants import pipeline_variants

    return pipeline_variants(compose([]))


def _rows(variants) -> dict[str, dict]:
    """Every variant's row failed past the floor, as a broken INT8 file's would be."""
    return {v.name: {"status": "failed", "floor": "passed", "reason": "noise_rel 0.1708 > 0.12"} for v in variants}


def test_a_failed_onnxruntime_int8_row_names_saturation_where_it_is_the_cause():
    variants = _variants()
    rows = _rows(variants)
    saturation_hint(rows, variants, reduce_range=False, saturates=True)
    hinted = {name for name, row in rows.items() if "set quantize.reduce_range: true" in row["reason"]}
    # the CPU runs of both INT8 files; not TFLite's INT8, nor ONNX Runtime's TensorRT provider on the GPU
    assert hinted == {"onnxruntime-int8", "onnxruntime-int8-trt"}
    assert all(row["reason"].startswith("noise_rel") for row in rows.values())
    for reduce_range, saturates in ((True, True), (False, False)):
        rows = _rows(variants)
        saturation_hint(rows, variants, reduce_range, saturates)
        assert rows == _rows(variants)
