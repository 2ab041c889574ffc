"""The stand-in: the deployed architecture trained here, offline, in a couple of minutes; what tells a user
that the conversions and the INT8 path keep a *trained* model's predictions.

Random weights cannot show INT8 fidelity: their quantization noise is as large as their
input-dependent signal, so a correct INT8 model and a damaged one score alike. scikit-learn ships
1,797 labelled 8x8 digit images; a torchvision architecture trained on them, upsampled to 48 px, reaches
about 97 % accuracy in 3 epochs on two CPU cores (ResNet50). Its variants are judged with real thresholds
(noise over the spread, agreement, cosine, accuracy against labels) beside the main model's, and an INT8
verdict about it is a verdict about the same layers (SiLU and squeeze-excitation, hard-swish, attention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crossdeploy.data.datasets import ImageSet
from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.errors import CrossdeployError
from crossdeploy.model.card import ModelCard

NUM_CLASSES = 10
# digits are single-channel strokes on black; centring on 0.5 keeps the inputs symmetric around zero
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


#: the smallest square input a family's torchvision builder takes, where the strided stems' 32 is too small
#: (maxvit_t's attention windows need each stage's grid divisible by 7: 224 is its smallest)
SMALLEST_INPUT = {"inception_v3": 75, "maxvit_t": 224}
#: builders that size their layers (position embeddings, attention grids) from the input, by their keyword for it
SIZED_BUILDERS = {"vit_": "image_size", "maxvit_": "input_size"}
#: the strided stems' smallest input, and the stand-in's default: at 48 px ResNet50's last stage still averages
#: a 2x2 grid, and its INT8 noise is half what it is at 32 px (noise_rel 0.07 against 0.24, 3 epochs)
MIN_INPUT = 32
DEFAULT_INPUT = 48


@dataclass(frozen=True)
class TrainingSettings:
    name: str = "digits-resnet18"
    arch: str = "resnet18"
    input_size: int | None = None  # None: DEFAULT_INPUT, or the smallest the architecture takes where that is larger
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-3
    calibration_size: int = 128
    evaluation_size: int = 400
    seed: int = 0

    @property
    def size(self) -> int:
        """The input size the stand-in is trained and converted at."""
        return self.input_size if self.input_size is not None else max(DEFAULT_INPUT, SMALLEST_INPUT.get(self.arch, 0))

    def check(self, available: int) -> None:
        smallest = max(MIN_INPUT, SMALLEST_INPUT.get(self.arch, 0))
        if self.size < smallest:
            raise CrossdeployError(
                f"trained.input_size {self.size} is too small for {self.arch}; set it to {smallest} or more, or to null."
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise CrossdeployError("trained.epochs and trained.batch_size must be at least 1.")
        if self.calibration_size < 1 or self.evaluation_size < 1 or self.calibration_size + self.evaluation_size >= available:
            raise CrossdeployError(
                f"trained.calibration_size + trained.evaluation_size must leave training images of the {available} digits; lower them."
            )


def build_standin(arch: str, size: int):
    """A fresh `arch` with NUM_CLASSES outputs, for `size` x `size` inputs where its builder sizes layers from them."""
    import torchvision

    keyword = next((kw for prefix, kw in SIZED_BUILDERS.items() if arch.startswith(prefix)), None)
    sized = {} if keyword is None else {keyword: size if keyword == "image_size" else (size, size)}
    return torchvision.models.get_model(arch, weights=None, num_classes=NUM_CLASSES, **sized)


def _preprocessing(size: int) -> Preprocessing:
    return Preprocessing(resize_size=size, crop_size=size, mean=MEAN, std=STD, interpolation="bilinear")


def digit_images(size: int) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """scikit-learn's digits as a client would send them (8x8 PNG files), their pixels after the
    pipeline's preprocessing (upsampled to size x size, RGB), and their labels."""
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    from crossdeploy.data.datasets import decode_image

    digits = load_digits()
    preprocessing = _preprocessing(size)
    pixels, files = [], []
    for image in digits.images:
        out = io.BytesIO()
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8)).convert("RGB").save(out, format="PNG")
        files.append(out.getvalue())
        pixels.append(preprocessing.crop(decode_image(files[-1])))
    return np.stack(pixels), digits.target.astype(np.int64), files


def _image_set(pixels: np.ndarray, labels: np.ndarray, indices: np.ndarray, files: list[bytes] | None = None) -> ImageSet:
    return ImageSet(
        pixels=pixels[indices],
        labels=labels[indices],
        sources=[f"sklearn-digits/{i}" for i in indices],
        mean=MEAN,
        std=STD,
        encoded=[files[i] for i in indices] if files is not None else None,
    )


def _logits(output):
    """Inception and GoogLeNet answer (logits, auxiliary logits) while training: the main head's logits."""
    return output[0] if isinstance(output, tuple) else output


