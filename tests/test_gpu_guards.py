"""The GPU path's guards, on any machine: ONNX Runtime's silent provider fallback, the TensorRT provider's
explicit profile, a driver too old for a library's CUDA, TensorRT builder failures as skip reasons,
plan files checked against their record, and caches written by parallel builders."""

import json
import threading
import types

import pytest

from crossdeploy.atomic import atomic_path
from crossdeploy.device_info import driver_too_old
from crossdeploy.errors import CrossdeployError, RuntimeUnavailable
from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner, provider_fallback_reason, tensorrt_profile_options
from crossdeploy.tensorrt.engine_key import file_sha256
from crossdeploy.tensorrt.engines import local_cache_dir, plan_mismatch


def test_a_provider_that_falls_back_to_the_cpu_is_refused(tiny_optimized):
    # ONNX Runtime warns and builds the session on the CPU when a provider cannot start: a row run that
    # way would be a CPU figure under a GPU name. MIGraphX is AMD's: no NVIDIA or CPU build has it.
    runner = OnnxRuntimeRunner(tiny_optimized[0], "migraphx", providers=("MIGraphXExecutionProvider", "CPUExecutionProvider"))
    with pytest.raises(RuntimeUnavailable, match="could not start MIGraphXExecutionProvider and fell back to CPUExecutionProvider"):
        runner.activate()
    assert not runner.is_active


def test_the_cpu_provider_asked_for_is_accepted(tiny_optimized):
    with OnnxRuntimeRunner(tiny_optimized[0], "cpu") as runner:
        assert runner.session.get_providers()[0] == "CPUExecutionProvider"


def test_the_fallback_reason_quotes_onnx_runtime():
    log = (
        "2026-11-27 12:00:00 [E:onnxruntime:Default, provider_bridge_ort.cc:2195 TryGetProviderInfo_CUDA] "
        "Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file\n"
        "2026-11-27 12:00:00 [W:onnxruntime:Default, onnxruntime_pybind_state.cc:1013 CreateExecutionProviderFactoryInstance] "
        "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*.\n"
    )
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    reason = provider_fallback_reason("CUDAExecutionProvider", ["CPUExecutionProvider"], available, log)
    assert reason.startswith("ONNX Runtime could not start CUDAExecutionProvider and fell back to CPUExecutionProvider")
    assert "Require cuDNN 9.* and CUDA 13.*" in reason
    cpu_build = provider_fallback_reason("CUDAExecutionProvider", ["CPUExecutionProvider"], ["CPUExecutionProvider"], "")
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in cpu_build


def test_the_tensorrt_provider_gets_the_profile_of_tensorrt_batch(tiny_optimized, tmp_path):
    import onnx

    options = tensorrt_profile_options(tiny_optimized[0], {"min": 1, "opt": 32, "max": 256})
    name = onnx.load(str(tiny_optimized[0]), load_external_data=False).graph.input[0].name
    assert options == {
        "trt_profile_min_shapes": f"{name}:1x3x64x64",
        "trt_profile_opt_shapes": f"{name}:32x3x64x64",
        "trt_profile_max_shapes": f"{name}:256x3x64x64",
    }
    # a model whose image size is dynamic too cannot be given a batch-only profile: said, not guessed
    model = onnx.load(str(tiny_optimized[0]))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(model, tmp_path / "dynamic.onnx")
    with pytest.raises(CrossdeployError, match="dynamic dimension besides the batch"):
        tensorrt_profile_options(tmp_path / "dynamic.onnx", {"min": 1, "opt": 1, "max": 1})
    # the provider splits its profile on ':' and ',' and drops, with a warning, one it cannot parse
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 64
    renamed = model.graph.input[0].name
    for node in model.graph.node:
        node.input[:] = ["images:0" if i == renamed else i for i in node.input]
    model.graph.input[0].name = "images:0"
    onnx.save(model, tmp_path / "colon.onnx")
    with pytest.raises(CrossdeployError, match="holds ':' or ','"):
        tensorrt_profile_options(tmp_path / "colon.onnx", {"min": 1, "opt": 1, "max": 1})


def test_the_tensorrt_provider_variant_carries_profile_and_caches_outside_the_project():
    from crossdeploy.params import load_params
    from crossdeploy.variants import pipeline_variants

    params = load_params()
    (variant,) = [v for v in pipeline_variants(params) if v.name == "onnxruntime-trt-int8"]
    runner = variant.runner(None)
    name, options = runner.providers[0]
    assert name == "TensorrtExecutionProvider" and runner.trt_batch == params["tensorrt"]["batch"]
    # ORT writes its timing cache into the working directory unless told: here, the project's root
    for key in ("trt_timing_cache_path", "trt_engine_cache_path"):
        assert options[key].startswith(str(local_cache_dir()))


