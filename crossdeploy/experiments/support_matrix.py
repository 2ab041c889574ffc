"""The architecture support matrix: the pipeline up to validate for one classifier of each torchvision
family, as queued DVC experiments, tabulated from each experiment's parity.json.

    python -m crossdeploy.experiments.support_matrix run [ARCH ...]    queue one experiment per arch, run them with one worker, tabulate
    python -m crossdeploy.experiments.support_matrix table             tabulate the experiments already run

Each experiment is `dvc exp run --queue -n matrix-<arch> -S model.arch=<arch> -S validate.strict=false validate`:
the default params otherwise, and strict off so that an experiment whose variants fail still records
its parity table (DVC keeps no results from a failed experiment). The table lands in
metrics/support_matrix.json and .md, and in docs/experiments.md between the support-matrix markers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from crossdeploy.experiments.sweep import Sweep, exp_refs, finished_at, git_show
from crossdeploy.layout import REFERENCE, TRAINED_PREFIX
from crossdeploy.params import load_params

#: one classifier per torchvision family, the smallest that represents it; the large ones last
ARCHITECTURES = (
    "resnet50",
    "squeezenet1_1",
    "shufflenet_v2_x1_0",
    "mnasnet1_0",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "regnet_y_400mf",
    "googlenet",
    "densenet121",
    "inception_v3",
    "efficientnet_v2_s",
    "convnext_tiny",
    "swin_t",
    "maxvit_t",
    "vit_b_16",
)
#: up to validate: the parity table is what it tabulates
SWEEP = Sweep(
    "matrix-",
    ARCHITECTURES,
    Path("metrics/support_matrix"),
    ("<!-- support-matrix:start -->", "<!-- support-matrix:end -->"),
    ("validate",),
)
#: table column -> the parity rows it summarises
COLUMNS = {
    "ONNX FP32": ("onnxruntime-fp32",),
    "INT8 CPU": ("onnxruntime-int8",),
    "INT8 TensorRT-flavour": ("onnxruntime-int8-trt",),
    "OpenVINO FP32": ("openvino-fp32",),
    "OpenVINO INT8": ("openvino-int8",),
    "SavedModel": ("tf-savedmodel-fp32",),
    "TFLite FP32": ("tflite-fp32",),
    "TFLite FP16": ("tflite-fp16",),
    "TFLite INT8": ("tflite-int8",),
    "served": ("kserve-rest-fp32", "kserve-rest-bytes"),
}
INT8_COLUMNS = ("INT8 CPU", "INT8 TensorRT-flavour", "TFLite INT8", "OpenVINO INT8")


def minutes_each(refs: dict[str, str]) -> dict[str, float]:
    """One worker runs the experiments one after another: each took about the time since the one before
    it finished (the first has no such mark)."""
    finished = sorted((finished_at(ref), name) for name, ref in refs.items())
    return {name: round((t - previous) / 60, 1) for (previous, _), (t, name) in zip(finished, finished[1:])}


def collect(architectures: list[str]) -> dict[str, Any]:
    parity_file = load_params()["paths"]["parity"]
    minutes = minutes_each(exp_refs(SWEEP.prefix))
    rows: dict[str, Any] = {}
    for arch, (ref, pipeline) in SWEEP.finished(architectures, parity_file, "validate").items():
        if ref is None:
            rows[arch] = {"pipeline": pipeline}
            continue
        table = json.loads(git_show(ref, parity_file))
        variants = {k: v for k, v in table.items() if not k.startswith(TRAINED_PREFIX)}
        standin = {k[len(TRAINED_PREFIX) :]: v for k, v in table.items() if k.startswith(TRAINED_PREFIX)}
        rows[arch] = {"pipeline": "ok", "minutes": minutes.get(f"{SWEEP.prefix}{arch}"), "variants": variants, "standin": standin}
    return rows


def _note(row: dict[str, Any], notes: list[str]) -> int:
    reason = re.sub(r"\s+", " ", row.get("reason", ""))
    if reason not in notes:
        notes.append(reason)
    return notes.index(reason) + 1


def _cell(rows: dict[str, Any], column: str, notes: list[str]) -> str:
    cells = []
    for variant in COLUMNS[column]:
        row = rows.get(variant, {"status": "missing", "reason": "no parity row"})
        status = row["status"]
        if status in ("ok", "unjudged"):
            text = "ok" if status == "ok" else "runs"
            if column in INT8_COLUMNS and "cosine_min" in row:
                text += f" (cos {row['cosine_min']:.2f}, top-1 {row['top1_agreement']:.0%})"
        else:
            text = f"{status} [{_note(row, notes)}]"
        cells.append(text)
    return " / ".join(cells)


def _standin_accuracy(standin: dict[str, Any], notes: list[str]) -> str:
    reference = standin.get(REFERENCE, {"status": "missing", "reason": "no stand-in rows (stage trained)"})
    if "accuracy_top1" not in reference:
        return f"{reference['status']} [{_note(reference, notes)}]"
    return f"{reference.get('arch', '?')} {reference['accuracy_top1']:.3f}"


def _standin_int8(standin: dict[str, Any], notes: list[str]) -> str:
    """Each INT8 variant's verdict on the stand-in: whether INT8 works for this family."""
    cells = []
    for column in INT8_COLUMNS:
        row = standin.get(COLUMNS[column][0], {"status": "missing", "reason": "no stand-in row"})
        if row["status"] == "ok":
            cells.append(f"ok (top-1 {row['top1_agreement']:.1%})")
        elif row["status"] == "failed" or row["status"] == "unjudged":
            cells.append(f"{row['status']} [{_note(row, notes)}]")
        else:
            cells.append(row["status"])
    return " / ".join(cells)


def markdown(matrix: dict[str, Any]) -> str:
    notes: list[str] = []
    lines = [
        f"Swept {matrix['date']} on {matrix['machine']}, one worker, default params (random weights), "
        "`validate.strict=false`; `min`: minutes per experiment up to validate. `stand-in`: the same architecture trained "
        "on scikit-learn's digits (stage trained), its accuracy and the verdict of each INT8 variant on it "
        "(" + ", ".join(INT8_COLUMNS) + "): whether INT8 works for the family.",
        "",
        "| architecture | " + " | ".join(COLUMNS) + " | stand-in | INT8 on the stand-in | min |",
        "|---|" + "---|" * (len(COLUMNS) + 3),
    ]
    for arch, result in matrix["rows"].items():
        if result["pipeline"] != "ok":
            notes.append(result["pipeline"])
            lines.append(f"| {arch} | pipeline failed [{len(notes)}] |" + " |" * (len(COLUMNS) + 2))
            continue
        cells = [_cell(result["variants"], column, notes) for column in COLUMNS]
        standin = result.get("standin", {})
        cells += [_standin_accuracy(standin, notes), _standin_int8(standin, notes)]
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {result.get('minutes') or '-'} |")
    lines += ["", *(f"{i}. {note}" for i, note in enumerate(notes, 1))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    SWEEP.main(sys.argv[1:], collect, markdown)
