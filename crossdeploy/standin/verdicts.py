"""Whether the stand-in's INT8 verdicts hold when it is retrained: one stand-in per seed and thread count (a
user's machine trains its own), each calibration method's ONNX Runtime INT8 flavours judged by validate's own
floor and thresholds (composed from conf/), beside planted defects that must fail on every stand-in.

    python -m crossdeploy.standin.verdicts [--arch resnet50] [--seeds 0 1 2 3 4] [--threads 2 1] [--methods minmax entropy percentile]
                                           [--output metrics/standin_verdicts.json]

Prints one JSON line per stand-in as it is judged, then the margins: the worst figure of the variants that
passed and the best of the defects, against each bound, and any verdict that flipped, and a markdown table
of each variant's verdicts and its figures nearest the bounds. Writes metrics/standin_verdicts.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from crossdeploy.compose import compose
from crossdeploy.validation.parity import COSINE_LOW, Floor, Thresholds, compare_logits

OUTPUT = Path("metrics/standin_verdicts.json")
#: the bounds whose margins are reported: (figure, threshold field, higher is better)
BOUNDS = (
    ("noise_rel", "noise_rel_max", False),
    (COSINE_LOW, COSINE_LOW, True),
    ("top1_agreement", "top1_agreement", True),
    ("accuracy_ratio", "accuracy_ratio_min", True),
)


def _onnx_logits(path: Path, images: np.ndarray, threads: int) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {session.get_inputs()[0].name: images[i : i + 50]})[0] for i in range(0, len(images), 50)])


def damaged_logits(model, images: np.ndarray, fraction: float = 0.25, seed: int = 0) -> np.ndarray:
    """The logits of a copy of `model` whose every convolution weight carries noise of `fraction` of its mean magnitude."""
    import torch

    damaged = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in damaged.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight += fraction * module.weight.abs().mean() * torch.randn(module.weight.shape, generator=generator)
        return damaged(torch.from_numpy(images)).numpy()


def _defects(model, reference: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    """Logits of the planted defects: input-blind, constant, 20 % noise, shuffled, damaged weights (run for real)."""
    spread = float(np.sqrt(np.mean((reference - reference.mean(0)) ** 2)))
    return {
        "input-blind": np.repeat(reference.mean(0, keepdims=True), len(reference), axis=0),
        "constant": np.repeat(reference[:1], len(reference), axis=0),
        "noise-20pct": reference + np.random.default_rng(0).normal(0, 0.2 * spread, reference.shape),
        "shuffled": np.roll(reference, 1, axis=0),
        "damaged-weights": damaged_logits(model, images),
    }


def judge_standin(arch: str, seed: int, threads: int, methods: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """Train one stand-in with the pipeline's settings (its seed and thread count changed), and judge each method's
    INT8 flavours and the planted defects with validate's floor and INT8 thresholds."""
    import torch

    from crossdeploy.model.source import export_program
    from crossdeploy.onnx.export import export_onnx
    from crossdeploy.onnx.optimize import optimize_onnx
    from crossdeploy.onnx.quantize import QuantizeSettings, quantize_flavours
    from crossdeploy.standin.trained import TrainingSettings, train_classifier

    torch.set_num_threads(threads)
    cfg = params["validate"]
    floor, int8 = Floor(**cfg["floor"]), Thresholds(**cfg["thresholds"]["int8"])
    options = {k: v for k, v in params["trained"].items() if k != "enabled"}
    settings = TrainingSettings(**{**options, "arch": arch, "name": f"digits-{arch}", "seed": seed})
    model, _, calibration, evaluation, figures = train_classifier(settings)
    images = evaluation.tensors("NCHW")
    with torch.no_grad():
        reference = model(torch.from_numpy(images)).numpy()
    candidates: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.export.save(export_program(model, settings.size), folder / "model.pt2")
        export_onnx(folder / "model.pt2", folder / "model.onnx", opset=int(params["export"]["opset"]), input_size=settings.size)
        optimize_onnx(folder / "model.onnx", folder / "model.optimized.onnx")
        for method in methods:
            quantize = replace(QuantizeSettings(**params["quantize"]), calibration_method=method)
            outputs = {"cpu": folder / "cpu.onnx", "tensorrt": folder / "tensorrt.onnx"}
            quantize_flavours(folder / "model.optimized.onnx", outputs, calibration.tensors("NCHW"), quantize)
            for flavour, path in outputs.items():
                candidates[f"{method}/{flavour}"] = _onnx_logits(path, images, threads)
    candidates |= {f"defect/{name}": logits for name, logits in _defects(model, reference, images).items()}
    verdicts = {}
    for name, logits in candidates.items():
        metrics = compare_logits(reference, logits.astype(np.float32), evaluation.labels)
        missed = floor.misses(metrics) or int8.misses(metrics)
        verdicts[name] = {"verdict": "failed" if missed else "ok", "missed": missed, **{k: metrics.get(k) for k, _, _ in BOUNDS}}
    return {"arch": arch, "seed": seed, "threads": threads, "accuracy": figures["evaluation_accuracy"], "verdicts": verdicts}


