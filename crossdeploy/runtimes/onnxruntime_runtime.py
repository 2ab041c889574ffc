"""ONNX Runtime: the CPU execution provider, or CUDA / TensorRT providers where onnxruntime-gpu and a GPU exist."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from crossdeploy.device_info import usable_cores
from crossdeploy.errors import CrossdeployError, RuntimeUnavailable
from crossdeploy.runtimes.base import Runner, ThreadSettings

TENSORRT_PROVIDER = "TensorrtExecutionProvider"


class OnnxRuntimeRunner(Runner):
    layout = "NCHW"

    def __init__(
        self,
        model_path: str | Path,
        name: str,
        threads: ThreadSettings | None = None,
        providers: tuple[str | tuple[str, dict], ...] = ("CPUExecutionProvider",),
        trt_batch: dict[str, int] | None = None,
        precision: str = "fp32",
    ):
        super().__init__(name, threads)
        self.model_path = Path(model_path)
        self.providers = providers
        #: tensorrt.batch (min/opt/max) for the TensorRT provider's explicit profile
        self.trt_batch = trt_batch
        #: the precision the row names: an fp16 row's file must be an FP16 model, since the FP32 one would run and
        #: pass its parity under the FP16 name
        self.precision = precision

    @property
    def max_in_flight(self) -> int | None:
        return usable_cores() if _provider_name(self.providers[0]) == "CPUExecutionProvider" else None

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        if self.precision == "fp16":
            from crossdeploy.onnx.fp16 import check_fp16_file

            check_fp16_file(self.model_path, self.name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads.intra_op
        options.inter_op_num_threads = self.threads.inter_op
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [self._with_profile(p) for p in self.providers]
        requested = _provider_name(self.providers[0])
        available = ort.get_available_providers()
        if requested in available and requested != "CPUExecutionProvider":
            _load_gpu_libraries(ort, requested)
        with captured_native_output() as output, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # no fallback: a provider that fails to start raises here instead of leaving a CPU session
                self._session = ort.InferenceSession(str(self.model_path), options, providers=providers, enable_fallback=0)
            except Exception as exc:
                if requested == "CPUExecutionProvider":
                    raise
                # installed and present, yet it cannot start (a missing cuDNN, a bad option): broken, not absent
                raise RuntimeError(f"ONNX Runtime could not start {requested}: {str(exc)[:300]}") from None
        used = self._session.get_providers()
        if used[0] != requested:
            log = "\n".join([output.getvalue(), *(str(w.message) for w in caught)])
            del self._session
            reason = provider_fallback_reason(requested, used, available, log)
            if requested not in available:
                raise RuntimeUnavailable(reason)  # this onnxruntime build lacks it: a package to install
            raise RuntimeError(reason)
        # nor at run time: ORT would otherwise retry a failed run on the next provider, under this row's name
        self._session.disable_fallback()
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        self._output_name = self._session.get_outputs()[0].name
        if all(isinstance(d, int) for d in model_input.shape[1:]):
            self._input_shape = tuple(model_input.shape[1:])
        if isinstance(model_input.shape[0], int):
            self.fixed_batch = model_input.shape[0]

    def _with_profile(self, provider: str | tuple[str, dict]) -> str | tuple[str, dict]:
        name, options = provider if isinstance(provider, tuple) else (provider, {})
        for key, value in options.items():
            if key.endswith("_cache_path"):
                Path(value).mkdir(parents=True, exist_ok=True)  # the TensorRT provider creates only the last folder
        if self.trt_batch is None or name != TENSORRT_PROVIDER:
            return provider
        return name, {**options, **tensorrt_profile_options(self.model_path, self.trt_batch)}

    @property
    def session(self):
        """The ONNX Runtime session, for callers that measure a bare `session.run` against this wrapper."""
        return self._session

    @property
    def input_name(self) -> str:
        return self._input_name

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run([self._output_name], {self._input_name: batch})[0]

    def _deactivate_impl(self) -> None:
        del self._session


def _load_gpu_libraries(ort, provider: str) -> None:
    """Load the CUDA, cuDNN and TensorRT libraries the pip wheels carry before ONNX Runtime's providers
    look for them on the loader path, where those wheels do not put them."""
    if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21: CUDA and cuDNN from the nvidia-* wheels
        ort.preload_dlls()
    if provider == TENSORRT_PROVIDER:
        try:
            import tensorrt  # noqa: F401  (its import loads libnvinfer from the tensorrt-libs wheel)
        except ImportError:
            pass  # a TensorRT installed system-wide is found by the loader itself


def _provider_name(provider: str | tuple[str, dict]) -> str:
    return provider if isinstance(provider, str) else provider[0]


def tensorrt_profile_options(model_path: Path, batch: dict[str, int]) -> dict[str, str]:
    """The TensorRT provider's explicit optimization profile over the batch axis (tensorrt.batch): without
    one it builds an engine for the first shape it sees and rebuilds on each larger batch, mid-benchmark."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    shapes: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim[1:]
        if not all(d.HasField("dim_value") for d in dims):
            raise CrossdeployError(
                f"{model_path}: input {value.name} has a dynamic dimension besides the batch; the TensorRT profile "
                "needs the rest fixed (export with a fixed model.input_size)."
            )
        if any(c in value.name for c in ":,"):
            # the provider splits its profile string on these and silently drops a profile it cannot parse
            raise CrossdeployError(
                f"{model_path}: input name {value.name!r} holds ':' or ',', which the TensorRT provider's profile "
                "cannot carry; rename the input."
            )
        sample = "x".join(str(d.dim_value) for d in dims)
        for key in shapes:
            shapes[key].append(f"{value.name}:{int(batch[key])}x{sample}")
    return {f"trt_profile_{key}_shapes": ",".join(values) for key, values in shapes.items()}


_ORT_REASON = re.compile(r"(EP Error.*|.*Failed to (?:load|create).*|.*not in available provider names.*|.*CUDA failure.*|.*cudaError.*)")


def provider_fallback_reason(requested: str, used: list[str], available: list[str], log: str) -> str:
    """Why a session asked for `requested` runs on `used` instead: ONNX Runtime falls back silently (to
    the CPU, say), and a row measured that way would be a CPU run under a GPU name."""
    said = [line.strip() for line in _ORT_REASON.findall(log) if line.strip()]
    if requested not in available:
        why = (
            f"this onnxruntime has no {requested} (available: {', '.join(available)}); install onnxruntime-gpu alone "
            "(pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu)"
        )
    else:
        why = f"ONNX Runtime said: {said[-1][:300]}" if said else "ONNX Runtime gave no reason; run with ORT's verbose log"
    return f"ONNX Runtime could not start {requested} and fell back to {', '.join(used)}: {why}"


_FD2 = threading.Lock()  # one redirection of file descriptor 2 at a time: nested ones would lose it


@contextlib.contextmanager
def captured_native_output() -> Iterator["_Captured"]:
    """ONNX Runtime's C++ log (why a provider failed to load) goes to file descriptor 2, past sys.stderr."""
    captured = _Captured()
    with _FD2, tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")
            if captured.text:
                os.write(2, captured.text.encode())  # still shown: only read for the reason


class _Captured:
    text = ""

    def getvalue(self) -> str:
        return self.text
