"""Each calibration method finds its own activation ranges, in both flavours, the same every run.

The entropy quantizations dominate the run time: ONNX Runtime's KL search takes about half a second
per calibrated tensor (50 in the tiny model) whatever the number of images.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from crossdeploy.errors import CrossdeployError
from crossdeploy.onnx import quantize as onnx_quantize
from crossdeploy.onnx.quantize import CALIBRATION_METHODS, FLAVOURS, QuantizeSettings, quantize_flavours, quantize_onnx
from tests.conftest import ROOT, run_onnx

CALIBRATION = dict(calibration_size=8, calibration_batch=4)


def activation_quantization(path) -> dict[str, tuple[float, np.ndarray]]:
    """(scale, zero point) of each activation's QuantizeLinear, by the tensor it quantizes."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {
        node.input[0]: (float(inits[node.input[1]]), inits[node.input[2]])
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits
    }


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def quantized(tiny_optimized, tiny_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration")
    calibration = tiny_images[0].tensors("NCHW")
    paths = {}
    for flavour, method in itertools.product(FLAVOURS, CALIBRATION_METHODS):
        paths[flavour, method] = out / f"{flavour}-{method}.onnx"
        quantize_onnx(
            tiny_optimized[0], paths[flavour, method], calibration, QuantizeSettings(calibration_method=method, **CALIBRATION), flavour
        )
    return paths


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_method_finds_its_own_activation_scales(quantized, flavour):
    found = {method: activation_quantization(quantized[flavour, method]) for method in CALIBRATION_METHODS}
    names = sorted(found["minmax"])
    assert len(names) > 20 and all(sorted(f) == names for f in found.values())
    scales = {method: np.array([f[name][0] for name in names]) for method, f in found.items()}
    for a, b in itertools.combinations(CALIBRATION_METHODS, 2):
        assert np.mean(scales[a] != scales[b]) > 0.9, f"{a} and {b} give the same scale to most activations"
    # Both histogram methods clip what minmax keeps; the KL search clips much more than a 99.999 percentile.
    for method in ("entropy", "percentile"):
        assert np.all(scales[method] <= scales["minmax"])
    assert np.median(scales["entropy"] / scales["minmax"]) < 0.9
    assert np.median(scales["percentile"] / scales["minmax"]) > 0.95


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
def test_activation_zero_points_follow_the_flavour(quantized, method):
    tensorrt = activation_quantization(quantized["tensorrt", method]).values()
    assert tensorrt and all(zp.dtype == np.int8 and zp == 0 for _, zp in tensorrt)
    assert all(zp.dtype == np.uint8 for _, zp in activation_quantization(quantized["cpu", method]).values())


def test_entropy_gives_the_same_bytes_in_a_fresh_process(quantized, tiny_optimized, tiny_images, tmp_path):
    # A fresh interpreter with a fixed hash seed: set iteration order differs from this process's.
    np.save(tmp_path / "calibration.npy", tiny_images[0].tensors("NCHW"))
    again = tmp_path / "again.onnx"
    script = (
        "import sys, numpy as np; from pathlib import Path; "
        "from crossdeploy.onnx.quantize import QuantizeSettings, quantize_onnx; "
        "quantize_onnx(Path(sys.argv[1]), Path(sys.argv[2]), np.load(sys.argv[3]), "
        f"QuantizeSettings(calibration_method='entropy', **{CALIBRATION!r}), 'tensorrt')"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(tiny_optimized[0]), str(again), str(tmp_path / "calibration.npy")],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert again.read_bytes() == quantized["tensorrt", "entropy"].read_bytes()


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_entropy_model_stays_close_to_fp32(quantized, tiny_optimized, tiny_images, flavour):
    # A coarse bound: on random weights INT8 noise is as large as the signal (minmax reaches a mean
    # cosine of about 0.97, entropy 0.87), but ranges clipped to half of entropy's fall to 0.3.
    x = tiny_images[1].tensors("NCHW")
    logits = run_onnx(quantized[flavour, "entropy"], x)
    assert np.isfinite(logits).all()
    assert cosine(logits, run_onnx(tiny_optimized[0], x)).mean() > 0.75


def _both_flavours(tiny_optimized, tiny_images, out, method) -> dict[str, bytes]:
    outputs = {flavour: out / f"{flavour}.onnx" for flavour in FLAVOURS}
    settings = QuantizeSettings(calibration_method=method, **CALIBRATION)
    quantize_flavours(tiny_optimized[0], outputs, tiny_images[0].tensors("NCHW"), settings)
    return {flavour: path.read_bytes() for flavour, path in outputs.items()}


# entropy is left out for time (a KL search per calibration); its calibrator has no symmetric form
@pytest.mark.parametrize("method, shared_calls", [("minmax", [False]), ("percentile", [False, True])])
def test_one_calibration_for_both_flavours_writes_what_a_calibration_each_writes(
    tiny_optimized, tiny_images, tmp_path, monkeypatch, method, shared_calls
):
    calls = []
    real = onnx_quantize.calibrate
    monkeypatch.setattr(onnx_quantize, "calibrate", lambda *args: calls.append(args[3]) or real(*args))
    (tmp_path / "shared").mkdir()
    shared = _both_flavours(tiny_optimized, tiny_images, tmp_path / "shared", method)
    assert calls == shared_calls
    calls.clear()
    # the route before: each flavour calibrated on its own, the TensorRT flavour with symmetric ranges
    monkeypatch.setattr(onnx_quantize, "calibration_symmetry", lambda settings, flavour: flavour == "tensorrt")
    (tmp_path / "apart").mkdir()
    apart = _both_flavours(tiny_optimized, tiny_images, tmp_path / "apart", method)
    assert calls == [False, True]
    assert shared == apart


def test_percentile_shared_between_flavours_would_change_the_tensorrt_model(quantized, tiny_optimized, tiny_images, tmp_path, monkeypatch):
    # the planted defect: percentile's plain ranges given to the symmetric flavour
    monkeypatch.setattr(onnx_quantize, "calibration_symmetry", lambda settings, flavour: False)
    written = _both_flavours(tiny_optimized, tiny_images, tmp_path, "percentile")
    assert written["cpu"] == quantized["cpu", "percentile"].read_bytes()
    assert written["tensorrt"] != quantized["tensorrt", "percentile"].read_bytes()


def test_percentile_outside_0_to_100_names_the_param(tiny_optimized, tiny_images, tmp_path):
    settings = QuantizeSettings(calibration_method="percentile", percentile=100.5, **CALIBRATION)
    with pytest.raises(CrossdeployError, match=r"quantize\.percentile 100\.5"):
        quantize_onnx(tiny_optimized[0], tmp_path / "q.onnx", tiny_images[0].tensors("NCHW"), settings, "cpu")
