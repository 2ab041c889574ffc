"""The benchmark's pictures: the rows DVC plots render, and the PNG chart beside the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossdeploy.benchmark.cells import best_throughput, parse_cell, variant_cells


def plot_data(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows for DVC plots: latency against batch size at the lowest concurrency, and throughput against
    concurrency at the smallest batch size, one series per variant: the concurrency search sweeps that
    batch size first and in full (until throughput stops rising), where a larger one may have a single
    measured level. Cells with no figure (skipped, failed, not measured) are not plotted."""
    rows = [
        {"variant": variant, "batch": b, "concurrency": c, **{k: row[k] for k in ("p50_ms", "p99_ms", "throughput_ips")}}
        for variant, cells in variant_cells(results).items()
        for name, row in cells.items()
        if row.get("status") == "ok"
        for b, c in [parse_cell(name)]
    ]
    if not rows:
        return {"latency_vs_batch.json": [], "throughput_vs_concurrency.json": []}
    lowest_concurrency = min(r["concurrency"] for r in rows)
    smallest_batch = min(r["batch"] for r in rows)
    return {
        "latency_vs_batch.json": [r for r in rows if r["concurrency"] == lowest_concurrency],
        "throughput_vs_concurrency.json": [r for r in rows if r["batch"] == smallest_batch],
    }


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plot_data(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for variant in variant_cells(results):
        series = sorted((r["batch"], r["p50_ms"]) for r in data["latency_vs_batch.json"] if r["variant"] == variant)
        if series:
            left.plot(*zip(*series), marker="o", label=variant)
    left.set(xlabel="batch size", ylabel="p50 latency per request (ms)", yscale="log", title="Latency vs batch size")
    left.legend(fontsize=7)
    best = [(v, c, best_throughput(c)) for v, c in variant_cells(results).items()]
    best = [(v, b[0], c[b[1]].get("peak_pct")) for v, c, b in best if b]
    if best:
        names, values, shares = zip(*best)
        bars = right.barh(names, values)
        # each bar's share of the machine's GEMM peak in its precision: slow variant, or slow machine
        right.bar_label(bars, labels=[f"{p:.0f} % of peak" if p is not None else "" for p in shares], fontsize=7, padding=2)
        right.margins(x=0.18)  # room for the longest bar's label
    right.set(xlabel="best throughput (images/s)", title="Best throughput per variant (share of the GEMM peak)")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
