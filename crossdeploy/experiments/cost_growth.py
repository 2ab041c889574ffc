"""The cost-growth experiment: the whole pipeline, default params, for ResNet18, ResNet50 and ResNet101 as
queued DVC experiments, and per stage its wall time and peak RSS (metrics/resources/<stage>.json, written by
run_stage) against the model's parameters and FLOPs (metrics/model_size.json, the model stage's), so `dvc
exp show` lists them side by side and the table says which stage grows faster than the model.

    python -m crossdeploy.experiments.cost_growth run [--force] [ARCH ...]
        queue one experiment per arch, run them with one worker, tabulate
    python -m crossdeploy.experiments.cost_growth table [ARCH ...]
        tabulate the experiments already run

Each experiment is `dvc exp run --queue -n growth-<arch> -S model.arch=<arch> -S validate.strict=false`:
strict off so that a variant whose parity fails on another architecture still lets the benchmark run (DVC
keeps nothing of a failed experiment). Run it on a quiet machine: the figures are wall times. Nothing is
measured twice: a stage DVC finds up to date (every stage but validate for the architecture already in
dvc.lock) keeps the record committed with it, and one whose inputs DVC has run before (data and trained,
whose inputs do not depend on the architecture, or a whole architecture on a second sweep) is restored
from DVC's run cache with the record of the run that made it. `run --force` re-runs every stage of every
experiment (`dvc exp run -f`) to measure them all afresh. The table lands in metrics/cost_growth.json and
.md, and in docs/experiments.md between the cost-growth markers.

Growth is the slope of log(cost) against log(size) fitted over the architectures: 1 is linear, and a stage
above LINEAR_LIMIT is named as worse than linear. Wall time is set against FLOPs (the arithmetic the
converters, the validation and the benchmark run through) and peak RSS against parameters (the weights
every artifact holds); both also carry a fixed part (the interpreter, TensorFlow's import, the images),
which keeps small models' slopes below 1.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from crossdeploy.experiments.sweep import Sweep, git_show
from crossdeploy.params import load_params

SWEEP = Sweep(
    "growth-",
    ("resnet18", "resnet50", "resnet101"),
    Path("metrics/cost_growth"),
    ("<!-- cost-growth:start -->", "<!-- cost-growth:end -->"),
)
#: a slope this far above 1 is more than the scatter of three wall times on one machine: worse than linear
LINEAR_LIMIT = 1.15


def collect(architectures: list[str]) -> dict[str, Any]:
    """arch -> {parameters, gflops_per_image, stages: {stage: resources}} from each experiment's Git ref."""
    paths = load_params()["paths"]
    rows: dict[str, Any] = {}
    for arch, (ref, pipeline) in SWEEP.finished(architectures, paths["model_size"], "the model stage").items():
        if ref is None:
            rows[arch] = {"pipeline": pipeline}
            continue
        resources = {stage: git_show(ref, path) for stage, path in paths["resources"].items()}
        rows[arch] = {
            "pipeline": "ok",
            **json.loads(git_show(ref, paths["model_size"])),
            "stages": {stage: json.loads(text) for stage, text in resources.items() if text is not None},
        }
    return rows


def growth(sizes: list[float], costs: list[float]) -> float | None:
    """Least-squares slope of log(cost) on log(size): the exponent k in cost ~ size^k; None under two
    distinct sizes or a cost that is not positive."""
    points = [(math.log(s), math.log(c)) for s, c in zip(sizes, costs) if s > 0 and c > 0]
    if len(points) < 2 or len({x for x, _ in points}) < 2 or len(points) < len(sizes):
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def table(rows: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage: each architecture's wall time and peak RSS, and the growth of each against FLOPs
    and parameters, with `worse_than_linear` naming what grows faster than the model."""
    measured = {arch: row for arch, row in rows.items() if row.get("pipeline") == "ok"}
    stages = list(dict.fromkeys(stage for row in measured.values() for stage in row["stages"]))
    out = []
    for stage in stages:
        have = [(arch, row) for arch, row in measured.items() if stage in row["stages"]]
        wall = [row["stages"][stage]["wall_s"] for _, row in have]
        rss = [row["stages"][stage]["peak_rss_mb"] for _, row in have]
        time_growth = growth([row["gflops_per_image"] for _, row in have], wall)
        rss_growth = growth([row["parameters"] for _, row in have], rss)
        worse = [
            what
            for what, k in (("wall time vs FLOPs", time_growth), ("peak RSS vs parameters", rss_growth))
            if k is not None and k > LINEAR_LIMIT
        ]
        out.append(
            {
                "stage": stage,
                "wall_s": {arch: row["stages"][stage]["wall_s"] for arch, row in have},
                "peak_rss_mb": {arch: row["stages"][stage]["peak_rss_mb"] for arch, row in have},
                "time_growth": None if time_growth is None else round(time_growth, 2),
                "rss_growth": None if rss_growth is None else round(rss_growth, 2),
                "worse_than_linear": worse,
            }
        )
    return out


def _k(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    archs = [arch for arch, row in rows.items() if row.get("pipeline") == "ok"]
    sizes = ", ".join(f"{a} {rows[a]['parameters'] / 1e6:.1f} M parameters, {rows[a]['gflops_per_image']:.1f} GFLOPs/image" for a in archs)
    lines = [
        f"Measured {result['date']} on {result['machine']}, one worker, default params (random weights), "
        f"`validate.strict=false`; {sizes}. Each cell: wall time (s) / peak RSS of the stage with every "
        "process it started (GB). Growth: the log-log slope against GFLOPs (time) and parameters (RSS); 1 is linear.",
        "",
        "| stage | " + " | ".join(archs) + " | time growth | RSS growth | worse than linear |",
        "|---|" + "---|" * (len(archs) + 3),
    ]
    for row in table(rows):
        cells = [f"{row['wall_s'][a]:.0f} s / {row['peak_rss_mb'][a] / 1024:.1f} GB" if a in row["wall_s"] else "-" for a in archs]
        lines.append(
            f"| {row['stage']} | "
            + " | ".join(cells)
            + f" | {_k(row['time_growth'])} | {_k(row['rss_growth'])} | {', '.join(row['worse_than_linear']) or 'no'} |"
        )
    failed = [f"- {arch}: {row['pipeline']}" for arch, row in rows.items() if row.get("pipeline") != "ok"]
    if failed:
        lines += ["", "Not measured:", *failed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    SWEEP.main(sys.argv[1:], collect, markdown, lambda result: {"table": table(result["rows"])})
