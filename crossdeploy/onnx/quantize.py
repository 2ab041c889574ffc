"""Static post-training INT8 quantization in QDQ format, calibrated on real images.

Two flavours of the same calibrated model, because the hardware differs:
- cpu: unsigned 8-bit activations, signed 8-bit per-channel weights: the U8S8 layout that x86 VNNI
  kernels accelerate (signed activations run no faster than FP32 on ONNX Runtime's CPU provider).
- tensorrt: signed 8-bit, symmetric, zero-point 0 for activations and weights, which TensorRT's
  explicit quantization requires.
Dynamic quantization (weights only; it does not accelerate convolutions) stays available for the
cpu flavour as `quantize.method: dynamic`.

Weights are quantized to 7 bits by default (`quantize.reduce_range`, ONNX Runtime's reduce_range). On an x86
CPU without VNNI (AVX2, or AVX-512 without VNNI) ONNX Runtime's 8-bit kernels add each pair of 8-bit products
in a 16-bit register that saturates: 255 x 127 x 2 > 32767. Images use the whole 8-bit range, so the first
convolution saturates most. Measured on a 2-core AMD EPYC with AVX2 and no VNNI, on ResNet50 trained on the
digits (seed 4): with 8-bit weights the cpu file's logits carry 4x the noise its own QDQ arithmetic does
(noise_rel 0.171 against 0.041 with graph optimizations off, which dequantizes and computes in float), and
the tensorrt file's 0.187 against 0.053; with 7-bit weights both run as computed, 0.055 and 0.064. A file
whose verdict depends on whether the CPU that judged it has VNNI is not judged: 7 bits everywhere. Set it
false for a server with VNNI or AMX, or one where TensorRT alone runs the INT8 file, to keep the eighth bit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import INPUT_NAME

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
FLAVOURS = ("cpu", "tensorrt")


@dataclass(frozen=True)
class QuantizeSettings:
    method: str = "static"  # static | dynamic
    calibration_method: str = "minmax"
    calibration_size: int = 100
    calibration_batch: int = 8
    per_channel: bool = True
    percentile: float = 99.999
    reduce_range: bool = True  # 7-bit weights: see the module docstring

    def check(self, available: int) -> None:
        if self.method not in ("static", "dynamic"):
            raise CrossdeployError(f"quantize.method '{self.method}' is unknown; set quantize.method to static or dynamic.")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise CrossdeployError(
                f"quantize.calibration_method '{self.calibration_method}' is unknown; set it to one of {', '.join(CALIBRATION_METHODS)}."
            )
        if not 1 <= self.calibration_size <= available:
            raise CrossdeployError(
                f"quantize.calibration_size {self.calibration_size} is outside the {available} calibration images the data stage made; "
                f"set quantize.calibration_size between 1 and {available}, or raise data.calibration_size."
            )
        if self.calibration_method == "percentile" and not 0 < self.percentile <= 100:
            raise CrossdeployError(f"quantize.percentile {self.percentile} is outside (0, 100]; set it to e.g. 99.999.")


def even_batch_size(count: int, largest: int) -> int:
    """The largest batch size <= `largest` that divides `count`.

    ONNX Runtime's histogram calibrators (entropy, percentile) stack every batch's activations
    and fail on a short last batch, so all batches must be the same size.
    """
    return next(b for b in range(min(largest, count), 0, -1) if count % b == 0)


class ArrayCalibrationReader:
    """Feeds ONNX Runtime's calibrator equal batches of preprocessed NCHW images."""

    def __init__(self, tensors: np.ndarray, batch: int):
        batch = even_batch_size(len(tensors), batch)
        self._batches = [tensors[i : i + batch] for i in range(0, len(tensors), batch)]
        self._next = 0

    def get_next(self):
        if self._next >= len(self._batches):
            return None
        batch = self._batches[self._next]
        self._next += 1
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._next = 0


# quantize_static builds its entropy calibrator with 128 histogram bins for 128 quantized bins, which
# leaves the KL search one candidate threshold, the full range: entropy came out as minmax. With the
# 2048 bins of TensorRT's calibrators the search has 961 candidates, and percentile cuts within
# 1/1024 of the range. 128 quantized bins is ONNX Runtime's default; an odd count makes its search
# favour windows that split evenly into the quantized bins (with 255, some ranges of a random
# ResNet18 came out an eighth of minmax's).
HISTOGRAM_BINS = 2048
KL_QUANTIZED_BINS = 128


