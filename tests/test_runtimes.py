import numpy as np
import pytest

from crossdeploy.runtimes.onnxruntime_runtime import OnnxRuntimeRunner
from crossdeploy.runtimes.torch_runtime import TorchRunner
from tests.conftest import TINY_SIZE


def test_runner_checks_its_input(tiny_optimized):
    runner = OnnxRuntimeRunner(tiny_optimized[0], "onnxruntime-fp32")
    good = np.zeros((2, 3, TINY_SIZE, TINY_SIZE), np.float32)
    with pytest.raises(RuntimeError, match="activate"):
        runner.infer(good)
    with runner:
        assert runner.infer(good).shape == (2, 10)
        with pytest.raises(ValueError, match="float32"):
            runner.infer(good.astype(np.float64))
        with pytest.raises(ValueError, match="rank 4"):
            runner.infer(good[0])
        with pytest.raises(ValueError, match=r"samples of shape \(3, 64, 64\)"):
            runner.infer(np.zeros((1, 3, 32, 32), np.float32))
    assert not runner.is_active


def test_torch_and_onnxruntime_agree(tiny_source, tiny_optimized, tiny_images):
    x = tiny_images[1].tensors("NCHW")
    with TorchRunner(tiny_source[0]) as torch_runner, OnnxRuntimeRunner(tiny_optimized[0], "ort") as ort_runner:
        np.testing.assert_allclose(ort_runner.infer_all(x, 3), torch_runner.infer_all(x, 4), rtol=1e-4, atol=1e-4)
