"""How big the model is, for the cost-growth experiment (crossdeploy/experiments/cost_growth.py): its parameter count
and FLOPs per image, counted by PyTorch's own FlopCounterMode on the exported program itself, so the
figure is of what every conversion starts from."""

from __future__ import annotations

from typing import Any


def model_size(program, input_size: int) -> dict[str, Any]:
    """Parameters and GFLOPs of one image through `program` (a torch.export ExportedProgram).

    FlopCounterMode counts a multiply-add as two FLOPs (ResNet50: about 8.2 GFLOPs, 4.1 G multiply-adds)
    and covers the matrix products and convolutions, which are nearly all of a CNN's arithmetic."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module = program.module()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(torch.zeros(1, 3, input_size, input_size))
    return {
        "parameters": int(sum(p.numel() for p in program.parameters())),
        "gflops_per_image": round(counter.get_total_flops() / 1e9, 4),
    }
