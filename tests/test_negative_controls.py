"""The parity gate on a trained model: damaged logits of every kind fail at the default INT8 thresholds,
naming the figure that caught them, while a correct INT8 variant of the same model passes."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from crossdeploy.parity import Thresholds, compare_logits
from tests.conftest import ROOT, run_onnx


@pytest.fixture(scope="module")
def thresholds() -> Thresholds:
    config = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    return Thresholds(**config["validate"]["thresholds"]["int8"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, evaluation set, FP32 logits, the ONNX Runtime INT8 logits of a correctly quantized copy)."""
    import torch

    from crossdeploy.onnx_export import export_onnx
    from crossdeploy.onnx_optimize import optimize_onnx
    from crossdeploy.onnx_quantize import QuantizeSettings, quantize_onnx
    from crossdeploy.source_model import export_program
    from crossdeploy.trained_reference import TrainingSettings, train_classifier

    settings = TrainingSettings(epochs=2, evaluation_size=200, calibration_size=64)
    model, card, calibration, evaluation, figures = train_classifier(settings)
    assert figures["evaluation_accuracy"] > 0.9, "the digits model did not learn: every control below would be meaningless"
    folder = tmp_path_factory.mktemp("trained")
    torch.export.save(export_program(model, settings.input_size), folder / "model.pt2")
    export_onnx(folder / "model.pt2", folder / "model.onnx", opset=17, input_size=settings.input_size)
    optimize_onnx(folder / "model.onnx", folder / "model.optimized.onnx")
    quantize_onnx(
        folder / "model.optimized.onnx", folder / "model.int8.onnx", calibration.tensors("NCHW"),
        QuantizeSettings(calibration_size=64), "cpu",
    )  # fmt: skip
    inputs = evaluation.tensors("NCHW")
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    return model, evaluation, reference, run_onnx(folder / "model.int8.onnx", inputs)


def judge(trained, thresholds, logits):
    _, evaluation, reference, _ = trained
    metrics = compare_logits(reference, logits, evaluation.labels)
    return metrics, thresholds.misses(metrics)


def test_a_correct_int8_variant_passes(trained, thresholds):
    metrics, missed = judge(trained, thresholds, trained[3])
    assert missed == [], metrics
    print(f"\ncorrect INT8: {metrics}")
    assert metrics["accuracy_drop"] <= 0.01


def _spread(reference: np.ndarray) -> float:
    return float(reference.std(axis=0).mean())


CONTROLS = {
    # name: (damage applied to the reference logits, a figure that must be named in the verdict)
    "constant": (lambda r: np.repeat(r[:1], len(r), axis=0), "top1_agreement"),
    "mean": (lambda r: np.repeat(r.mean(0, keepdims=True), len(r), axis=0), "cosine_min"),
    "shuffled": (lambda r: np.roll(r, 1, axis=0), "top1_agreement"),
    "noise_20pct": (lambda r: r + np.random.default_rng(0).normal(0, 0.2 * _spread(r), r.shape), "cosine_min"),
    "zeros": (lambda r: np.zeros_like(r), "cosine_min"),
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
    import copy

    import torch

    model, evaluation, _, _ = trained
    damaged = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in damaged.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight += 0.25 * module.weight.abs().mean() * torch.randn(module.weight.shape, generator=generator)
        logits = damaged(torch.from_numpy(evaluation.tensors("NCHW"))).numpy()
    metrics, missed = judge(trained, thresholds, logits)
    assert missed, f"damaged weights passed the INT8 gate: {metrics}"


def test_nonfinite_logits_give_no_figure_that_json_cannot_hold(trained):
    import json

    _, evaluation, reference, _ = trained
    metrics = compare_logits(reference, np.full_like(reference, np.nan), evaluation.labels)
    assert metrics == {"nonfinite_values": reference.size}
    json.dumps(metrics, allow_nan=False)
