"""PyTorch, running the exported program written by the model stage: eager, or through torch.compile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdeploy.runtimes.base import Runner, ThreadSettings


class TorchRunner(Runner):
    layout = "NCHW"

    def __init__(
        self,
        program_path: str | Path,
        name: str = "torch-fp32",
        threads: ThreadSettings | None = None,
        compile: bool = False,
    ):
        super().__init__(name, threads)
        self.program_path = Path(program_path)
        self.compile = compile

    def _activate_impl(self) -> None:
        import torch

        from crossdeploy.source_model import load_program

        if self.threads.intra_op:
            torch.set_num_threads(self.threads.intra_op)
        self._torch = torch
        self._module = load_program(self.program_path)
        if self.compile:
            # dynamic=True: one compiled graph for every batch size instead of a recompile per size
            self._module = torch.compile(self._module, dynamic=True)

    def _infer_impl(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._module(self._torch.from_numpy(batch)).numpy()

    def _deactivate_impl(self) -> None:
        del self._module
