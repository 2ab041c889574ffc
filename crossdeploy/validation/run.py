"""Run every variant on the evaluation set and judge it against the PyTorch FP32 reference."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from crossdeploy.data.datasets import ImageSet
from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import trained_paths
from crossdeploy.model.card import ModelCard
from crossdeploy.onnx.graph import size_mb
from crossdeploy.runtimes.base import ThreadSettings, error_text, unavailable_reason
from crossdeploy.serving.shared_servers import SharedServers
from crossdeploy.validation.parity import Floor, Thresholds, compare_logits
from crossdeploy.variants import REFERENCE, Variant

log = logging.getLogger(__name__)


def run_variant(variant: Variant, images: ImageSet, batch_size: int, threads: ThreadSettings) -> np.ndarray:
    with variant.runner(threads) as runner:
        return runner.infer_all(runner.inputs(images), batch_size)


class GarbageBetweenRunners:
    """Frees what each runner left in reference cycles before the next one loads its model.

    With TensorFlow and PyTorch imported, a full collection walks over half a million objects: half a
    second after every row, ten seconds of validate. What survives a collection here is mostly the
    frameworks' modules, imported once and kept, so it is frozen (gc.freeze) and the next collection
    walks only the objects made since. The scope unfreezes them at its end, so nothing stays exempt
    from collection after it; a caller that froze objects itself keeps its freeze, and every collection.
    """

    def __enter__(self) -> GarbageBetweenRunners:
        self._freezes = gc.get_freeze_count() == 0
        return self

    def release(self) -> None:
        gc.collect()
        if self._freezes:
            gc.freeze()

    def __exit__(self, *exc_info: object) -> None:
        if self._freezes:
            gc.unfreeze()


#: why a validate.thresholds entry gives no verdict on random weights, by its key
UNJUDGED_ON_RANDOM_WEIGHTS = {
    "int8": "random weights: INT8 noise is as large as their input-dependent signal, so no verdict beyond the floor "
    "(its outputs follow the input); the trained/ rows, a stand-in of the same architecture, judge the INT8 conversion",
    "encoded": "random weights amplify the grey level the serving graph's resize may round unlike PIL's into logit "
    "noise, so no verdict beyond the floor; the trained/ rows, a stand-in of the same architecture, judge the bytes path",
    "bf16": "random weights amplify bf16's 8-bit mantissa into noise as large as INT8's, so no verdict beyond the floor "
    "(its outputs follow the input); the trained/ rows, a stand-in of the same architecture, judge the bf16 arithmetic",
}


def validate_variants(
    variants: list[Variant],
    evaluation: ImageSet,
    thresholds: dict[str, Thresholds],
    *,
    batch_size: int,
    threads: ThreadSettings,
    judge_agreement: bool = True,
    unjudged: dict[str, str] | None = None,
    floor: Floor = Floor(),
) -> dict[str, dict[str, Any]]:
    """Return the parity table, one row per variant, with status ok, failed, skipped or unjudged.

    Skipped means an optional runtime or the device is missing here (runtimes.base.unavailable_reason);
    a variant that raises anything else is failed, with the error as its reason, and so is one whose
    converter could not build it (Variant.build_failure), with the converter's reason.

    judge_agreement=False (random weights) reports top-1/top-5 but judges on cosine and error only:
    a random network's top logits are near-ties that any rounding flips. `unjudged` maps thresholds keys
    to the reason their variants get figures but no verdict (random weights: INT8 noise is as large as
    the input-dependent signal, so a correct and a damaged INT8 model score alike; a trained model
    judges them). Before any threshold, every variant meets the `floor` whatever its weights: finite logits
    that depend on the input (non-finite, zero, constant or input-blind logits are failed, never unjudged);
    a row that met it says `floor: passed`.
    """
    labels = evaluation.labels if evaluation.has_labels else None
    by_name = {v.name: v for v in variants}

    def measured(variant: Variant, garbage: GarbageBetweenRunners | None) -> tuple[dict[str, Any], np.ndarray | None]:
        """The row's facts and the variant's logits; no logits where the row is already decided (not built,
        skipped, failed to run)."""
        row: dict[str, Any] = {"status": "ok", "reason": "", "precision": variant.precision}
        unbuilt = variant.build_failure()
        if unbuilt:  # a converter could not handle the model: failed, and every other variant still runs
            return {**row, "status": "failed", "reason": unbuilt}, None
        missing = variant.missing_reason() or variant.absent_reason()
        if missing:
            return {**row, "status": "skipped", "reason": missing}, None
        if variant.artifact.exists():
            row["size_mb"] = size_mb(variant.artifact)
        if variant.name == REFERENCE:
            row["reason"] = "reference: every other variant is compared with it"
            # With random weights a network often predicts one class for everything, which makes
            # top-1 agreement trivially perfect; this number tells the reader whether it is.
            row["distinct_top1_classes"] = int(len(np.unique(reference.argmax(1))))
            return row, reference
        log.info("validating %s", variant.name)
        try:
            return row, run_variant(variant, evaluation, batch_size, threads)
        except Exception as exc:
            reason = unavailable_reason(variant.name, exc)
            if reason is None:
                # a broken install or a bug: one failed row (the stage fails on it), and the rest still run
                log.exception("%s could not run", variant.name)
                return {**row, "status": "failed", "reason": error_text(exc)}, None
            return {**row, "status": "skipped", "reason": reason}, None
        finally:
            if garbage is not None:
                garbage.release()

    def judged(variant: Variant, row: dict[str, Any], logits: np.ndarray | None) -> dict[str, Any]:
        if logits is None:
            return row
        row.update(compare_logits(reference, logits, labels))
        if variant.name == REFERENCE:
            return row
        # the floor first, whatever the weights: a variant that ignores its input is failed, never unjudged
        below = floor.misses(row)
        if below:
            return {**row, "status": "failed", "reason": "; ".join(below), "floor": "failed"}
        row["floor"] = "passed"
        missed = thresholds[variant.thresholds].misses(row, judge_agreement)
        if variant.thresholds in (unjudged or {}):
            row.update(status="unjudged", reason=(unjudged or {})[variant.thresholds])
        elif missed:
            row.update(status="failed", reason="; ".join(missed))
        return row

    # Two lanes. The served rows run in a thread of their own beside the in-process ones: their server's
    # start (TensorFlow's import, the model's load) and its JSON parsing keep one core busy at most, so
    # alone they left the other idle (validate used 1.6 of 2 cores); beside the in-process rows they fill
    # it. The logits are the same either way: every runner computes the same batches. A model's served
    # rows run one after another on one server, as a deployment serves them (SharedServers), and the lane
    # stops it when its last row is done. Only the in-process lane collects garbage (GarbageBetweenRunners):
    # what the served lane makes is mostly bytes and arrays, and a collection between its rows would pause
    # the other lane's Python for nothing.
    served = [v for v in variants if v.framework == "served"]
    stop = threading.Event()
    outcomes: dict[str, tuple[dict[str, Any], np.ndarray | None]] = {}

    def served_lane(servers: SharedServers) -> None:
        try:
            for variant in served:
                if stop.is_set():
                    return
                outcomes[variant.name] = measured(variant, None)
        finally:
            servers.close_idle()  # never idle beside the in-process rows still to run

    with SharedServers() as servers, GarbageBetweenRunners() as garbage, ThreadPoolExecutor(1, "served-rows") as lane:
        pending = lane.submit(served_lane, servers) if served else None
        try:
            reference = run_variant(by_name[REFERENCE], evaluation, batch_size, threads)
            for variant in variants:
                if variant.framework != "served":
                    outcomes[variant.name] = measured(variant, garbage)
            if pending is not None:
                pending.result()
        except BaseException:
            # the reference failed, the lane raised, or the run was interrupted (also while waiting for the
            # lane): the lane ends after its current row, and its own error, if it has one, is logged
            stop.set()
            if pending is not None:
                wait([pending])
                if pending.exception() is not None and pending.exception() is not sys.exc_info()[1]:
                    log.error("the served rows' lane also failed", exc_info=pending.exception())
            raise
    return {v.name: judged(v, *outcomes[v.name]) for v in variants}


def judging_rules(cfg: dict[str, Any], thresholds: dict[str, Thresholds]) -> dict[str, Any]:
    """validate_variants' judging arguments for a model with random weights, from the validate params:
    its own bounds where random networks amplify rounding, and the thresholds entries given no verdict."""
    random = cfg["random_weights"]
    return {
        "thresholds": {**thresholds, **{key: Thresholds(**values) for key, values in random["thresholds"].items()}},
        "judge_agreement": bool(cfg["judge_agreement_with_random_weights"]),
        "unjudged": {key: UNJUDGED_ON_RANDOM_WEIGHTS[key] for key in _unjudged_keys(random["unjudged"])},
    }


def _unjudged_keys(value: Any) -> list[str]:
    keys = list(value or [])
    unknown = [k for k in keys if k not in UNJUDGED_ON_RANDOM_WEIGHTS]
    if unknown:
        raise CrossdeployError(
            f"validate.random_weights.unjudged names {', '.join(map(str, unknown))}; it takes {', '.join(UNJUDGED_ON_RANDOM_WEIGHTS)}."
        )
    return keys


def required_variants(value: Any, known: list[str]) -> list[str]:
    """`validate.require` as a list of variant names; a name that is no variant is an error."""
    names = [] if value is None else [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CrossdeployError(f"validate.require names unknown variants {', '.join(unknown)}; choose from {', '.join(known)}.")
    return names


def unmet_requirements(results: dict[str, dict[str, Any]], required: list[str]) -> list[str]:
    """One sentence per required variant that was skipped: the target says it must run here."""
    return [
        f"{name} is required on this target (validate.require) but was skipped: {results[name]['reason']}"
        for name in required
        if results[name]["status"] == "skipped"
    ]


def describe_reference(rows: dict[str, dict[str, Any]], card: ModelCard, stand_in: bool = False) -> None:
    """Write on the reference row which model the rows are about, so that a verdict read later (the deploy
    decision) can tell the model a file holds from the stand-in that judged its conversion."""
    rows[REFERENCE].update(model=card.name, arch=card.arch, random_weights=card.random_weights, stand_in=stand_in)


def standin_verdicts(rows: dict[str, dict[str, Any]], accuracy_min: float) -> dict[str, dict[str, Any]]:
    """The stand-in's rows, with its INT8 verdicts withdrawn where it learnt too little for them to mean anything:
    a model below `accuracy_min` (validate.standin_accuracy_min) has logits too weakly tied to its input for INT8's
    noise to be told from a defect. Its floor verdicts stand."""
    accuracy = rows[REFERENCE].get("accuracy_top1")
    if accuracy is None or accuracy >= accuracy_min:
        return rows
    reason = (
        f"the stand-in reached accuracy {accuracy:.4f} < validate.standin_accuracy_min {accuracy_min} in its training "
        "budget, too little for an INT8 verdict; raise trained.epochs (or trained.input_size)"
    )
    withdrawn = {
        name: {**row, "status": "unjudged", "reason": reason}
        for name, row in rows.items()
        if row.get("precision") == "int8" and row.get("floor") == "passed"
    }
    return {**rows, **withdrawn}


def saturation_hint(rows: dict[str, dict[str, Any]], variants: list[Variant], reduce_range: bool, saturates: bool) -> None:
    """Add to each failed row of an INT8 variant ONNX Runtime runs on the CPU the likely cause when it is this
    CPU's arithmetic, not the conversion: 8-bit weights (quantize.reduce_range false) on a CPU whose 8-bit
    kernels saturate (device_info.int8_kernels_saturate)."""
    if reduce_range or not saturates:
        return
    cpu_int8 = [v.name for v in variants if v.framework == "onnxruntime" and v.precision == "int8" and not v.on_gpu]
    for row in (rows[name] for name in cpu_int8 if name in rows):
        if row["status"] == "failed" and row.get("floor") == "passed":
            row["reason"] = (row.get("reason") or "") + (
                "; this CPU has no VNNI, and ONNX Runtime's 8-bit kernels saturate on 8-bit weights: set quantize.reduce_range: true"
            )


def standin_absent_reason(params: dict[str, Any]) -> str:
    """Why the stand-in's rows have no figures: switched off, or its stage has not run."""
    if not params["trained"].get("enabled", True):
        return "trained.enabled is false: no stand-in judges the conversions (the main rows are judged on their own)"
    return f"{trained_paths(params['paths']['trained'])['evaluation']} was not built (stage trained)"
