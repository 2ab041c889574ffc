"""Small read-only facts about ONNX graphs used in metrics and reports."""

from __future__ import annotations

from pathlib import Path


def node_count(model) -> int:
    return len(model.graph.node)


def size_mb(path: str | Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 1e6, 3)
