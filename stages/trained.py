"""Stage trained: the stand-in, a classifier of the deployed architecture trained on scikit-learn's digits and
taken through every CPU conversion -> models/trained/. Its variants' parity rows (validate) are what judge the
INT8 and conversion paths where the main model's weights allow no verdict."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.layout import trained_paths
from crossdeploy.onnx.fp16 import Fp16Settings
from crossdeploy.onnx.quantize import QuantizeSettings
from crossdeploy.params import load_params
from crossdeploy.stage import run_stage
from crossdeploy.standin.trained import TrainingSettings, convert_every_cpu_variant, train_classifier


def main() -> None:
    params = load_params()
    options = dict(params["trained"])
    if not options.pop("enabled", True):
        with atomic_path(params["paths"]["trained"], directory=True):
            pass  # an empty folder: validate's trained/ rows say the stand-in is switched off
        print("trained: trained.enabled is false, no stand-in")
        return
    settings = TrainingSettings(**options)
    model, card, calibration, evaluation, figures = train_classifier(settings)
    with atomic_path(params["paths"]["trained"], directory=True) as root:
        convert_every_cpu_variant(
            model,
            card,
            calibration,
            evaluation,
            trained_paths(root),
            opset=int(params["export"]["opset"]),
            fp16=Fp16Settings(**params["fp16"]),
            quantize=QuantizeSettings(**params["quantize"]),
            package=params["package"],
            version=int(params["to_tensorflow"]["version"]),
        )
    print(
        f"trained: {settings.arch} at {settings.size} px on {figures['training_images']} digit images, "
        f"evaluation accuracy {figures['evaluation_accuracy']:.4f} -> {Path(params['paths']['trained'])}"
    )


if __name__ == "__main__":
    run_stage(main)
