"""A classifier trained here, offline, in seconds: what tells a user that the conversions and the INT8
path keep a *trained* model's predictions.

Random weights cannot show INT8 fidelity: their quantization noise is as large as their
input-dependent signal, so a correct INT8 model and a damaged one score alike. scikit-learn ships
1,797 labelled 8x8 digit images; a torchvision architecture trained on them, upsampled, reaches about
96 % accuracy in a few epochs on two CPU cores. Its variants are judged with real thresholds
(agreement, overlap, cosine, accuracy against labels) beside the reference model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crossdeploy.datasets import ImageSet
from crossdeploy.errors import CrossdeployError
from crossdeploy.preprocessing import Preprocessing
from crossdeploy.source_model import ModelCard

NUM_CLASSES = 10
# digits are single-channel strokes on black; centring on 0.5 keeps the inputs symmetric around zero
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TrainingSettings:
    name: str = "digits-resnet18"
    arch: str = "resnet18"
    input_size: int = 32
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    calibration_size: int = 128
    evaluation_size: int = 400
    seed: int = 0

    def check(self, available: int) -> None:
        if self.input_size < 32:
            raise CrossdeployError(f"trained.input_size {self.input_size} is too small for torchvision's strided stems; set it to 32 or more.")
        if self.epochs < 1 or self.batch_size < 1:
            raise CrossdeployError("trained.epochs and trained.batch_size must be at least 1.")
        if self.calibration_size < 1 or self.evaluation_size < 1 or self.calibration_size + self.evaluation_size >= available:
            raise CrossdeployError(
                f"trained.calibration_size + trained.evaluation_size must leave training images of the {available} digits; lower them."
            )


def digit_pixels(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 RGB images of size x size (N, H, W, 3), and their labels."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return np.repeat(pixels.transpose(0, 2, 3, 1), 3, axis=3), digits.target.astype(np.int64)


def _image_set(pixels: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> ImageSet:
    return ImageSet(
        pixels=pixels[indices], labels=labels[indices], sources=[f"sklearn-digits/{i}" for i in indices], mean=MEAN, std=STD
    )


def train_classifier(settings: TrainingSettings) -> tuple[Any, ModelCard, ImageSet, ImageSet, dict[str, float]]:
    """Return (eval-mode model, card, calibration set, labelled evaluation set, training figures).

    Seeded: the split, the initial weights and the batch order; the same machine gives the same model.
    """
    import torch
    import torchvision

    from crossdeploy.source_model import check_architecture

    check_architecture(settings.arch, "trained.arch")
    pixels, labels = digit_pixels(settings.input_size)
    settings.check(len(labels))
    order = np.random.default_rng(settings.seed).permutation(len(labels))
    evaluation_idx = order[: settings.evaluation_size]
    training_idx = order[settings.evaluation_size :]
    # calibration images come from the training split, as they would in a real deployment
    calibration_idx = training_idx[: settings.calibration_size]
    calibration = _image_set(pixels, labels, calibration_idx)
    evaluation = _image_set(pixels, labels, evaluation_idx)
    training = _image_set(pixels, labels, training_idx)

    torch.manual_seed(settings.seed)
    model = torchvision.models.get_model(settings.arch, weights=None, num_classes=NUM_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    inputs = torch.from_numpy(training.tensors("NCHW"))
    targets = torch.from_numpy(training.labels)
    for epoch in range(settings.epochs):
        model.train()
        batches = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(settings.seed + epoch))
        for start in range(0, len(inputs), settings.batch_size):
            batch = batches[start : start + settings.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single image
                continue
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(evaluation.tensors("NCHW"))).argmax(1).numpy()
    figures = {"evaluation_accuracy": float(np.mean(predicted == evaluation.labels)), "training_images": int(len(training_idx))}

    card = ModelCard(
        name=settings.name,
        arch=settings.arch,
        num_classes=NUM_CLASSES,
        source="trained-digits",
        weights=None,
        checkpoint=None,
        random_weights=False,
        preprocessing=Preprocessing(
            resize_size=settings.input_size, crop_size=settings.input_size, mean=MEAN, std=STD, interpolation="bilinear"
        ),
        categories=[str(i) for i in range(NUM_CLASSES)],
    )
    return model, card, calibration, evaluation, figures


def convert_every_cpu_variant(
    model, card: ModelCard, calibration: ImageSet, evaluation: ImageSet, paths: dict[str, str], *, opset: int, quantize, version: int = 1
) -> None:
    """The same conversions the pipeline's stages make, with the same functions: exported program,
    ONNX, optimized ONNX, both INT8 flavours, SavedModel and the three TFLite models."""
    from dataclasses import replace
    from pathlib import Path

    import torch

    from crossdeploy.layout import saved_model_version_dir
    from crossdeploy.onnx_export import export_onnx
    from crossdeploy.onnx_optimize import optimize_onnx
    from crossdeploy.onnx_quantize import quantize_onnx
    from crossdeploy.source_model import export_program
    from crossdeploy.stage import write_json
    from crossdeploy.tensorflow_convert import TFLITE_PRECISIONS, convert_tflite, onnx_to_keras, save_serving_model

    size = card.preprocessing.crop_size
    source, data = Path(paths["source"]), Path(paths["data"])
    source.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    torch.export.save(export_program(model, size), source / "model.pt2")
    write_json(source / "model.json", card.to_dict())
    calibration.save(data / "calibration.npz")
    evaluation.save(data / "evaluation.npz")

    Path(paths["onnx"]).parent.mkdir(parents=True, exist_ok=True)
    export_onnx(source / "model.pt2", Path(paths["onnx"]), opset=opset, input_size=size)
    optimize_onnx(Path(paths["onnx"]), Path(paths["onnx_optimized"]))
    # the user's quantize settings, so `-S quantize.calibration_method=...` is judged on this model too
    settings = replace(quantize, calibration_size=min(quantize.calibration_size, len(calibration.pixels)))
    for flavour, target in (("cpu", paths["onnx_int8"]), ("tensorrt", paths["onnx_int8_trt"])):
        quantize_onnx(Path(paths["onnx_optimized"]), Path(target), calibration.tensors("NCHW"), settings, flavour)

    version_dir = saved_model_version_dir(paths, card.name, version)
    save_serving_model(onnx_to_keras(Path(paths["onnx_optimized"])), version_dir, size)
    tflite = Path(paths["tflite"])
    tflite.mkdir(parents=True, exist_ok=True)
    nhwc = calibration.tensors("NHWC")[: settings.calibration_size]
    for precision in TFLITE_PRECISIONS:
        convert_tflite(version_dir, tflite / f"model.{precision}.tflite", precision, nhwc)
