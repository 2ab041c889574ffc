"""Stage export: the exported PyTorch program -> ONNX at export.opset with a dynamic batch axis."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.onnx.export import export_onnx
from crossdeploy.params import load_params
from crossdeploy.stage import read_json, run_stage


def main() -> None:
    params = load_params()
    paths = params["paths"]
    input_size = read_json(paths["preprocessing"])["preprocessing"]["crop_size"]
    opset = int(params["export"]["opset"])
    with atomic_path(paths["onnx"]) as out:
        export_onnx(Path(paths["program"]), out, opset=opset, input_size=input_size)
    print(f"export: opset {opset} -> {paths['onnx']}")


if __name__ == "__main__":
    run_stage(main)
