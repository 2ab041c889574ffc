"""metrics/deploy.md: the decision and its reasoning in a few lines."""

from __future__ import annotations

from typing import Any

from crossdeploy.deploy.decision import cell_words
from crossdeploy.deploy.served import PROTOCOL_WORDS


def _fidelity(fidelity: dict[str, Any]) -> str:
    figures = ", ".join(f"{k} {fidelity[k]:.4g}" for k in ("top1_agreement", "cosine_p1", "accuracy_ratio") if k in fidelity)
    return f"judged by {fidelity.get('judged_by', 'its own file')}, parity row `{fidelity['row']}`: {figures}"


def headline(decision: dict[str, Any]) -> list[str]:
    """On random weights, what the decision is: a run of the procedure, not a model to ship."""
    model = decision.get("model", {})
    if not model.get("random_weights"):
        return []
    return [
        f"**A demonstration of the procedure on random weights** ({model.get('arch')}): the figures below measure this "
        "machine and the conversions, not a model worth serving. Set model.weights or model.checkpoint to decide for a real one."
    ]


def _cell(c: dict[str, Any]) -> str:
    return f"`{c['variant']}` at {cell_words(c)}"


def summary(decision: dict[str, Any]) -> list[str]:
    """The decision in two or three sentences (also the bundle README's opening)."""
    slo = decision["p99_slo_ms"]
    choice = decision["choice"]
    if choice is None:
        closest = decision["closest"]
        if closest is None:
            return [f"**SLO not met** (p99 <= {slo:g} ms): no eligible variant was measured."]
        stable = "" if closest["stable"] else " (unstable: no stable cell was measured)"
        return [
            f"**SLO not met** (p99 <= {slo:g} ms). Closest: {_cell(closest)}{stable}, p99 {closest['p99_ms']:.4g} ms, "
            f"{closest['miss_ms']:.4g} ms over, at {closest['throughput_ips']:.4g} img/s ({_fidelity(closest['fidelity'])})."
        ]
    lines = [
        f"**Deploy {_cell(choice)}**: {choice['throughput_ips']:.4g} img/s"
        + (f" ({choice['peak_pct']:.3g} % of this machine's GEMM peak in its precision)" if choice.get("peak_pct") is not None else "")
        + f", p50 {choice['p50_ms']:.4g} ms, p99 {choice['p99_ms']:.4g} ms "
        f"against the SLO of {slo:g} ms (margin {choice['margin_ms']:.4g} ms, {choice['margin_pct']:.3g} %); "
        f"{_fidelity(choice['fidelity'])}."
    ]
    runner = decision["runner_up"]
    if runner:
        lines.append(
            f"Runner-up: {_cell(runner)}, {runner['throughput_ips']:.4g} img/s, p99 {runner['p99_ms']:.4g} ms: {runner['why_not']}."
        )
    return lines


def _served_row(name: str, row: dict[str, Any]) -> str:
    words = PROTOCOL_WORDS[name]
    if row.get("status") != "ok":
        return f"{words} {row.get('status')}: {row.get('reason', '')}".rstrip(": ")
    notes = [f"{row['of_in_process_pct']:.3g} % of in-process"] if row.get("of_in_process_pct") is not None else []
    notes += [] if row["meets_slo"] else ["over the SLO"]
    notes += [] if row.get("stable") else ["unstable"]
    return f"{words} {row['throughput_ips']:.4g} img/s, p99 {row['p99_ms']:.4g} ms" + (f" ({', '.join(notes)})" if notes else "")


def served_lines(decision: dict[str, Any]) -> list[str]:
    """What the choice does once served as the bundle's README says (deploy/served.py), or why it was not measured."""
    served = decision.get("served")
    if not served:
        return []
    if served["status"] != "measured":
        return [f"Served: not measured here ({served['reason']})."]
    rows = "; ".join(_served_row(name, row) for name, row in served["protocols"].items())
    verdict = "" if served["met"] else f" **Served, no protocol meets p99 <= {decision['p99_slo_ms']:g} ms.**"
    return [
        f"**Served** by `{served['command']}` at {cell_words(served)}, measured after the decision in one run on the "
        f"same images: {rows}.{verdict}"
    ]


def deploy_markdown(decision: dict[str, Any], chart: str | None = None) -> str:
    params = decision["params"]
    lines = ["# Deploy decision", "", *(line + "\n" for line in headline(decision)), *summary(decision), *served_lines(decision), ""]
    lines.append(
        f"Rules: variants `{params['variants']}` whose parity row is `ok` (an `unjudged` row only when its own file "
        "passed the floor and its `trained/` row, "
        "a stand-in of the same architecture, is `ok`), "
        f"stable cells with p99 <= {decision['p99_slo_ms']:g} ms, the highest throughput; cells within {decision['tie_pct']:g} % "
        "of it (the benchmark's stability bound) are a tie, won by the simpler deployment: in-process over served, fewer clients, "
        "smaller batch."
        + (f" Stricter floors: top-1 agreement >= {params['min_top1_agreement']}." if params.get("min_top1_agreement") is not None else "")
        + (f" Cosine >= {params['min_cosine']}." if params.get("min_cosine") is not None else "")
        + (f" Artifacts <= {params['max_model_mb']} MB." if params.get("max_model_mb") is not None else "")
    )
    if decision["unstable"]:
        lines += ["", f"Met the SLO but unstable (reported, not chosen): {', '.join(decision['unstable'])}."]
    if decision["excluded"]:
        lines += ["", "Not eligible:", ""] + [f"- `{name}`: {why}" for name, why in decision["excluded"].items()]
    if chart:
        lines += ["", f"![p99 latency vs throughput]({chart})"]
    return "\n".join(lines) + "\n"
