"""PyTorch, running the exported program written by the model stage: eager or through torch.compile,
on the CPU in FP32 or on a CUDA GPU (FP16 there is the GPU baseline TensorRT is compared with)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdeploy.device_info import usable_cores
from crossdeploy.errors import RuntimeUnavailable
from crossdeploy.runtimes.base import Runner, ThreadSettings


class TorchRunner(Runner):
    layout = "NCHW"

    def __init__(
        self,
        program_path: str | Path,
        name: str = "torch-fp32",
        threads: ThreadSettings | None = None,
        compile: bool = False,
        device: str = "cpu",
        half: bool = False,
    ):
        super().__init__(name, threads)
        self.program_path = Path(program_path)
        self.compile = compile
        self.device = device
        self.half = half

    @property
    def max_in_flight(self) -> int | None:
        return usable_cores() if self.device == "cpu" else None

    def _activate_impl(self) -> None:
        import torch

        from crossdeploy.model.source import load_program

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeUnavailable(cuda_unavailable_reason(torch))
        if self.threads.intra_op:
            torch.set_num_threads(self.threads.intra_op)
        self._torch = torch
        self._module = load_program(self.program_path).to(self.device)
        if self.half:
            self._module = self._module.half()
        if self.compile:
            # dynamic=True: one compiled graph for every batch size instead of a recompile per size
            self._module = torch.compile(self._module, dynamic=True)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, non_blocking=True)
            logits = self._module(x.half() if self.half else x)
            return logits.float().cpu().numpy()  # .cpu() waits for the GPU: the timing covers the work

    def _deactivate_impl(self) -> None:
        del self._module


def cuda_unavailable_reason(torch) -> str:
    """Why PyTorch cannot use a GPU: no GPU, a CPU build, or a driver too old for its CUDA."""
    from crossdeploy.device_info import driver_too_old, gpus

    if not gpus():
        return "PyTorch sees no CUDA GPU here (nvidia-smi finds none)"
    if torch.version.cuda is None:
        return f"PyTorch {torch.__version__} is a CPU build; install a CUDA build of torch on this GPU machine"
    major = int(torch.version.cuda.split(".")[0])
    return (
        driver_too_old(major, f"PyTorch {torch.__version__}")
        or f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) cannot start CUDA on this GPU"
    )