def train_classifier(settings: TrainingSettings) -> tuple[Any, ModelCard, ImageSet, ImageSet, dict[str, float]]:
    """Return (eval-mode model, card, calibration set, labelled evaluation set, training figures).

    Seeded: the split, the initial weights and the batch order; the same machine gives the same model.
    """
    import torch

    from crossdeploy.model.architectures import check_architecture
    from crossdeploy.model.source import reestimate_batchnorm

    check_architecture(settings.arch, "trained.arch")
    pixels, labels, files = digit_images(settings.size)
    settings.check(len(labels))
    order = np.random.default_rng(settings.seed).permutation(len(labels))
    evaluation_idx = order[: settings.evaluation_size]
    training_idx = order[settings.evaluation_size :]
    # calibration images come from the training split, as they would in a real deployment
    calibration_idx = training_idx[: settings.calibration_size]
    calibration = _image_set(pixels, labels, calibration_idx)
    # the evaluation set keeps the files, for the served bytes path
    evaluation = _image_set(pixels, labels, evaluation_idx, files)
    training = _image_set(pixels, labels, training_idx)

    torch.manual_seed(settings.seed)
    # channels-last: oneDNN's convolutions train about 15 % faster on a CPU (ResNet50 at 48 px, batch 32)
    model = build_standin(settings.arch, settings.size).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    inputs = torch.from_numpy(training.tensors("NCHW")).contiguous(memory_format=torch.channels_last)
    targets = torch.from_numpy(training.labels)
    steps = settings.epochs * sum(1 for start in range(0, len(inputs), settings.batch_size) if len(inputs) - start >= 2)
    # the rate annealed to zero over the run: at a constant rate the model the last step leaves depends on the
    # seed (ResNet50 at 48 px, 3 epochs: accuracy 0.88 to 0.95); annealed, the last steps settle it
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for epoch in range(settings.epochs):
        model.train()
        batches = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(settings.seed + epoch))
        for start in range(0, len(inputs), settings.batch_size):
            batch = batches[start : start + settings.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single image
                continue
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(_logits(model(inputs[batch])), targets[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    # the statistics of the weights the run ended with, not a running average over the whole run
    reestimate_batchnorm(model, inputs, settings.batch_size)
    model = model.to(memory_format=torch.contiguous_format)  # exported and converted as the main model is
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
        preprocessing=_preprocessing(settings.size),
        categories=[str(i) for i in range(NUM_CLASSES)],
    )
    return model, card, calibration, evaluation, figures


def convert_every_cpu_variant(
    model,
    card: ModelCard,
    calibration: ImageSet,
    evaluation: ImageSet,
    paths: dict[str, str],
    *,
    opset: int,
    fp16,
    quantize,
    package: dict[str, Any],
    version: int = 1,
) -> None:
    """The same conversions the pipeline's stages make, with the same functions: exported program,
    ONNX, optimized ONNX, the FP16 model, both INT8 flavours, SavedModel, the three TFLite models, and the TF Serving
    repository with the float and encoded-image signatures."""
    from dataclasses import replace
    from pathlib import Path

    import torch

    from crossdeploy.layout import model_version_dir, saved_model_version_dir
    from crossdeploy.model.source import export_program
    from crossdeploy.onnx.export import export_onnx
    from crossdeploy.onnx.fp16 import convert_fp16
    from crossdeploy.onnx.optimize import optimize_onnx
    from crossdeploy.onnx.quantize import quantize_flavours
    from crossdeploy.serving.repository import BatchingParameters, write_repository_files
    from crossdeploy.serving.signatures import ImageLimits, export_with_bytes_signature
    from crossdeploy.stage import write_json
    from crossdeploy.tensorflow.convert import convert_to_tensorflow

    size = card.preprocessing.crop_size
    program = Path(paths["program"])
    for folder in (paths["source"], paths["data"], Path(paths["onnx"]).parent):
        Path(folder).mkdir(parents=True, exist_ok=True)
    torch.export.save(export_program(model, size), program)
    write_json(paths["model_card"], card.to_dict())  # it holds the preprocessing: no preprocessing.json here
    calibration.save(Path(paths["calibration"]))
    evaluation.save(Path(paths["evaluation"]))

    export_onnx(program, Path(paths["onnx"]), opset=opset, input_size=size)
    optimize_onnx(Path(paths["onnx"]), Path(paths["onnx_optimized"]))
    convert_fp16(Path(paths["onnx_optimized"]), Path(paths["onnx_fp16"]), fp16)
    # the user's quantize settings, so `-S quantize.calibration_method=...` is judged on this model too
    settings = replace(quantize, calibration_size=min(quantize.calibration_size, len(calibration.pixels)))
    targets = {"cpu": Path(paths["onnx_int8"]), "tensorrt": Path(paths["onnx_int8_trt"])}
    quantize_flavours(Path(paths["onnx_optimized"]), targets, calibration.tensors("NCHW"), settings)

    version_dir = saved_model_version_dir(paths, card.name, version)
    nhwc = calibration.tensors("NHWC")[: settings.calibration_size]
    failures = convert_to_tensorflow(Path(paths["onnx_optimized"]), version_dir, Path(paths["tflite"]), size, nhwc)
    if failures:  # the reference judges the conversions: one it cannot build is a defect, not a limitation
        raise CrossdeployError("the trained reference model could not be converted: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))

    repository = Path(paths["serving"])
    repository.mkdir(parents=True, exist_ok=True)
    write_repository_files(repository, card.name, package["base_path"], BatchingParameters(**package["batching"]))
    limits = ImageLimits(**package["image_limits"])
    export_with_bytes_signature(version_dir, model_version_dir(repository, card.name, version), card.preprocessing, limits=limits)
