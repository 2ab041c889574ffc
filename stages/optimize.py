"""Stage optimize: onnxslim + ONNX Runtime basic offline optimization; node counts go to metrics."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.onnx.optimize import optimize_onnx
from crossdeploy.params import load_params
from crossdeploy.stage import run_stage, write_json


def main() -> None:
    paths = load_params()["paths"]
    with atomic_path(paths["onnx_optimized"]) as out:
        counts = optimize_onnx(Path(paths["onnx"]), out)
    write_json(paths["optimize_metrics"], {"nodes": counts})
    print(f"optimize: nodes {counts['exported']} -> {counts['slimmed']} -> {counts['optimized']}")


if __name__ == "__main__":
    run_stage(main)
