"""Stage tensorrt: FP16 and explicit-INT8 TensorRT engines for this machine's GPU -> models/tensorrt/.

Without a GPU or TensorRT the stage still completes: each engine's record says `skipped` and why.
"""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.params import load_params
from crossdeploy.stage import run_stage, write_json
from crossdeploy.tensorrt.engine_key import BatchProfile, BuildSettings
from crossdeploy.tensorrt.engines import build_record, skipped_record
from crossdeploy.layout import engine_record, tensorrt_engines


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["tensorrt"]
    Path(paths["tensorrt_timing"]).mkdir(parents=True, exist_ok=True)  # a persistent output, even when empty
    with atomic_path(paths["tensorrt"], directory=True) as out:
        for variant, precision, onnx, plan in tensorrt_engines(paths, out):
            settings = BuildSettings(
                precision=precision,
                batch=BatchProfile(**cfg["batch"]),
                workspace_mib=int(cfg["workspace_mib"]),
                optimization_level=int(cfg["optimization_level"]),
            )
            if cfg["enabled"]:
                record = build_record(plan, onnx, settings, Path(paths["tensorrt_timing"]))
            else:
                record = skipped_record(onnx, settings, "tensorrt.enabled is false")
            write_json(engine_record(plan), record)
            print(f"tensorrt: {variant}: {record['status']}{': ' + record['reason'] if record['status'] != 'ok' else ''}")


if __name__ == "__main__":
    run_stage(main)
