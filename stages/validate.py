"""Stage validate: every variant against PyTorch FP32 on the evaluation set -> metrics/parity.json."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.data.datasets import ImageSet
from crossdeploy.device_info import int8_kernels_saturate
from crossdeploy.errors import ParityError
from crossdeploy.layout import TRAINED_PREFIX, trained_paths
from crossdeploy.model.card import ModelCard
from crossdeploy.params import load_params
from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.stage import read_json, run_stage, write_json
from crossdeploy.validation.parity import Floor, Thresholds
from crossdeploy.validation.report import misses_table, parity_markdown
from crossdeploy.validation.run import (
    describe_reference,
    judging_rules,
    required_variants,
    saturation_hint,
    standin_absent_reason,
    standin_verdicts,
    unmet_requirements,
    validate_variants,
)
from crossdeploy.variants import pipeline_variants, trained_variants


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["validate"]
    card = ModelCard.from_dict(read_json(paths["model_card"]))
    evaluation = ImageSet.load(Path(paths["evaluation"]))
    variants = pipeline_variants(params)
    required = required_variants(cfg.get("require"), [v.name for v in variants])
    thresholds = {precision: Thresholds(**values) for precision, values in cfg["thresholds"].items()}
    run = {"batch_size": int(cfg["batch_size"]), "threads": ThreadSettings(**cfg["threads"])}
    floor = Floor(**cfg["floor"])
    judging = judging_rules(cfg, thresholds) if card.random_weights else {"thresholds": thresholds}
    results = validate_variants(variants, evaluation, **judging, **run, floor=floor)
    judge_agreement = judging.get("judge_agreement", True)
    describe_reference(results, card)
    reduce_range, saturates = bool(params["quantize"].get("reduce_range", True)), int8_kernels_saturate()
    saturation_hint(results, variants, reduce_range, saturates)
    # the stand-in's rows: real thresholds on every figure, accuracy against its labels included
    standin = trained_paths(paths["trained"])
    standin_variants = trained_variants(params)
    if Path(standin["evaluation"]).is_file():
        trained = validate_variants(standin_variants, ImageSet.load(Path(standin["evaluation"])), thresholds, **run, floor=floor)
        describe_reference(trained, ModelCard.from_dict(read_json(standin["model_card"])), stand_in=True)
        trained = standin_verdicts(trained, float(cfg["standin_accuracy_min"]))
        saturation_hint(trained, standin_variants, reduce_range, saturates)
    else:
        trained = {v.name: {"status": "skipped", "reason": standin_absent_reason(params)} for v in standin_variants}
    results.update({TRAINED_PREFIX + name: row for name, row in trained.items()})
    write_json(paths["parity"], results)
    with atomic_path(paths["parity_report"]) as out:
        out.write_text(parity_markdown(results, card, len(evaluation.pixels), evaluation.has_labels, judge_agreement))
    print(Path(paths["parity_report"]).read_text())
    problems = []
    if any(row["status"] == "failed" for row in results.values()):
        problems.append("variants that failed or fell outside their parity thresholds (validate.thresholds):\n" + misses_table(results))
    problems += unmet_requirements(results, required)
    if problems:
        message = "\n".join(problems)
        # A required variant skipped is judged like a parity miss: validate.strict is the one switch that
        # records every verdict without failing (a dry run of a GPU target on a machine without the GPU,
        # say); a second switch for requirements alone would leave users guessing which one passed.
        if cfg.get("strict", True):
            raise ParityError(message + "\nset validate.strict: false to record them without failing.")
        print("warning: " + message)


if __name__ == "__main__":
    run_stage(main)
