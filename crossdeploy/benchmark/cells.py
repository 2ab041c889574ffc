"""The shape of metrics/benchmark.json, shared by the stage that measures and the stage that judges and
reports: cell names, the row of a cell that was not measured, and queries over measured cells.

Kept free of the measurement code, so the report stage does not depend on it under DVC.
"""

from __future__ import annotations

from typing import Any

#: benchmark.json's top-level keys that are not variants; "checks" is in files written before the
#: report stage took the checks over (a benchmark.baseline from an older commit); "resources" holds each
#: measured variant's wall time and peak memory (its process and any server it started); "peaks" the
#: machine's GEMM peaks (benchmark/peaks.py)
SECTIONS = ("mlperf", "harness", "checks", "device", "setup", "resources", "peaks")


def cell_name(batch_size: int, concurrency: int) -> str:
    return f"b{batch_size}_c{concurrency}"


def parse_cell(name: str) -> tuple[int, int]:
    """(batch size, concurrency) of a cell_name."""
    batch, concurrency = name.split("_")
    return int(batch[1:]), int(concurrency[1:])


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


#: a cell the concurrency search (benchmark/search.py) left out: no figure, the evidence as its reason
NOT_MEASURED = "not measured"


def not_measured(reason: str) -> dict[str, Any]:
    return {"status": NOT_MEASURED, "reason": reason}


def variant_cells(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    return {name: cells for name, cells in results.items() if name not in SECTIONS}


def best_throughput(cells: dict[str, dict[str, Any]], batch_size: int | None = None) -> tuple[float, str] | None:
    """The highest throughput over the measured cells (at one batch size if given) and its cell name."""
    ok = [
        (row["throughput_ips"], name)
        for name, row in cells.items()
        if row.get("status") == "ok" and (batch_size is None or parse_cell(name)[0] == batch_size)
    ]
    return max(ok) if ok else None
