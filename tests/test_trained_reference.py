"""The trained reference model: it learns, it is the same model on every run with the same settings,
and every one of its settings changes what the trained stage writes."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from crossdeploy.errors import CrossdeployError
from crossdeploy.standin.trained import TrainingSettings, train_classifier

# one epoch on a small evaluation split: seconds, and enough to tell models apart
FAST = TrainingSettings(epochs=1, input_size=32, calibration_size=32, evaluation_size=100)


def fingerprint(settings: TrainingSettings) -> dict[str, str]:
    """A digest of each thing the stage writes from the training: weights, image sets, model card."""
    model, card, calibration, evaluation, _ = train_classifier(settings)
    digest = lambda *arrays: hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()  # noqa: E731
    return {
        "weights": digest(*(t.detach().numpy() for t in model.state_dict().values())),
        "calibration": digest(calibration.pixels, calibration.labels),
        "evaluation": digest(evaluation.pixels, evaluation.labels),
        "card": repr(card),
    }


@pytest.fixture(scope="module")
def baseline():
    return fingerprint(FAST)


def test_the_same_settings_train_the_same_model(baseline):
    assert fingerprint(FAST) == baseline


CHANGES = {
    "name": "digits-other",
    "arch": "resnet34",
    "input_size": 40,
    "epochs": 2,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "calibration_size": 16,
    "evaluation_size": 120,
    "seed": 1,
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_setting_changes_the_output(baseline, field):
    assert set(CHANGES) == set(TrainingSettings.__dataclass_fields__), "a setting without a liveness check"
    assert fingerprint(replace(FAST, **{field: CHANGES[field]})) != baseline, f"trained.{field} changed nothing"


def test_it_learns_the_digits():
    _, card, _, evaluation, figures = train_classifier(replace(FAST, epochs=2))
    assert figures["evaluation_accuracy"] > 0.9 and evaluation.has_labels and card.random_weights is False


@pytest.mark.parametrize(
    "change,message",
    [
        ({"input_size": 16}, "trained.input_size"),
        ({"evaluation_size": 1790}, "trained.calibration_size"),
        ({"arch": "resnet-18"}, "trained.arch"),
    ],
)
def test_bad_settings_name_the_param(change, message):
    with pytest.raises(CrossdeployError, match=message.replace(".", r"\.")):
        train_classifier(replace(FAST, **change))


def test_the_standin_takes_each_familys_smallest_input():
    from crossdeploy.standin.trained import build_standin

    assert TrainingSettings(arch="resnet50").size == 48 and TrainingSettings(arch="resnet50", input_size=32).size == 32
    assert TrainingSettings(arch="inception_v3").size == 75 and TrainingSettings(arch="maxvit_t").size == 224
    with pytest.raises(CrossdeployError, match=r"trained.input_size 48 is too small for inception_v3; set it to 75 or more, or to null"):
        TrainingSettings(arch="inception_v3", input_size=48).check(1797)
    # a ViT sizes its position embeddings from the input: built for the stand-in's own size, it takes it
    import torch

    vit = build_standin("vit_b_16", 32).eval()
    with torch.no_grad():
        assert tuple(vit(torch.zeros(1, 3, 32, 32)).shape) == (1, 10)


def test_a_weak_standin_keeps_its_int8_rows_unjudged_and_its_floor_verdicts():
    from crossdeploy.validation.run import standin_verdicts

    rows = {
        "torch-fp32": {"status": "ok", "precision": "fp32", "accuracy_top1": 0.62},
        "onnxruntime-fp32": {"status": "ok", "precision": "fp32", "floor": "passed"},
        "onnxruntime-int8": {"status": "ok", "precision": "int8", "floor": "passed"},
        "tflite-int8": {"status": "failed", "precision": "int8", "floor": "passed", "reason": "noise_rel 0.3 > 0.15"},
        "onnxruntime-int8-trt": {"status": "failed", "precision": "int8", "floor": "failed", "reason": "every logit is zero"},
    }
    judged = standin_verdicts(rows, 0.9)
    assert {k: v["status"] for k, v in judged.items()} == {
        "torch-fp32": "ok",
        "onnxruntime-fp32": "ok",
        "onnxruntime-int8": "unjudged",
        "tflite-int8": "unjudged",
        "onnxruntime-int8-trt": "failed",
    }
    assert judged["onnxruntime-int8"]["reason"].startswith("the stand-in reached accuracy 0.6200 < validate.standin_accuracy_min 0.9")
    assert standin_verdicts(rows, 0.6) == rows
