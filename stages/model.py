"""Stage model: resolve the configured classifier into an exported program plus its model card."""

from crossdeploy.atomic import atomic_path
from crossdeploy.model.size import model_size
from crossdeploy.model.source import SourceSpec, build_source_model, export_program
from crossdeploy.params import check_input_dep, load_params
from crossdeploy.stage import run_stage, write_json


def main() -> None:
    import torch

    params = load_params()
    check_input_dep(params, "model.checkpoint", "checkpoint", "stages/model.py")
    model, card = build_source_model(SourceSpec.from_params(params["model"]))
    program = export_program(model, card.preprocessing.crop_size)
    paths = params["paths"]
    with atomic_path(paths["program"]) as tmp:
        torch.export.save(program, tmp)
    write_json(paths["model_card"], card.to_dict())
    write_json(
        paths["preprocessing"],
        {"preprocessing": card.preprocessing.to_dict(), "categories": card.categories, "num_classes": card.num_classes},
    )
    write_json(paths["model_size"], model_size(program, card.preprocessing.crop_size))  # for the cost-growth table
    print(f"model: {card.arch} ({card.source}), input {card.preprocessing.crop_size}px -> {paths['source']}")


if __name__ == "__main__":
    run_stage(main)
