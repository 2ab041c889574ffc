"""Small read-only facts about ONNX graphs used in metrics and reports."""

from __future__ import annotations

from pathlib import Path


def node_count(model) -> int:
    return len(model.graph.node)


def inferred_shapes(model) -> dict[str, list[int | None]]:
    """Each tensor's shape as ONNX shape inference finds it (None for a dimension it cannot fix)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        info.name: [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
        for info in [*inferred.graph.input, *inferred.graph.value_info]
        if info.type.tensor_type.HasField("shape")
    }


def size_mb(path: str | Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)