def margins(runs: list[dict[str, Any]], int8: Thresholds) -> dict[str, Any]:
    """Per bound: the worst figure among the correct variants that passed, and the best among the defects."""
    out = {}
    for figure, bound, higher in BOUNDS:
        limit = getattr(int8, bound)
        passed = [
            v[figure] for run in runs for name, v in run["verdicts"].items() if not name.startswith("defect/") and v["verdict"] == "ok"
        ]
        defects = [
            v[figure] for run in runs for name, v in run["verdicts"].items() if name.startswith("defect/") and v.get(figure) is not None
        ]
        worst, best = (min, max) if higher else (max, min)
        out[figure] = {
            "bound": limit,
            "worst_passing": worst(passed) if passed else None,
            "best_defect": best(defects) if defects else None,
        }
    return out


def flips(runs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each variant's set of verdicts over the stand-ins: more than one is a flip."""
    seen: dict[str, set[str]] = {}
    for run in runs:
        for name, verdict in run["verdicts"].items():
            seen.setdefault(name, set()).add(verdict["verdict"])
    return seen


def markdown(runs: list[dict[str, Any]], int8: Thresholds) -> str:
    """One row per variant: its verdicts over the stand-ins, and per bound the figure nearest to it: the worst of
    a variant that always passed (or flipped), the best of one that always failed (the margin either way)."""
    names = list(dict.fromkeys(name for run in runs for name in run["verdicts"]))
    header = "| variant | verdicts | " + " | ".join(figure for figure, _, _ in BOUNDS) + " |"
    bounds = "| bound | | " + " | ".join(f"{'>=' if higher else '<='} {getattr(int8, bound)}" for _, bound, higher in BOUNDS) + " |"
    lines = [header, "|" + "---|" * (len(BOUNDS) + 2), bounds]
    for name in names:
        rows = [run["verdicts"][name] for run in runs if name in run["verdicts"]]
        verdicts = sorted({row["verdict"] for row in rows})
        passing = verdicts != ["failed"]  # a flip is shown at its worst
        cells = []
        for figure, _, higher in BOUNDS:
            values = [row[figure] for row in rows if row.get(figure) is not None]
            nearest = (min if higher == passing else max)(values) if values else None
            cells.append("" if nearest is None else f"{nearest:.3f}")
        counted = " / ".join(f"{verdict} x{sum(row['verdict'] == verdict for row in rows)}" for verdict in verdicts)
        lines.append(f"| {name} | {counted} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="default: trained.arch of the composed params")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--methods", nargs="+", default=["minmax", "entropy", "percentile"])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    params = compose([])
    arch = args.arch or params["trained"]["arch"]
    runs = []
    for threads in args.threads:
        for seed in args.seeds:
            run = judge_standin(arch, seed, threads, args.methods, params)
            runs.append(run)
            # each stand-in's full record as it is judged: a sweep of an hour that is stopped keeps what it did
            print(json.dumps(run), flush=True)
    int8 = Thresholds(**params["validate"]["thresholds"]["int8"])
    result = {"runs": runs, "margins": margins(runs, int8), "flips": {k: sorted(v) for k, v in flips(runs).items() if len(v) > 1}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"margins": result["margins"], "flips": result["flips"]}, indent=2))
    print(markdown(runs, int8))


if __name__ == "__main__":
    main()
