"""The human-readable parity report: a Markdown table and, above it, what the weights mean."""

from __future__ import annotations

from typing import Any

from crossdeploy.layout import REFERENCE, TRAINED_PREFIX
from crossdeploy.model.card import RANDOM_WEIGHTS_NOTE, SWITCH_TO_REAL_WEIGHTS, ModelCard

COLUMNS = (
    ("status", "status", "{}"),
    ("precision", "precision", "{}"),
    ("size_mb", "size MB", "{:.1f}"),
    ("top1_agreement", "top-1 agree", "{:.4f}"),
    ("top5_overlap", "top-5 overlap", "{:.4f}"),
    ("max_abs_err", "max abs err", "{:.2e}"),
    ("mean_abs_err", "mean abs err", "{:.2e}"),
    ("cosine_min", "min cosine", "{:.6f}"),
    ("cosine_p1", "cosine p1", "{:.6f}"),
    ("noise_rel", "noise / spread", "{:.4f}"),
    ("input_spread", "spread vs ref", "{:.3f}"),
    ("accuracy_top1", "acc@1", "{:.4f}"),
    ("accuracy_top5", "acc@5", "{:.4f}"),
    ("accuracy_drop", "acc lost", "{:+.4f}"),
)


def weights_statement(card: ModelCard) -> str:
    if card.random_weights:
        return f"**{card.arch} with seeded random weights — {RANDOM_WEIGHTS_NOTE}.** To measure a real model, {SWITCH_TO_REAL_WEIGHTS}."
    origin = f"torchvision weights {card.weights}" if card.weights else f"checkpoint {card.checkpoint}"
    return f"**{card.arch}, {origin}.**"


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    return "" if value is None else fmt.format(value)


def parity_markdown(results: dict[str, dict[str, Any]], card: ModelCard, images: int, labelled: bool, judge_agreement: bool = True) -> str:
    lines = [
        f"# Parity of every variant with PyTorch FP32 — {card.name}",
        "",
        weights_statement(card),
        "",
        f"Evaluation images: {images}" + ("" if labelled else " (no labels: accuracy is not computed)") + ".",
    ]
    reference = next(iter(results.values()))
    if "distinct_top1_classes" in reference:
        classes = reference["distinct_top1_classes"]
        lines.append(f"The reference predicts {classes} distinct top-1 class{'es' if classes != 1 else ''} on them.")
    if not judge_agreement:
        lines.append(
            "With random weights the top logits are near-ties that any rounding can flip, so top-1 agreement and "
            "top-5 overlap are reported but not judged; variants pass or fail on minimum cosine and on the largest "
            "logit error relative to the logit scale (validate.judge_agreement_with_random_weights)."
        )
    if any(row["status"] == "unjudged" for row in results.values() if row.get("floor") == "passed"):
        lines.append(
            "Its INT8 rows carry no verdict beyond the floor (`unjudged`): with random weights, quantization noise is as large "
            "as the input-dependent signal, so a correct INT8 model and a damaged one score alike. Every row first meets the "
            "floor whatever the weights: finite logits that move with the input (`spread vs ref`, validate.floor); a file "
            "that ignores its input, or answers zeros or NaN, is failed. The `trained/` rows judge INT8."
        )
    trained_reference = results.get(TRAINED_PREFIX + REFERENCE, {})
    if "accuracy_top1" in trained_reference:
        lines.append(
            f"Rows named `trained/…` are the stand-in: a {trained_reference.get('arch', 'classifier')} trained here on scikit-learn's "
            f"digits (stage `trained`; top-1 accuracy {trained_reference['accuracy_top1']:.4f} on its held-out labelled images), taken "
            "through the same conversions and judged on every figure, accuracy against the labels included: they tell whether the "
            "conversion and INT8 paths keep a trained model's predictions. `noise / spread` is the RMS logit error over the "
            "reference's image-to-image spread (0.2: noise of 20 %); `cosine p1` the 1st percentile of the per-image cosines."
        )
    lines += ["", "| variant | " + " | ".join(title for _, title, _ in COLUMNS) + " | reason |"]
    lines.append("|" + "---|" * (len(COLUMNS) + 2))
    for name, row in results.items():
        cells = [_cell(row, key, fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row.get('reason', '')} |")
    return "\n".join(lines) + "\n"


def misses_table(results: dict[str, dict[str, Any]]) -> str:
    failed = {name: row for name, row in results.items() if row["status"] == "failed"}
    width = max(len(n) for n in failed)
    return "\n".join(f"  {name:<{width}}  {row['reason']}" for name, row in failed.items())
