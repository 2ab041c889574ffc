"""The trade-off drawn: p99 latency against throughput for every measured cell, one colour per variant, the
SLO line, the Pareto front and the choice; and the same cells as rows for a DVC plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossdeploy.benchmark.cells import parse_cell, variant_cells


def plot_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measured cell: what the DVC plot (x throughput_ips, y p99_ms, by variant) renders."""
    return [
        {
            "variant": variant,
            "batch": b,
            "concurrency": c,
            "throughput_ips": row["throughput_ips"],
            "p99_ms": row["p99_ms"],
            "stable": row.get("stable") is True,
        }
        for variant, cells in variant_cells(results).items()
        for name, row in sorted(cells.items(), key=lambda item: parse_cell(item[0]))
        if row.get("status") == "ok"
        for b, c in [parse_cell(name)]
    ]


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells no other cell beats on both counts (at least the throughput at no more p99), by throughput."""
    front = [
        r
        for r in rows
        if not any(
            o is not r
            and o["throughput_ips"] >= r["throughput_ips"]
            and o["p99_ms"] <= r["p99_ms"]
            and (o["throughput_ips"], o["p99_ms"]) != (r["throughput_ips"], r["p99_ms"])
            for o in rows
        )
    ]
    return sorted(front, key=lambda r: r["throughput_ips"])


def write_chart(results: dict[str, Any], decision: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = plot_rows(results)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    # up to 20 variants: tab20 keeps their colours apart; an unstable cell is drawn hollow
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in rows)):
        colour = plt.get_cmap("tab20")(i % 20)
        label = variant
        for stable in (True, False):
            mine = [r for r in rows if r["variant"] == variant and r["stable"] is stable]
            if mine:
                ax.scatter(
                    [r["throughput_ips"] for r in mine],
                    [r["p99_ms"] for r in mine],
                    s=24,
                    edgecolors=[colour],
                    facecolors=[colour] if stable else "none",
                    label=label,
                )
                label = None
    front = pareto_front(rows)
    if front:
        ax.plot(
            [r["throughput_ips"] for r in front],
            [r["p99_ms"] for r in front],
            color="black",
            linewidth=1,
            drawstyle="steps-post",
            label="Pareto front",
        )
    ax.axhline(decision["p99_slo_ms"], color="red", linestyle="--", linewidth=1, label=f"SLO p99 {decision['p99_slo_ms']:g} ms")
    marked = decision["choice"] or decision["closest"]
    if marked:
        label = "choice" if decision["choice"] else "closest (SLO not met)"
        ax.scatter(
            [marked["throughput_ips"]], [marked["p99_ms"]], marker="*", s=260, color="gold", edgecolors="black", zorder=5, label=label
        )
    ax.set(
        xlabel="throughput (images/s)",
        ylabel="p99 latency per request (ms)",
        yscale="log",
        title="p99 latency vs throughput, every measured cell (batch x clients)",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
