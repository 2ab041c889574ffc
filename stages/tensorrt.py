"""Stage tensorrt: TensorRT engines for this machine's GPU, FP16 from the FP16 ONNX model and explicit INT8 from
the TensorRT-flavour QDQ model -> models/tensorrt/.

Without a GPU or TensorRT the stage still completes: each engine's record says `skipped` and why. An engine
TensorRT cannot build is recorded as `failed` with the reason, and the other is still built.
"""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.params import load_params
from crossdeploy.stage import run_stage
from crossdeploy.tensorrt.engines import build_engines


def main() -> None:
    params = load_params()
    paths = params["paths"]
    Path(paths["tensorrt_timing"]).mkdir(parents=True, exist_ok=True)  # a persistent output, even when empty
    with atomic_path(paths["tensorrt"], directory=True) as out:
        records = build_engines(paths, params["tensorrt"], out)
    for variant, record in records.items():
        print(f"tensorrt: {variant}: {record['status']}{': ' + record['reason'] if record['status'] != 'ok' else ''}")


if __name__ == "__main__":
    run_stage(main)
