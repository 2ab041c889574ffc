"""Stage data: disjoint calibration and evaluation image sets, preprocessed once for every runtime."""

from crossdeploy.atomic import atomic_path
from crossdeploy.data.datasets import DataSettings, make_image_sets
from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.params import check_input_dep, load_params
from crossdeploy.stage import read_json, run_stage


def main() -> None:
    params = load_params()
    check_input_dep(params, "data.images", "images", "stages/data.py")
    cfg, paths = params["data"], params["paths"]
    spec = read_json(paths["preprocessing"])
    settings = DataSettings(
        images=cfg.get("images"),
        calibration_size=int(cfg["calibration_size"]),
        evaluation_size=int(cfg["evaluation_size"]),
        preprocessing=Preprocessing.from_dict(spec["preprocessing"]),
        seed=int(cfg.get("seed", 0)),
        categories=tuple(spec["categories"]) if spec.get("categories") else None,
        num_classes=int(spec["num_classes"]),
    )
    calibration, evaluation = make_image_sets(settings)
    for name, image_set in (("calibration", calibration), ("evaluation", evaluation)):
        with atomic_path(paths[name]) as tmp:
            image_set.save(tmp)
    labels = "labelled" if evaluation.has_labels else "unlabelled"
    print(f"data: {len(calibration.pixels)} calibration and {len(evaluation.pixels)} {labels} evaluation images")


if __name__ == "__main__":
    run_stage(main)
