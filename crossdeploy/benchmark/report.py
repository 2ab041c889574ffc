"""metrics/benchmark.md: the benchmark's figures, parity beside them, the MLPerf scenarios, the target
checks (benchmark/checks.py), and optionally a baseline to compare with."""

from __future__ import annotations

from typing import Any

from crossdeploy.benchmark.cells import NOT_MEASURED, best_throughput, cell_name, parse_cell, variant_cells
from crossdeploy.layout import REFERENCE
from crossdeploy.model.card import ModelCard
from crossdeploy.validation.report import weights_statement


def _fmt(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def summary_rows(results: dict[str, Any], parity: dict[str, Any], baseline: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    reference = best_throughput(results.get(REFERENCE, {}))
    sizes_mb = results.get("setup", {}).get("artifact_mb", {})
    rows = []
    for variant, cells in variant_cells(results).items():
        single = cells.get("b1_c1", {})
        best = best_throughput(cells)
        before = best_throughput((baseline or {}).get(variant, {}))
        parity_row = parity.get(variant, {})
        rows.append(
            {
                "variant": variant,
                "precision": parity_row.get("precision", ""),
                "size_mb": parity_row.get("size_mb", sizes_mb.get(variant)),
                "parity": parity_row.get("status", "not validated"),
                "p50_b1_ms": single.get("p50_ms"),
                "p99_b1_ms": single.get("p99_ms"),
                "best_ips": best[0] if best else None,
                "best_at": "batch {}, concurrency {}".format(*parse_cell(best[1])) if best else "",
                "peak_pct": cells[best[1]].get("peak_pct") if best else None,
                "speedup": best[0] / reference[0] if best and reference else None,
                "vs_baseline": best[0] / before[0] if best and before else None,
                "reason": _not_measured_note(cells) if best else next((row.get("reason", "") for row in cells.values()), ""),
            }
        )
    return rows


def _not_measured_note(cells: dict[str, dict[str, Any]]) -> str:
    """What the concurrency search left out of a measured variant: those cells have no figure, and the
    report claims none; benchmark.json keeps each one's evidence."""
    left_out = sorted((parse_cell(name) for name, row in cells.items() if row.get("status") == NOT_MEASURED))
    if not left_out:
        return ""
    listed = ", ".join(f"{b} x {c}" for b, c in left_out)
    return (
        f"not measured (batch x clients): {listed}, where throughput had stopped rising with more clients or a larger "
        "batch (benchmark.json: the evidence)"
    )


def key_figures(results: dict[str, Any], parity: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The few numbers an experiment is judged by, for `dvc exp show` columns: best throughput and p99
    at batch 1 per measured variant, and each INT8 variant's top-1 agreement with FP32."""
    best, p99 = {}, {}
    for variant, cells in variant_cells(results).items():
        found = best_throughput(cells)
        if found:
            best[variant] = found[0]
        if cells.get("b1_c1", {}).get("status") == "ok":
            p99[variant] = cells["b1_c1"]["p99_ms"]
    agreement = {
        variant: row["top1_agreement"]
        for variant, row in parity.items()
        if row.get("precision") == "int8" and row.get("status") in ("ok", "failed") and "top1_agreement" in row
    }
    return {"best_ips": best, "p99_b1_ms": p99, "int8_top1_agreement": agreement}


def benchmark_markdown(
    results: dict[str, Any],
    parity: dict[str, Any],
    checks: dict[str, Any],  # checks.check_targets
    card: ModelCard,
    chart: str,
    baseline: tuple[str, dict[str, Any]] | None = None,  # (its name, its benchmark.json)
) -> str:
    setup, device = results["setup"], results["device"]
    compared = baseline[1] if baseline else None
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
        *peak_lines(results.get("peaks")),
        f"![latency and throughput]({chart})",
        "",
    ]
    if baseline:
        base_device = compared.get("device", {})
        lines += [
            f"Compared with baseline {baseline[0]} (measured on "
            f"{base_device.get('cpu', 'an unrecorded machine')}): `vs baseline` is best throughput now over then; "
            "only meaningful on the same machine.",
            "",
        ]
    lines += [
        "| variant | precision | size MB | parity | p50 b1 ms | p99 b1 ms | best img/s | % of peak | reached at | speedup vs torch-fp32 |"
        + (" vs baseline |" if baseline else "")
        + " note |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if baseline else "") + "---|",
    ]
    for r in summary_rows(results, parity, compared):
        versus = f" {_fmt(r['vs_baseline'])}{'x' if r['vs_baseline'] else ''} |" if baseline else ""
        lines.append(
            f"| {r['variant']} | {r['precision']} | {_fmt(r['size_mb'], 1)} | {r['parity']} | {_fmt(r['p50_b1_ms'])} | "
            f"{_fmt(r['p99_b1_ms'])} | {_fmt(r['best_ips'], 1)} | {_fmt(r['peak_pct'], 1)} | {r['best_at']} | "
            f"{_fmt(r['speedup'])}{'x' if r['speedup'] else ''} |"
            f"{versus} {r['reason']} |"
        )
    lines += _int8_lines(results, int(checks.get("int8_over_fp32", {}).get("batch") or max(setup["batch_sizes"])))
    lines += _mlperf_lines(results["mlperf"], setup) + _check_lines(checks, results.get("harness") or {})
    return "\n".join(lines) + "\n"


#: each runtime's INT8 variant beside its FP32 one, compared at one batch size in the same run
INT8_PAIRS = {
    "ONNX Runtime": ("onnxruntime-int8", "onnxruntime-fp32"),
    "OpenVINO": ("openvino-int8", "openvino-fp32"),
    "TFLite": ("tflite-int8", "tflite-fp32"),
    "TensorRT": ("tensorrt-int8", "tensorrt-fp16"),
}


def peak_lines(peaks: dict[str, Any] | None) -> list[str]:
    """The machine's GEMM peaks, the limit `% of peak` is taken against (benchmark/peaks.py)."""
    if not peaks:
        return []
    lines = []
    for device, entries in peaks.items():
        if entries.get("status") == "skipped":
            continue
        figures = []
        for precision in ("fp32", "bf16", "fp16", "int8"):
            entry = entries.get(precision)
            if entry is None:
                continue
            unit = "GOP/s" if precision == "int8" else "GFLOP/s"
            figures.append(
                f"{precision.upper()} {entry['gops']:,.0f} {unit}"
                if "gops" in entry
                else f"{precision.upper()} not measured: {entry['reason']}"
            )
        where = entries.get("name", device.upper())
        lines.append(
            f"GEMM peaks on the {where} ({'torch' if entries.get('name') else 'torch and ONNX Runtime'}, the best of "
            f"{', '.join(map(str, entries['sizes']))}-wide products, "
            f"{entries['threads']} threads): "
            + "; ".join(figures)
            + ". `% of peak` is a cell's images/s times the model's FLOPs per image over its precision's peak."
        )
    return [*lines, ""] if lines else []


def _int8_lines(results: dict[str, Any], batch: int) -> list[str]:
    """INT8 over FP32 for each runtime at one batch size, side by side: where a runtime's INT8 gains."""
    rows = []
    for runtime, (int8, fp32) in INT8_PAIRS.items():
        found = [best_throughput(results.get(name, {}), batch) for name in (int8, fp32)]
        if all(found):
            rows.append(f"| {runtime} | {int8} | {found[0][0]:.1f} | {fp32} | {found[1][0]:.1f} | {found[0][0] / found[1][0]:.2f}x |")
    if not rows:
        return []
    return [
        "",
        f"## INT8 over its runtime's float variant, batch {batch}",
        "",
        "| runtime | INT8 variant | img/s | float variant | img/s | ratio |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def _server_method(setup: dict[str, Any]) -> str:
    bound = f"p99 within {setup['server_latency_ms']:g} ms"
    runs = setup.get("mlperf_server_runs")
    if runs is None:
        return f"Server is the highest Poisson rate LoadGen's peak search found with {bound}."
    if runs == 1:
        return (
            f"Server is one fixed Poisson rate, half what one worker sustains alone, met or missed with {bound}: a lower "
            "bound on the peak where met (the full profile runs LoadGen's peak search)."
        )
    return (
        f"Server is the highest of {runs} fixed Poisson rate{'s' if runs > 1 else ''} tried with {bound}: a lower bound "
        "on the peak, which the note brackets (the full profile runs LoadGen's peak search)."
    )


def _mlperf_lines(mlperf: dict[str, Any], setup: dict[str, Any]) -> list[str]:
    if not mlperf:
        return []
    lines = [
        "",
        "## MLPerf LoadGen scenarios",
        "",
        "MLPerf-methodology figures from MLPerf LoadGen, **not official MLPerf results**: "
        f"minimum duration {setup['mlperf_min_duration_ms'] / 1000:g} s per run (the rules require 600 s), no accuracy run, no audit. "
        + _server_method(setup),
        "",
        "| variant | SingleStream p90 ms | Offline img/s | Server img/s | LoadGen verdict | note |",
        "|---|---|---|---|---|---|",
    ]
    for variant, row in mlperf.items():
        if row["status"] != "ok":
            lines.append(f"| {variant} |  |  |  | {row['status']} | {row['reason']} |")
            continue
        verdict = ", ".join(f"{s} {'VALID' if row[f'{s}_valid'] else 'INVALID'}" for s in ("singlestream", "offline", "server"))
        server = "none within bound" if row["server_ips"] is None else _fmt(row["server_ips"], 1)
        lines.append(
            f"| {variant} | {_fmt(row['singlestream_p90_ms'])} | {_fmt(row['offline_ips'], 1)} | "
            f"{server} | {verdict} | {row.get('server_note', '')} |"
        )
    return lines


def _verdict(check: dict[str, Any]) -> str:
    if check["met"] is None:
        return check["note"]
    return "met" if check["met"] else "MISSED"


def _check_lines(found: dict[str, Any], harness: dict[str, Any]) -> list[str]:
    """One line per target; one that could not be judged says so with the reason, never disappears."""
    lines = ["", "## Targets", ""]

    def judged(check: dict[str, Any]) -> bool:
        return check["met"] is not None

    if "int8_over_fp32" in found:
        c = found["int8_over_fp32"]
        figure = f"{c['ratio']:.2f}x, " if judged(c) else ""
        lines.append(
            f"- INT8 over FP32 (ONNX Runtime, best throughput at batch {c['batch']}, same run): "
            f"{figure}target >= {c['target']:g}x: {_verdict(c)}."
        )
    if "harness_overhead" in found:
        c = found["harness_overhead"]
        if judged(c):
            lines.append(
                f"- Harness overhead on {harness['variant']} at batch {harness['batch']}: {c['overhead_pct']:.2f}% "
                f"({harness['harness_ips']:.1f} img/s measured by the harness against {harness['bare_ips']:.1f} img/s from a bare "
                f"`session.run` loop on the same session and inputs; median of {harness['rounds']} alternating paired rounds), "
                f"target <= {c['target_max_pct']:g}%: {_verdict(c)}."
            )
        else:
            lines.append(f"- Harness overhead against a bare `session.run` loop, target <= {c['target_max_pct']:g}%: {_verdict(c)}.")
    for engine in ("tfserving", "kserve"):
        c = found.get(f"{engine}_bytes_over_in_process")
        if not c:
            continue
        where = f"- {engine}-rest-bytes over tf-savedmodel-fp32 in process (batch {c['batch']}, {c['concurrency']} clients): "
        if judged(c):
            rest_float = f"{c['rest_float_fraction']:.0%}" if c["rest_float_fraction"] is not None else "not measured"
            asked = cell_name(c["batch"], c["concurrency"])
            stand_in = (
                f"; both at {c['cell']}, the most clients both measured at that batch, where the search left {asked} out"
                if c.get("cell", asked) != asked
                else ""
            )
            lines.append(
                where + f"{c['fraction']:.0%} ({c['served_ips']:.1f} against {c['in_process_ips']:.1f} img/s; REST floats: "
                f"{rest_float}{stand_in}), "
                f"target >= {c['target']:.0%}: {_verdict(c)}."
            )
        else:
            lines.append(where + f"target >= {c['target']:.0%}: {_verdict(c)}.")
    c = found.get("peaks_plausible")
    if c:
        if judged(c):
            detail = "positive, and no cell above its precision's peak" if c["met"] else "; ".join(c["problems"])
            lines.append(f"- GEMM peaks usable as the limit ({detail}): {_verdict(c)}.")
        else:
            lines.append(f"- GEMM peaks usable as the limit: {_verdict(c)}.")
    gpu = found.get("gpu_target")
    if gpu:
        name, card = gpu["variant"], gpu["card"]
        o = gpu["offline"]
        reference = f"MLPerf's single-{card} result ({o['reference_ips']} img/s)"
        if judged(o):
            lines.append(
                f"- {name} Offline on {gpu['measured_on']}: {o['ips']:.0f} img/s, {o['fraction']:.0%} of {reference}, "
                f"target >= {o['target']:.0%}: {_verdict(o)}."
            )
        else:
            lines.append(f"- {name} Offline on {gpu['measured_on']}: target >= {o['target']:.0%} of {reference}: {_verdict(o)}.")
        p = gpu["singlestream_p90"]
        figure = f"{p['ms']:.3f} ms, " if judged(p) else ""
        target = f"target <= {p['target_max_ms']} ms: " if p["target_max_ms"] is not None else ""
        lines.append(f"- {name} SingleStream p90: {figure}{target}{_verdict(p)}.")
        a = gpu["int8_top1_agreement"]
        figure = f"{a['value']:.2%}, " if judged(a) else ""
        lines.append(f"- {name} top-1 agreement with FP32: {figure}target >= {a['target']:.0%}: {_verdict(a)}.")
    return lines if len(lines) > 3 else []
