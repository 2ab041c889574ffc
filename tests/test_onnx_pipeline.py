"""Export, optimize and quantize a tiny real model with the real torch, onnx and onnxruntime."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from crossdeploy.errors import CrossdeployError
from crossdeploy.onnx.export import export_onnx
from crossdeploy.onnx.quantize import QuantizeSettings, quantize_onnx
from tests.conftest import TINY_SIZE, run_onnx


@pytest.mark.parametrize("opset", [17, 18])
def test_export_produces_requested_opset_with_dynamic_batch(tiny_source, tmp_path, opset):
    path = tmp_path / "m.onnx"
    export_onnx(tiny_source[0], path, opset=opset, input_size=TINY_SIZE)
    model = onnx.load(str(path))
    assert next(o.version for o in model.opset_import if o.domain == "") == opset
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_exported_onnx_matches_torch_at_any_batch(tiny_onnx, tiny_source):
    import torch

    from crossdeploy.model.source import load_program

    module = load_program(tiny_source[0])
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(run_onnx(tiny_onnx, x), expected, rtol=1e-4, atol=1e-4)


def test_unproducible_opset_names_the_param(tiny_source, tmp_path):
    with pytest.raises(CrossdeployError, match=r"export\.opset 9 cannot be produced"):
        export_onnx(tiny_source[0], tmp_path / "m.onnx", opset=9, input_size=TINY_SIZE)
    assert not (tmp_path / "m.onnx").exists()


def test_optimize_keeps_numerics_and_counts_nodes(tiny_onnx, tiny_optimized):
    path, counts = tiny_optimized
    assert set(counts) == {"exported", "slimmed", "optimized"}
    assert counts["optimized"] <= counts["exported"]
    # Standard ops only: other consumers (onnx2tf, TensorRT) must be able to read it.
    assert {o.domain for o in onnx.load(str(path)).opset_import} <= {"", "ai.onnx"}
    x = np.random.default_rng(0).standard_normal((2, 3, TINY_SIZE, TINY_SIZE)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, x), run_onnx(tiny_onnx, x), rtol=1e-4, atol=1e-4)


def zero_points(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    activations, weights = [], []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            zp = inits[node.input[2]]
            (weights if node.input[0] in inits else activations).append(zp)
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype in (np.int8, np.uint8):
            weights.append(inits[node.input[2]])
    return activations, weights


@pytest.fixture(scope="module")
def quantized(tiny_optimized, tiny_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    calibration = tiny_images[0].tensors("NCHW")
    settings = QuantizeSettings(calibration_size=12, calibration_batch=4)
    paths = {}
    for flavour in ("cpu", "tensorrt"):
        paths[flavour] = out / f"{flavour}.onnx"
        quantize_onnx(tiny_optimized[0], paths[flavour], calibration, settings, flavour)
    return paths


def test_cpu_flavour_is_u8_activations_s8_weights(quantized):
    activations, weights = zero_points(onnx.load(str(quantized["cpu"])))
    assert activations and all(zp.dtype == np.uint8 for zp in activations)
    assert weights and all(zp.dtype == np.int8 for zp in weights)
    # Per-channel weights: one zero point per output channel somewhere.
    assert any(zp.size > 1 for zp in weights)


def test_tensorrt_flavour_is_symmetric_signed(quantized):
    activations, weights = zero_points(onnx.load(str(quantized["tensorrt"])))
    for zp in activations + weights:
        assert zp.dtype == np.int8 and not zp.any()


def test_quantized_models_stay_close_to_fp32(quantized, tiny_optimized, tiny_images):
    """What random weights allow: both flavours meet validate's floor and their noise stays below the signal. The
    worst image's cosine is no bound here: it moved from 0.97 to 0.88 between two of this project's CPUs.
    tests/test_negative_controls judges INT8 at the real thresholds on a trained model."""
    from crossdeploy.validation.parity import Floor, compare_logits

    x = tiny_images[1].tensors("NCHW")
    reference = run_onnx(tiny_optimized[0], x)
    for flavour, path in quantized.items():
        metrics = compare_logits(reference, run_onnx(path, x))
        assert Floor().misses(metrics) == [] and metrics["noise_rel"] < 0.8, (flavour, metrics)


def test_bad_quantize_params(tiny_optimized, tiny_images, tmp_path):
    calibration = tiny_images[0].tensors("NCHW")
    with pytest.raises(CrossdeployError, match=r"quantize\.calibration_size 50 .*between 1 and 12"):
        quantize_onnx(tiny_optimized[0], tmp_path / "q.onnx", calibration, QuantizeSettings(calibration_size=50), "cpu")
    with pytest.raises(CrossdeployError, match=r"quantize\.calibration_method 'kl'"):
        quantize_onnx(
            tiny_optimized[0], tmp_path / "q.onnx", calibration, QuantizeSettings(calibration_method="kl", calibration_size=4), "cpu"
        )


def test_histogram_calibration_with_uneven_count(tiny_optimized, tiny_images, tmp_path):
    from crossdeploy.onnx.quantize import even_batch_size

    assert (even_batch_size(12, 8), even_batch_size(128, 8), even_batch_size(13, 8)) == (6, 8, 1)
    path = tmp_path / "entropy.onnx"
    settings = QuantizeSettings(calibration_method="entropy", calibration_size=10, calibration_batch=4)
    quantize_onnx(tiny_optimized[0], path, tiny_images[0].tensors(), settings, "cpu")
    onnx.checker.check_model(onnx.load(str(path)))


def test_dynamic_quantization_stays_available(tiny_optimized, tiny_images, tmp_path):
    path = tmp_path / "dyn.onnx"
    quantize_onnx(tiny_optimized[0], path, tiny_images[0].tensors(), QuantizeSettings(method="dynamic", calibration_size=4), "cpu")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "ConvInteger" in ops or "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
