"""OpenVINO on the CPU: the pipeline's ONNX files compiled by OpenVINO's CPU plugin, at an inference
precision the row names (f32, bf16) or, for the calibrated QDQ model, in INT8 (its low-precision
transformations turn Q/DQ pairs into integer kernels: VNNI or AMX where the CPU has them).

OpenVINO picks the precision it computes in from the hardware: on a CPU with BF16 its default for a float
model is bf16, not f32, so every row asks for its precision explicitly and the compiled model is checked
for it (a row named fp32 that ran in bf16, or bf16 that fell back to f32, would be a figure about another
arithmetic).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from crossdeploy.errors import RuntimeUnavailable
from crossdeploy.runtimes.base import Runner, ThreadSettings

#: the row's precision -> OpenVINO's inference_precision hint. INT8 rows compute what their Q/DQ nodes say;
#: what stays float between them runs in f32, so the hint is f32 there too.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
#: the CPU capability (OPTIMIZATION_CAPABILITIES) a precision needs
CAPABILITY = {"bf16": "BF16", "int8": "INT8"}


class OpenVinoRunner(Runner):
    layout = "NCHW"

    def __init__(self, model_path: str | Path, name: str, threads: ThreadSettings | None = None, precision: str = "fp32"):
        super().__init__(name, threads)
        if precision not in INFERENCE_PRECISION:
            raise ValueError(f"{name}: OpenVINO runs fp32, bf16 or int8, not {precision!r}")
        self.model_path = Path(model_path)
        self.precision = precision
        self._requests = threading.local()
        self._max_in_flight: int | None = None
        #: how many compute layers run in each precision, as the compiled model reports (check_inference_precision)
        self.layer_precisions: dict[str, int] = {}

    @property
    def max_in_flight(self) -> int | None:
        # OpenVINO's own answer to how many requests keep its streams busy; more clients only queue for the cores
        return self._max_in_flight

    def _activate_impl(self) -> None:
        import openvino as ov

        core = ov.Core()
        missing = missing_capability(core, self.precision)
        if missing:
            raise RuntimeUnavailable(missing)
        config = compile_config(self.precision, self.threads.intra_op)
        self._compiled = core.compile_model(core.read_model(str(self.model_path)), "CPU", config)
        self.layer_precisions = check_inference_precision(self._compiled, self.precision, self.name)
        self._max_in_flight = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        shape = self._compiled.input(0).get_partial_shape()
        if shape.rank.is_static and all(d.is_static for d in list(shape)[1:]):
            self._input_shape = tuple(int(d.get_length()) for d in list(shape)[1:])
        if shape.rank.is_static and shape[0].is_static:
            self.fixed_batch = int(shape[0].get_length())  # a file exported with one batch size takes only it

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        # an infer request holds its tensors: one per calling thread, as the compiled model allows
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def _deactivate_impl(self) -> None:
        self._requests = threading.local()
        del self._compiled


def compile_config(precision: str, threads: int = 0) -> dict[str, str | int]:
    """The CPU plugin's properties for a row: its inference precision, and the LATENCY hint, one stream over
    every core as the other in-process runtimes run a call (the benchmark's clients then queue for it,
    max_in_flight, instead of splitting the cores into streams). The deploy bundle serves with the same."""
    config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def missing_capability(core, precision: str) -> str | None:
    """Why this CPU cannot run `precision` in OpenVINO, naming the missing feature; None where it can."""
    needed = CAPABILITY.get(precision)
    if needed is None:
        return None
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if needed in capabilities:
        return None
    name = core.get_property("CPU", "FULL_DEVICE_NAME")
    return f"OpenVINO {precision} needs a CPU with {needed}; this {name} offers {', '.join(capabilities)}"


#: the layers that hold a classifier's arithmetic, and the precisions a row's layers must run in
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul")
EXPECTED_PRECISIONS = {"fp32": {"f32"}, "bf16": {"bf16"}, "int8": {"u8", "i8"}}


def compute_precisions(compiled) -> dict[str, int]:
    """How many of the compiled model's compute layers run in each precision (its runtime model's own record)."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) in COMPUTE_LAYERS:
            precision = str(info["runtimePrecision"].astype(str))
            counts[precision] = counts.get(precision, 0) + 1
    return counts


def check_inference_precision(compiled, precision: str, name: str) -> dict[str, int]:
    """The compute layers' precisions, or an error where they are not the row's: OpenVINO falls back silently
    (bf16 asked on a CPU without it compiles to f32; Q/DQ its transformations cannot fuse stays float). An
    fp32 row runs every layer in f32; bf16 and int8 rows at least half of them in their precision (a
    classifier's last FullyConnected may stay float)."""
    counts = compute_precisions(compiled)
    expected = EXPECTED_PRECISIONS[precision]
    matching, total = sum(n for p, n in counts.items() if p in expected), sum(counts.values())
    enough = matching == total if precision == "fp32" else 2 * matching >= total
    if total == 0 or not enough:
        found = ", ".join(f"{n} in {p}" for p, n in sorted(counts.items())) or "none"
        raise RuntimeError(
            f"{name}: OpenVINO compiled its compute layers to run in another precision than {precision} "
            f"({found}); the CPU or the model does not give this row its arithmetic"
        )
    return counts
