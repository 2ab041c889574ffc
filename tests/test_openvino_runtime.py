"""OpenVINO's CPU plugin on the pipeline's own ONNX files: parity with the reference, the INT8 model run in
integer kernels, and the precision check that catches OpenVINO's silent fallbacks (planted)."""

import numpy as np
import openvino as ov
import pytest

from crossdeploy.errors import RuntimeUnavailable
from crossdeploy.onnx.quantize import FLAVOURS, QuantizeSettings, quantize_flavours
from crossdeploy.runtimes.openvino_runtime import OpenVinoRunner, check_inference_precision, missing_capability


def _cpu_has(capability: str) -> bool:
    return capability in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def tiny_int8(tiny_optimized, tiny_images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("openvino-int8")
    outputs = {flavour: folder / f"{flavour}.int8.onnx" for flavour in FLAVOURS}
    quantize_flavours(tiny_optimized[0], outputs, tiny_images[0].tensors("NCHW"), QuantizeSettings(calibration_size=12))
    return outputs["cpu"]


def test_fp32_matches_the_reference_and_runs_every_layer_in_f32(tiny_optimized, tiny_images, tiny_reference):
    x = tiny_images[1].tensors("NCHW")
    with OpenVinoRunner(tiny_optimized[0], "openvino-fp32", precision="fp32") as runner:
        np.testing.assert_allclose(runner.infer_all(x, 3), tiny_reference, rtol=1e-4, atol=1e-4)
        assert set(runner.layer_precisions) == {"f32"}
        assert runner.max_in_flight >= 1
        with pytest.raises(ValueError, match="float32"):  # the interface's input check holds for it too
            runner.infer(x.astype(np.float64))


def test_int8_runs_integer_kernels(tiny_int8, tiny_images, tiny_reference):
    with OpenVinoRunner(tiny_int8, "openvino-int8", precision="int8") as runner:
        logits = runner.infer_all(tiny_images[1].tensors("NCHW"), 4)
        integer = sum(n for p, n in runner.layer_precisions.items() if p in ("u8", "i8"))
        assert 2 * integer >= sum(runner.layer_precisions.values())
    assert logits.shape == tiny_reference.shape and np.isfinite(logits).all()
    # the same file through ONNX Runtime: the two runtimes compute the same Q/DQ arithmetic
    from tests.conftest import run_onnx

    ort = run_onnx(tiny_int8, tiny_images[1].tensors("NCHW"))
    spread = float(np.std(tiny_reference))
    assert float(np.sqrt(np.mean((logits - ort) ** 2))) < 0.2 * spread


def test_a_float_model_run_as_int8_is_caught(tiny_optimized):
    """Planted: the row says int8 but the file has no Q/DQ (the wrong file in its place): every layer runs in
    f32, and the check says so instead of timing a float model under an INT8 name."""
    with pytest.raises(RuntimeError, match=r"another precision than int8 \(\d+ in f32\)"):
        OpenVinoRunner(tiny_optimized[0], "openvino-int8", precision="int8").activate()


def test_a_bf16_row_that_fell_back_to_f32_is_caught(tiny_optimized):
    """Planted: a model compiled for f32 checked as the bf16 row it would be after OpenVINO's silent fallback
    (bf16 asked on a CPU without it compiles to f32 with no error)."""
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(tiny_optimized[0])), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with pytest.raises(RuntimeError, match="another precision than bf16"):
        check_inference_precision(compiled, "bf16", "openvino-bf16")
    check_inference_precision(compiled, "fp32", "openvino-fp32")  # what it is passes


def test_an_fp32_row_computed_in_bf16_is_caught(tiny_optimized):
    """The reverse: OpenVINO's default on a BF16 CPU is bf16, so an fp32 row must force f32 and be checked."""
    if not _cpu_has("BF16"):
        pytest.skip("needs a CPU with BF16 (OpenVINO's OPTIMIZATION_CAPABILITIES lists none here) to compile in bf16")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(tiny_optimized[0])), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    with pytest.raises(RuntimeError, match="another precision than fp32"):
        check_inference_precision(compiled, "fp32", "openvino-fp32")


def test_bf16_where_the_cpu_has_it_and_a_reason_where_it_does_not(tiny_optimized, tiny_images, tiny_reference):
    runner = OpenVinoRunner(tiny_optimized[0], "openvino-bf16", precision="bf16")
    if not _cpu_has("BF16"):
        assert "BF16" in missing_capability(ov.Core(), "bf16")
        with pytest.raises(RuntimeUnavailable, match="OpenVINO bf16 needs a CPU with BF16"):
            runner.activate()
        return
    with runner:
        logits = runner.infer_all(tiny_images[1].tensors("NCHW"), 4)
        assert "bf16" in runner.layer_precisions
    cosine = np.sum(logits * tiny_reference, 1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(tiny_reference, axis=1)
    assert cosine.min() > 0.95


def test_an_unknown_precision_is_refused(tiny_optimized):
    with pytest.raises(ValueError, match="OpenVINO runs fp32, bf16 or int8, not 'fp16'"):
        OpenVinoRunner(tiny_optimized[0], "openvino-fp16", precision="fp16")


def test_a_file_with_one_batch_size_is_run_at_it_and_says_so(tiny_optimized, tiny_images, tiny_reference, tmp_path):
    """A file exported with a fixed batch (a user's own ONNX): other batch sizes get the interface's sentence."""
    import onnx

    model = onnx.load(str(tiny_optimized[0]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    x = tiny_images[1].tensors("NCHW")
    with OpenVinoRunner(fixed, "openvino-fp32", precision="fp32") as runner:
        assert runner.fixed_batch == 2
        np.testing.assert_allclose(runner.infer_all(x[:10], 5), tiny_reference[:10], rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="takes batches of exactly 2, got 3"):
            runner.infer(x[:3])
