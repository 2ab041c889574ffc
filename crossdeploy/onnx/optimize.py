"""Graph simplification for a CNN: onnxslim, then ONNX Runtime's offline *basic* optimizations.

Basic level only: constant folding, Conv+BatchNorm/Add/Mul fusion and redundant-node removal keep
the graph in standard ONNX ops, so onnx2tf and TensorRT can still read it. The extended and all
levels add ONNX Runtime's private fused ops (com.microsoft), which other consumers reject; ONNX
Runtime applies those itself at session creation.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from crossdeploy.onnx.graph import node_count


def optimize_onnx(source: Path, output: Path) -> dict[str, int]:
    """Write the optimized model and return the node counts after each step."""
    import onnx
    import onnxruntime as ort
    import onnxslim

    exported = onnx.load(str(source))
    counts = {"exported": node_count(exported)}
    slimmed = onnxslim.slim(exported)
    counts["slimmed"] = node_count(slimmed)

    with tempfile.TemporaryDirectory() as tmp:
        slim_path = Path(tmp) / "slim.onnx"
        onnx.save(slimmed, str(slim_path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(output)
        ort.InferenceSession(str(slim_path), options, providers=["CPUExecutionProvider"])

    optimized = onnx.load(str(output))
    # ONNX Runtime declares every domain it knows; keep only those the graph uses, so other
    # consumers do not trip over contrib domains that no node needs.
    used = {node.domain for node in optimized.graph.node} | {""}
    kept = [o for o in optimized.opset_import if o.domain in used]
    del optimized.opset_import[:]
    optimized.opset_import.extend(kept)
    onnx.checker.check_model(optimized)
    onnx.save(optimized, str(output))
    counts["optimized"] = node_count(optimized)
    return counts
