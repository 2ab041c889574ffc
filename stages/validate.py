"""Stage validate: every variant against PyTorch FP32 on the evaluation set -> metrics/parity.json."""

from pathlib import Path

from crossdeploy.atomic import atomic_path
from crossdeploy.datasets import ImageSet
from crossdeploy.errors import ParityError
from crossdeploy.params import load_params
from crossdeploy.parity import Thresholds
from crossdeploy.parity_report import misses_table, parity_markdown
from crossdeploy.runtimes.base import ThreadSettings
from crossdeploy.source_model import ModelCard
from crossdeploy.stage import read_json, run_stage, write_json
from crossdeploy.validation import validate_variants
from crossdeploy.variants import pipeline_variants


def main() -> None:
    params = load_params()
    paths, cfg = params["paths"], params["validate"]
    card = ModelCard.from_dict(read_json(Path(paths["source"]) / "model.json"))
    evaluation = ImageSet.load(Path(paths["data"]) / "evaluation.npz")
    judge_agreement = not card.random_weights or bool(cfg["judge_agreement_with_random_weights"])
    results = validate_variants(
        pipeline_variants(params),
        evaluation,
        {precision: Thresholds(**values) for precision, values in cfg["thresholds"].items()},
        batch_size=int(cfg["batch_size"]),
        threads=ThreadSettings(**cfg["threads"]),
        judge_agreement=judge_agreement,
    )
    metrics = Path(paths["metrics"])
    write_json(metrics / "parity.json", results)
    with atomic_path(metrics / "parity.md") as out:
        out.write_text(parity_markdown(results, card, len(evaluation.pixels), evaluation.has_labels, judge_agreement))
    print((metrics / "parity.md").read_text())
    if any(row["status"] == "failed" for row in results.values()):
        message = "variants outside their parity thresholds (validate.thresholds):\n" + misses_table(results)
        if cfg.get("strict", True):
            raise ParityError(message + "\nset validate.strict: false to record them without failing.")
        print("warning: " + message)


if __name__ == "__main__":
    run_stage(main)
