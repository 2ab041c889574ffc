"""The parity gate on a trained stand-in: damaged logits and weights of every kind fail at the default floor and
INT8 thresholds, naming the figure that caught them, while a correct INT8 variant of the same model passes; the
same for its FP16 model at the FP16 thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from crossdeploy.validation.parity import Floor, Thresholds, compare_logits
from tests.conftest import ROOT, run_onnx
from tests.planted import damage_weights, noise_20pct, shuffled


class Gate:
    """validate's order: the floor, then the INT8 thresholds, from conf/config.yaml."""

    def __init__(self) -> None:
        config = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["validate"]
        self.floor = Floor(**config["floor"])
        self.int8 = Thresholds(**config["thresholds"]["int8"])

    def misses(self, metrics: dict) -> list[str]:
        return self.floor.misses(metrics) or self.int8.misses(metrics)


@pytest.fixture(scope="module")
def thresholds() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, evaluation set, FP32 logits, the ONNX Runtime INT8 logits of a correctly quantized copy)."""
    import torch

    from crossdeploy.model.source import export_program
    from crossdeploy.onnx.export import export_onnx
    from crossdeploy.onnx.optimize import optimize_onnx
    from crossdeploy.onnx.quantize import QuantizeSettings, quantize_onnx
    from crossdeploy.standin.trained import TrainingSettings, train_classifier

    settings = TrainingSettings(epochs=2, input_size=32, evaluation_size=200, calibration_size=64)
    model, card, calibration, evaluation, figures = train_classifier(settings)
    assert figures["evaluation_accuracy"] > 0.9, "the digits model did not learn: every control below would be meaningless"
    folder = tmp_path_factory.mktemp("trained")
    torch.export.save(export_program(model, settings.size), folder / "model.pt2")
    export_onnx(folder / "model.pt2", folder / "model.onnx", opset=17, input_size=settings.size)
    optimize_onnx(folder / "model.onnx", folder / "model.optimized.onnx")
    quantize_onnx(
        folder / "model.optimized.onnx",
        folder / "model.int8.onnx",
        calibration.tensors("NCHW"),
        QuantizeSettings(calibration_size=64),
        "cpu",
    )
    inputs = evaluation.tensors("NCHW")
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    return model, evaluation, reference, run_onnx(folder / "model.int8.onnx", inputs), folder


def judge(trained, thresholds, logits):
    _, evaluation, reference, *_ = trained
    metrics = compare_logits(reference, logits, evaluation.labels)
    return metrics, thresholds.misses(metrics)


def test_a_correct_int8_variant_passes(trained, thresholds):
    metrics, missed = judge(trained, thresholds, trained[3])
    assert missed == [], metrics
    print(f"\ncorrect INT8: {metrics}")
    # with margin: two thirds of the noise the gate allows
    assert metrics["noise_rel"] <= thresholds.int8.noise_rel_max / 1.5, metrics


CONTROLS = {
    # name: (damage applied to the reference logits, a figure that must be named in the verdict)
    "constant": (lambda r: np.repeat(r[:1], len(r), axis=0), "do not depend on the input"),
    "mean": (lambda r: np.repeat(r.mean(0, keepdims=True), len(r), axis=0), "do not depend on the input"),
    "shuffled": (shuffled, "top1_agreement"),
    "noise_20pct": (noise_20pct, "noise_rel"),
    "zeros": (lambda r: np.zeros_like(r), "every logit is zero"),
    "nan": (lambda r: np.where(np.arange(r.size).reshape(r.shape) == 7, np.nan, r), "NaN"),
    "inf": (lambda r: np.where(np.arange(r.size).reshape(r.shape) == 7, np.inf, r), "NaN or inf"),
    "minus_inf": (lambda r: np.where(np.arange(r.size).reshape(r.shape) == 7, -np.inf, r), "NaN or inf"),
}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_damaged_logits_fail_naming_the_figure(trained, thresholds, name):
    damage, figure = CONTROLS[name]
    metrics, missed = judge(trained, thresholds, damage(trained[2]).astype(np.float32))
    assert missed, f"{name} passed the INT8 gate: {metrics}"
    assert any(figure in reason for reason in missed), (name, missed)
    print(f"\n{name}: {missed}")


def test_perturbed_weights_fail(trained, thresholds):
    """A model whose weights were damaged (noise of 25 % of the mean weight magnitude on every conv weight), run for real."""
    from crossdeploy.standin.verdicts import damaged_logits

    model, evaluation, *_ = trained
    logits = damaged_logits(model, evaluation.tensors("NCHW"), fraction=0.25, seed=0)
    metrics, missed = judge(trained, thresholds, logits)
    assert missed, f"damaged weights passed the INT8 gate: {metrics}"


def test_nonfinite_logits_give_no_figure_that_json_cannot_hold(trained):
    import json

    _, evaluation, reference, *_ = trained
    metrics = compare_logits(reference, np.full_like(reference, np.nan), evaluation.labels)
    assert metrics == {"nonfinite_values": reference.size}
    json.dumps(metrics, allow_nan=False)


def test_damaged_int8_weights_fail(trained, thresholds, tmp_path):
    """The stand-in's own INT8 file with its integer weights damaged (25 % of their mean magnitude), run for real."""
    *_, evaluation, reference, _, folder = trained
    damaged = damage_weights(folder / "model.int8.onnx", tmp_path / "damaged.int8.onnx")
    metrics, missed = judge(trained, thresholds, run_onnx(damaged, evaluation.tensors("NCHW")))
    assert missed, f"damaged INT8 weights passed the gate: {metrics}"


def test_the_fp16_model_passes_at_the_fp16_thresholds_and_fails_with_damaged_weights(trained, thresholds, tmp_path):
    """What judges trained/onnxruntime-fp16: the stand-in's FP16 model (the fp16 stage's conversion) at
    validate.thresholds.fp16, accuracy included; the same file with its FP16 weights damaged fails them."""
    from crossdeploy.onnx.fp16 import convert_fp16

    *_, evaluation, reference, _, folder = trained
    fp16 = Thresholds(**yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["validate"]["thresholds"]["fp16"])
    convert_fp16(folder / "model.optimized.onnx", tmp_path / "model.fp16.onnx")
    inputs = evaluation.tensors("NCHW")
    metrics = compare_logits(reference, run_onnx(tmp_path / "model.fp16.onnx", inputs), evaluation.labels)
    assert thresholds.floor.misses(metrics) == [] and fp16.misses(metrics) == [], metrics
    print(f"\ncorrect FP16: {metrics}")
    damaged = damage_weights(tmp_path / "model.fp16.onnx", tmp_path / "damaged.fp16.onnx")
    metrics = compare_logits(reference, run_onnx(damaged, inputs), evaluation.labels)
    assert fp16.misses(metrics), f"damaged FP16 weights passed the FP16 thresholds: {metrics}"