@pytest.mark.parametrize(
    "cuda,driver,too_old",
    [
        (13, "550.54.15", True),
        (13, "580.159.04", False),
        (12, "535.183.01", False),
        (12, "470.256.02", True),
        (13, "n/a", False),
        (None, "550.54.15", False),
    ],
)
def test_a_driver_too_old_for_the_librarys_cuda_is_named(cuda, driver, too_old):
    reason = driver_too_old(cuda, "TensorRT 10.16.0", driver)
    if too_old:
        assert reason.startswith(f"the NVIDIA driver {driver} is too old for TensorRT 10.16.0, which is built for CUDA {cuda}")
        assert f"needs driver R{ {12: 525, 13: 580}[cuda] } or newer" in reason
    else:
        assert reason is None


class _Logger:
    WARNING = 2

    def __init__(self, level):
        self.level = level


def _bindings(builder):
    """TensorRT's Python surface as far as create_builder touches it (TensorRT cannot be installed without
    a GPU): what its pybind11 bindings do when CUDA cannot start."""
    return types.SimpleNamespace(__version__="10.16.0", Logger=_Logger, Builder=builder)


def test_a_builder_tensorrt_cannot_create_is_a_reason_not_a_crash():
    from crossdeploy.tensorrt.build import TensorRTUnusable, create_builder

    def nullptr(logger):
        raise TypeError("pybind11::init(): factory function returned nullptr")

    with pytest.raises(
        TensorRTUnusable,
        match=r"TensorRT 10.16.0 cannot create a builder on this machine \(pybind11::init\(\): factory function returned nullptr\)",
    ):
        create_builder(_bindings(nullptr))
    with pytest.raises(TensorRTUnusable, match="trt.Builder returned None"):
        create_builder(_bindings(lambda logger: None))
    assert issubclass(TensorRTUnusable, RuntimeUnavailable)  # the runners and the stage record it as a skip


def test_a_plan_is_loaded_only_with_the_bytes_its_record_vouches_for(tmp_path):
    plan = tmp_path / "tensorrt-int8.plan"
    plan.write_bytes(b"serialized engine" * 100)
    record = {"plan_sha256": file_sha256(plan)}
    assert plan_mismatch(plan, record) is None
    swapped = bytearray(plan.read_bytes())
    swapped[7] ^= 1
    plan.write_bytes(bytes(swapped))
    assert "SHA-256 does not match its record" in plan_mismatch(plan, record)
    assert "SHA-256 does not match" in plan_mismatch(plan, {})  # a record from before plans were hashed
    assert plan_mismatch(tmp_path / "gone.plan", record).endswith("is missing")


def test_parallel_writers_of_one_cache_file_do_not_share_a_temporary(tmp_path):
    final = tmp_path / "timing-sm80-trt10.16.0.cache"
    with atomic_path(final, unique=True) as first, atomic_path(final, unique=True) as second:
        assert first != second
        first.write_bytes(b"A" * 1000)
        second.write_bytes(b"B" * 1000)
    assert final.read_bytes() == b"A" * 1000  # the outer writer finished last; each file is whole
    assert [p.name for p in tmp_path.iterdir()] == [final.name]
    # the fixed temporary name, as the stages use it, is what two writers must not share
    with pytest.raises(FileNotFoundError):
        with atomic_path(final) as outer:
            outer.write_bytes(b"A")
            with atomic_path(final) as inner:
                inner.write_bytes(b"B")


def test_writers_racing_in_threads_leave_one_whole_file(tmp_path):
    final = tmp_path / "engine.plan"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors = []

    def write(payload):
        try:
            with atomic_path(final, unique=True) as tmp:
                tmp.write_bytes(payload)
        except Exception as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and final.read_bytes() in payloads
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == json.dumps([final.name])


def test_torch_names_why_it_has_no_gpu():
    import torch

    from crossdeploy.device_info import gpus
    from crossdeploy.runtimes.torch_runtime import cuda_unavailable_reason

    if torch.cuda.is_available():
        pytest.skip("PyTorch sees a GPU here")
    reason = cuda_unavailable_reason(torch)
    if gpus():
        assert reason.startswith("PyTorch")
    else:
        assert reason == "PyTorch sees no CUDA GPU here (nvidia-smi finds none)"


def test_cuda_errors_that_mean_no_gpu_are_reasons_and_the_rest_are_bugs():
    pytest.importorskip("cuda.bindings", reason="needs cuda-python (pip install cuda-python)")
    from crossdeploy.tensorrt.cuda import check, cudart

    errors = cudart().cudaError_t
    with pytest.raises(RuntimeUnavailable, match=r"CUDA cannot start \(cudaErrorInsufficientDriver\)"):
        check((errors.cudaErrorInsufficientDriver,))
    with pytest.raises(RuntimeUnavailable, match="no CUDA GPU is visible"):
        check((errors.cudaErrorNoDevice, None))
    with pytest.raises(RuntimeError, match="CUDA error cudaErrorInvalidValue") as raised:
        check((errors.cudaErrorInvalidValue, None))
    assert not isinstance(raised.value, RuntimeUnavailable)
    assert check((errors.cudaSuccess, 42)) == 42