def calibrate(prepared: Path, calibration: np.ndarray, settings: QuantizeSettings, symmetric: bool, workdir: Path):
    """Activation ranges (ONNX Runtime's TensorsData) of the model's quantizable tensors."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    method, options = {
        "minmax": (CalibrationMethod.MinMax, {"symmetric": symmetric}),
        "entropy": (CalibrationMethod.Entropy, {"num_bins": HISTOGRAM_BINS, "num_quantized_bins": KL_QUANTIZED_BINS}),
        "percentile": (
            CalibrationMethod.Percentile,
            {"num_bins": HISTOGRAM_BINS, "percentile": settings.percentile, "symmetric": symmetric},
        ),
    }[settings.calibration_method]
    calibrator = create_calibrator(
        prepared,
        # the op types quantize_static calibrates
        sorted({*QLinearOpsRegistry, *QDQRegistry}),
        augmented_model_path=str(workdir / "augmented.onnx"),
        calibrate_method=method,
        extra_options=options,
    )
    calibrator.collect_data(ArrayCalibrationReader(calibration[: settings.calibration_size], settings.calibration_batch))
    return calibrator.compute_data()


def calibration_symmetry(settings: QuantizeSettings, flavour: str) -> bool:
    """Whether the flavour needs its own symmetric calibration, or can share the plain one.

    Only percentile calibrates symmetric ranges differently (a histogram of magnitudes, cut at the
    percentile). Min-max's symmetric range is [-max|x|, max|x|] of the plain one, which is exactly what
    quantize_static's ActivationSymmetric makes of the plain range, and entropy has no symmetric form:
    one calibration pass (half the quantize stage's time for ResNet50) serves both flavours there.
    """
    return flavour == "tensorrt" and settings.calibration_method == "percentile"


def quantize_onnx(source: Path, output: Path, calibration: np.ndarray, settings: QuantizeSettings, flavour: str) -> None:
    quantize_flavours(source, {flavour: output}, calibration, settings)


def quantize_flavours(source: Path, outputs: dict[str, Path], calibration: np.ndarray, settings: QuantizeSettings) -> None:
    """Write each flavour's INT8 model to its output path: the graph is prepared once, and calibrated
    once for every flavour that can share the ranges (calibration_symmetry)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static, save_tensors_data

    unknown = set(outputs) - set(FLAVOURS)
    if unknown:
        raise ValueError(f"unknown flavour {', '.join(sorted(unknown))}")
    settings.check(len(calibration))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference only: the graph was already optimized by the optimize stage.
        quant_pre_process(str(source), str(prepared), skip_optimization=True)
        caches: dict[bool, tuple[Path, object]] = {}  # the calibration cache file and its CalibrationMethod
        for flavour, output in outputs.items():
            if flavour == "cpu" and settings.method == "dynamic":
                quantize_dynamic(
                    str(prepared),
                    str(output),
                    weight_type=QuantType.QInt8,
                    per_channel=settings.per_channel,
                    reduce_range=settings.reduce_range,
                )
                continue
            symmetric = flavour == "tensorrt"
            key = calibration_symmetry(settings, flavour)
            if key not in caches:
                ranges = calibrate(prepared, calibration, settings, key, Path(tmp))
                # quantize_static takes precomputed ranges only as its calibration cache, and then skips its
                # own calibration.
                caches[key] = (Path(tmp) / f"ranges-{int(key)}.json", ranges.calibration_method)
                save_tensors_data(ranges, caches[key][0])
            cache, method = caches[key]
            quantize_static(
                str(prepared),
                str(output),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                calibrate_method=method,
                extra_options={
                    # Quantizes each range as [-max(|low|, |high|), max(|low|, |high|)] with zero-point 0, so
                    # the entropy ranges, clipped to the data on one side, need not be symmetric themselves.
                    "ActivationSymmetric": symmetric,
                    "WeightSymmetric": True,
                    # Each consumer gets its own Q/DQ pair: TensorRT fuses per edge.
                    "DedicatedQDQPair": symmetric,
                },
                calibration_cache_path=str(cache),
            )
