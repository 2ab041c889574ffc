"""The benchmark's readable outputs: the Markdown report, its PNG chart, and the data DVC plots render."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossdeploy.benchmark.suite import best_throughput
from crossdeploy.benchmark.sweep import parse_cell
from crossdeploy.parity_report import weights_statement
from crossdeploy.source_model import ModelCard
from crossdeploy.variants import REFERENCE

SECTIONS = ("mlperf", "harness", "checks", "device", "setup")


def variant_cells(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    return {name: cells for name, cells in results.items() if name not in SECTIONS}


def plot_data(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Rows for DVC plots: latency against batch size at the lowest concurrency, and throughput against
    concurrency at the largest batch size, one series per variant."""
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
    largest_batch = max(r["batch"] for r in rows)
    return {
        "latency_vs_batch.json": [r for r in rows if r["concurrency"] == lowest_concurrency],
        "throughput_vs_concurrency.json": [r for r in rows if r["batch"] == largest_batch],
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_rows(results: dict[str, Any], parity: dict[str, Any], sizes_mb: dict[str, float]) -> list[dict[str, Any]]:
    reference = best_throughput(results.get(REFERENCE, {}))
    rows = []
    for variant, cells in variant_cells(results).items():
        single = cells.get("b1_c1", {})
        best = best_throughput(cells)
        parity_row = parity.get(variant, {})
        rows.append({
            "variant": variant,
            "precision": parity_row.get("precision", ""),
            "size_mb": parity_row.get("size_mb", sizes_mb.get(variant)),
            "parity": parity_row.get("status", "not validated"),
            "p50_b1_ms": single.get("p50_ms"),
            "p99_b1_ms": single.get("p99_ms"),
            "best_ips": best[0] if best else None,
            "best_at": "batch {}, concurrency {}".format(*parse_cell(best[1])) if best else "",
            "speedup": best[0] / reference[0] if best and reference else None,
            "reason": "" if best else next((row.get("reason", "") for row in cells.values()), ""),
        })
    return rows


def benchmark_markdown(
    results: dict[str, Any], parity: dict[str, Any], sizes_mb: dict[str, float], card: ModelCard, chart: str
) -> str:
    setup, device = results["setup"], results["device"]
    gpus = ", ".join(f"{g['name']} (driver {g['driver']})" for g in device["gpus"]) or "none"
    lines = [
        f"# Benchmark — {card.name}",
        "",
        weights_statement(card),
        "",
        f"Machine: {device['cpu']}, {device['usable_cores']} usable cores; GPU: {gpus}. "
        f"Profile `{setup['profile']}`; threads intra-op {setup['threads']['intra_op'] or 'default'}, "
        f"inter-op {setup['threads']['inter_op'] or 'default'}. Inputs are preprocessed evaluation images; "
        "timing excludes loading and preprocessing. Closed-loop clients; each cell is measured in windows "
        f"until the last three agree within {setup['stability_pct']}% (or its cap; `stable` in the metrics says which).",
        "",
        f"![latency and throughput]({chart})",
        "",
        "| variant | precision | size MB | parity | p50 b1 ms | p99 b1 ms | best img/s | reached at | speedup vs torch-fp32 | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary_rows(results, parity, sizes_mb):
        lines.append(
            f"| {r['variant']} | {r['precision']} | {_fmt(r['size_mb'], 1)} | {r['parity']} | {_fmt(r['p50_b1_ms'])} | "
            f"{_fmt(r['p99_b1_ms'])} | {_fmt(r['best_ips'], 1)} | {r['best_at']} | {_fmt(r['speedup'])}{'x' if r['speedup'] else ''} | {r['reason']} |"
        )
    lines += _mlperf_lines(results["mlperf"], setup) + _check_lines(results)
    return "\n".join(lines) + "\n"


def _mlperf_lines(mlperf: dict[str, Any], setup: dict[str, Any]) -> list[str]:
    if not mlperf:
        return []
    lines = [
        "",
        "## MLPerf LoadGen scenarios",
        "",
        "MLPerf-methodology figures from MLPerf LoadGen, **not official MLPerf results**: "
        f"minimum duration {setup['mlperf_min_duration_ms'] / 1000:g} s per run (the rules require 600 s), no accuracy run, no audit. "
        f"Server is the highest Poisson rate LoadGen's peak search found with p99 within {setup['server_latency_ms']:g} ms.",
        "",
        "| variant | SingleStream p90 ms | Offline img/s | Server img/s | LoadGen verdict | note |",
        "|---|---|---|---|---|---|",
    ]
    for variant, row in mlperf.items():
        if row["status"] != "ok":
            lines.append(f"| {variant} |  |  |  | {row['status']} | {row['reason']} |")
            continue
        verdict = ", ".join(
            f"{s} {'VALID' if row[f'{s}_valid'] else 'INVALID'}" for s in ("singlestream", "offline", "server")
        )
        lines.append(
            f"| {variant} | {_fmt(row['singlestream_p90_ms'])} | {_fmt(row['offline_ips'], 1)} | "
            f"{_fmt(row['server_ips'], 1)} | {verdict} | {row.get('server_note', '')} |"
        )
    return lines


def _check_lines(results: dict[str, Any]) -> list[str]:
    found = results["checks"]
    lines = ["", "## Targets", ""]
    if "int8_over_fp32" in found:
        c = found["int8_over_fp32"]
        lines.append(
            f"- INT8 over FP32 (ONNX Runtime, best throughput at batch {c['batch']}, same run): "
            f"{c['ratio']:.2f}x, target >= {c['target']:g}x: {'met' if c['met'] else 'MISSED'}."
        )
    if "harness_overhead" in found:
        h, c = results["harness"], found["harness_overhead"]
        lines.append(
            f"- Harness overhead on {h['variant']} at batch {h['batch']}: {c['overhead_pct']:.2f}% "
            f"({h['harness_ips']:.1f} img/s measured by the harness against {h['bare_ips']:.1f} img/s from a bare "
            f"`session.run` loop on the same session and inputs; median of {h['rounds']} alternating paired rounds), "
            f"target <= {c['target_max_pct']:g}%: {'met' if c['met'] else 'MISSED'}."
        )
    return lines if len(lines) > 3 else []


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
    best = [(v, best_throughput(c)) for v, c in variant_cells(results).items()]
    best = [(v, b[0]) for v, b in best if b]
    if best:
        names, values = zip(*best)
        right.barh(names, values)
    right.set(xlabel="best throughput (images/s)", title="Best throughput per variant")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
