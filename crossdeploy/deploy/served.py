"""The decision measured where it will run: the bundle the deploy stage wrote, served as its README says
(`crossdeploy serve --bundle`), at the decision's batch and clients, over gRPC floats, REST image bytes and
REST floats, with the benchmark's own closed loop (its windows, stability rule and cap).

The benchmark's in-process row says what the runtime can do; a client of the served bundle also pays
for the hop and the encoding (REST floats cost an INT8 ResNet50 about three quarters of its throughput,
gRPC a tenth), so deploy.md promises these figures for a served deployment. Only the choice is measured:
one server start and three cells, not a served row per runtime in the benchmark's cold run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossdeploy.benchmark.closed_loop import WindowSettings
from crossdeploy.benchmark.isolation import ProcessEnded, run_isolated
from crossdeploy.benchmark.runner_pool import RunnerPool
from crossdeploy.benchmark.sweep import failed, sweep_variant
from crossdeploy.data.datasets import ImageSet
from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import SAVEDMODEL_VARIANT
from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.serving.shared_servers import SharedServers
from crossdeploy.variants import Variant

#: the row measured without a server, beside the served ones
IN_PROCESS = "in-process"
#: how a client calls the served bundle: (protocol, image bytes rather than floats), fastest first
PROTOCOLS = {"grpc-floats": ("grpc", False), "rest-bytes": ("rest", True), "rest-floats": ("rest", False)}
#: the words deploy.md uses for each
PROTOCOL_WORDS = {IN_PROCESS: "in process", "grpc-floats": "gRPC floats", "rest-bytes": "REST image bytes", "rest-floats": "REST floats"}


def skip(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def served_deployment(
    bundle: Path,
    decision: dict[str, Any],
    table: dict[str, Variant],
    params: dict[str, Any],
    images: ImageSet,
    settings: WindowSettings,
    command: str,
    params_file: str | Path = "params.yaml",
) -> dict[str, Any] | None:
    """deploy.json's `served` for the bundle just written: measured (served_summary), or skipped with the
    reason (the choice runs on TF Serving, Triton or a GPU; deploy.served_check is false); None with no choice."""
    from crossdeploy.deploy.serve_target import bundle_target

    choice = decision["choice"]
    if choice is None:
        return None
    enabled = params["deploy"].get("served_check", True)
    if not isinstance(enabled, bool):
        raise CrossdeployError(f"deploy.served_check must be true or false, got {enabled!r}.")
    if not enabled:
        return skip("deploy.served_check is false")
    variant = table[choice["variant"]]
    if variant.framework == "served" and variant.options.get("engine") == "tfserving":
        return skip("TF Serving serves this bundle, and its benchmark row is already a served measurement")
    try:
        bundle_target(bundle, params)  # what `crossdeploy serve --bundle` would refuse, in its words
    except CrossdeployError as exc:
        return skip(str(exc))
    cell = (int(choice["batch"]), int(choice["concurrency"]))
    if variant.framework == "served":  # an embedded-server row: what it serves, in process, is the SavedModel
        variant = table[SAVEDMODEL_VARIANT]
    rows = measure_served(variant, ("--bundle", str(Path(bundle).resolve())), cell, params["model"]["name"], images, settings, params_file)
    return served_summary(rows, choice, float(decision["p99_slo_ms"]), command)


def measure_served(
    variant: Variant,
    serve_args: tuple[str, ...],
    cell: tuple[int, int],
    model: str,
    images: ImageSet,
    settings: WindowSettings,
    params_file: str | Path = "params.yaml",
) -> dict[str, Any]:
    """The variant's cell (batch, clients) in process, then served by `crossdeploy serve *serve_args` over each
    protocol (one server for the three), all in this run on these images, so their ratios compare like with
    like; a row that fails says why and the others go on."""
    batch, clients = cell
    rows: dict[str, Any] = {}
    # in a process of its own, as the benchmark measures: the runtime's memory goes with it, a native crash
    # ends only that process, and a framework imported there (TensorFlow) cannot clash with one imported here
    try:
        run_isolated(_in_process_cell, (variant, images, batch, clients, settings), lambda row: rows.__setitem__(IN_PROCESS, row))
    except ProcessEnded as exc:
        rows[IN_PROCESS] = {"status": "failed", "reason": f"the process measuring {variant.name} in process failed: {exc}"}
    with SharedServers():  # the three protocols call one server, as a deployment's clients would
        for name, (protocol, encoded) in PROTOCOLS.items():
            served = Variant(
                f"{variant.name} served ({name})",
                variant.precision,
                variant.thresholds,
                "served",
                variant.artifact,
                {
                    "engine": "kserve",
                    "protocol": protocol,
                    "encoded": encoded,
                    "repository": None,
                    "model": model,
                    "serve_args": serve_args,
                    "params_file": params_file,
                },
            )
            rows[name] = _one_cell(served, images, batch, clients, settings)
    return rows


def _in_process_cell(variant: Variant, images: ImageSet, batch: int, clients: int, settings: WindowSettings, report) -> None:
    report(_one_cell(variant, images, batch, clients, settings))


def _one_cell(variant: Variant, images: ImageSet, batch: int, clients: int, settings: WindowSettings) -> dict[str, Any]:
    pool = RunnerPool(variant, ThreadSettings())
    try:
        return sweep_variant(pool, images, [batch], [clients], settings)[f"b{batch}_c{clients}"]
    except Exception as exc:  # a server that would not start: the row says why
        return failed(exc)
    finally:
        pool.close()


def served_summary(rows: dict[str, Any], choice: dict[str, Any], slo_ms: float, command: str) -> dict[str, Any]:
    """deploy.json's `served`: the command, the cell, each protocol's row with its share of the in-process
    figure measured in the same run and its SLO verdict, and `met` (some protocol measured within the SLO)."""
    local = rows.get(IN_PROCESS, {})
    base = local.get("throughput_ips") if local.get("status") == "ok" else None
    judged = {}
    for name, row in rows.items():
        if row.get("status") == "ok":
            row = {**row, "meets_slo": row["p99_ms"] <= slo_ms}
            if name != IN_PROCESS and base:
                row["of_in_process_pct"] = round(100 * row["throughput_ips"] / base, 1)
        judged[name] = row
    met = any(r.get("status") == "ok" and r["meets_slo"] for n, r in judged.items() if n != IN_PROCESS)
    return {
        "status": "measured",
        "command": command,
        "batch": choice["batch"],
        "concurrency": choice["concurrency"],
        "met": met,
        "protocols": judged,
    }


def check_served_met(served: dict[str, Any], slo_ms: float) -> None:
    """deploy.strict: a choice that meets the SLO in process but on no protocol once served is a failed stage."""
    if served.get("status") == "measured" and not served["met"]:
        from crossdeploy.deploy.decision import SloNotMet

        figures = "; ".join(
            f"{PROTOCOL_WORDS[n]} p99 {r['p99_ms']:.4g} ms" if r.get("status") == "ok" else f"{PROTOCOL_WORDS[n]} {r['status']}"
            for n, r in served["protocols"].items()
            if n != IN_PROCESS
        )
        raise SloNotMet(
            f"the choice meets p99 <= {slo_ms:g} ms in process but not served by `{served['command']}` ({figures}): "
            "serve fewer clients or a smaller batch, or raise deploy.p99_ms."
        )
