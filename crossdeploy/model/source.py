"""Resolve the user's classifier (torchvision architecture, weights, checkpoint) into one exported program.

Every later step (ONNX export, the PyTorch reference in validate and benchmark) starts from the
`torch.export` program written here, so they all see exactly the same weights and the same graph.
Which architecture and weights exist is model/architectures.py's; reading and diagnosing the user's
checkpoint is model/checkpoints.py's; the card written beside the program is model/card.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import MAX_BATCH
from crossdeploy.model.architectures import check_architecture, load_torchvision_weights, published_weights
from crossdeploy.model.card import ModelCard
from crossdeploy.model.checkpoints import read_checkpoint, state_dict_mismatch, whole_model_mismatch

#: photographs the random default's BatchNorm statistics are re-estimated on
RANDOM_INIT_IMAGES = 64


@dataclass(frozen=True)
class SourceSpec:
    """The params model section: which classifier, with which weights, preprocessed how."""

    name: str
    arch: str
    num_classes: int
    weights: str | None = None  # a torchvision weights name (IMAGENET1K_V2, DEFAULT)
    checkpoint: str | None = None  # the user's file
    trust_checkpoint: bool = False  # a pickled model or TorchScript archive runs code when loaded
    seed: int = 0
    input_size: int | None = None  # None: the weights' own, else 224
    resize_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    @classmethod
    def from_params(cls, cfg: dict[str, Any]) -> "SourceSpec":
        return cls(
            name=cfg["name"],
            arch=cfg["arch"],
            num_classes=int(cfg["num_classes"]),
            weights=cfg.get("weights"),
            checkpoint=cfg.get("checkpoint"),
            trust_checkpoint=bool(cfg.get("trust_checkpoint", False)),
            seed=int(cfg.get("seed", 0)),
            input_size=cfg.get("input_size"),
            resize_size=cfg.get("resize_size"),
            mean=cfg.get("mean"),
            std=cfg.get("std"),
        )


def build_source_model(spec: SourceSpec):
    """Return (eval-mode nn.Module, ModelCard) for the configured source."""
    import torch
    import torchvision

    name, arch, num_classes, weights, checkpoint, seed = spec.name, spec.arch, spec.num_classes, spec.weights, spec.checkpoint, spec.seed
    check_architecture(arch)
    if weights and checkpoint:
        raise CrossdeployError("model.weights and model.checkpoint are both set; set one of them to null.")
    weights_enum = published_weights(arch, weights) if weights else None
    categories = list(weights_enum.meta["categories"]) if weights_enum else None
    if categories is not None and len(categories) != num_classes:
        raise CrossdeployError(
            f"model.weights {weights} has {len(categories)} classes but model.num_classes is {num_classes}; "
            f"set model.num_classes: {len(categories)}."
        )

    preprocessing = Preprocessing.resolve(
        weights_transforms=weights_enum.transforms() if weights_enum else None,
        input_size=spec.input_size,
        resize_size=spec.resize_size,
        mean=spec.mean,
        std=spec.std,
    )
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    source = "random"
    if weights_enum is not None:
        model.load_state_dict(load_torchvision_weights(arch, weights_enum))
        source = "torchvision-weights"
    elif checkpoint:
        path = Path(checkpoint)
        loaded = read_checkpoint(path, spec.trust_checkpoint)
        if isinstance(loaded, torch.nn.Module):
            # a trusted whole model: the model card records model.arch and model.num_classes, so they must be its own
            problem = whole_model_mismatch(loaded, arch, num_classes, preprocessing.crop_size, path)
            if problem:
                raise CrossdeployError(problem)
            if isinstance(loaded, torch.jit.ScriptModule):
                # torch.export takes no TorchScript: its weights go into the architecture, which it was just shown to be
                model.load_state_dict(loaded.state_dict())
            else:
                model = loaded
        else:
            problem = state_dict_mismatch(model, loaded, arch, num_classes, path)
            if problem:
                raise CrossdeployError(problem)
            model.load_state_dict(loaded)
        source = "checkpoint"
    model.eval()

    if source == "random":
        from crossdeploy.data.datasets import DataSettings, default_image_sets

        photographs = default_image_sets(DataSettings(RANDOM_INIT_IMAGES, 1, preprocessing, seed))[0]
        make_random_model_input_sensitive(model, photographs.tensors("NCHW"), num_classes)
    card = ModelCard(
        name=name,
        arch=arch,
        num_classes=num_classes,
        source=source,
        weights=weights_enum.name if weights_enum else None,
        checkpoint=str(checkpoint) if checkpoint else None,
        random_weights=source == "random",
        preprocessing=preprocessing,
        categories=categories,
    )
    return model, card


def make_random_model_input_sensitive(model, images, num_classes: int, batch_size: int = 16) -> None:
    """Seeded random weights keep BatchNorm's initial statistics (mean 0, variance 1), which match no
    real activation: layer by layer the signal shrinks (logits near 1e-9 in some families) or is
    swamped by an input-independent vector, so every image gets the same prediction. Re-estimate each
    BatchNorm's statistics on real photographs (no gradients; a cumulative average over the batches),
    give a zero-initialised classifier (ViT's) random weights, then centre the classifier's bias on
    their mean logits, so the logits follow the input."""
    import torch

    inputs = torch.from_numpy(images)
    reestimate_batchnorm(model, inputs, batch_size)
    with torch.no_grad():
        heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_classes]
        if heads and not heads[-1].weight.any():
            # ViT initialises its classifier to zero (for fine-tuning), so every image would get the bias;
            # the other transformers' heads start from this distribution
            torch.nn.init.trunc_normal_(heads[-1].weight, std=0.02)
        if heads and heads[-1].bias is not None:
            mean_logits = torch.cat([model(inputs[s : s + batch_size]) for s in range(0, len(inputs), batch_size)]).mean(0)
            heads[-1].bias -= mean_logits


def reestimate_batchnorm(model, inputs, batch_size: int = 16) -> None:
    """Set every BatchNorm's running statistics to the plain average over `inputs` (no gradients; dropout and
    auxiliary heads stay in eval mode), and leave the model in eval mode. Families whose BatchNorm keeps a long
    memory (MobileNetV3's momentum 0.01, MNASNet's 0.0003) still hold their initial statistics after a short
    training; so does any model that never trained."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        for start in range(0, len(inputs), batch_size):
            if len(inputs) - start > 1:  # BatchNorm cannot take the statistics of a single image
                model(inputs[start : start + batch_size])
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


def export_program(model, input_size: int):
    """torch.export the model with a dynamic batch axis, so every runtime can take any batch size."""
    import torch

    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def load_program(path: str | Path):
    """Load the exported program as a callable eval-mode module."""
    import torch

    return torch.export.load(str(path)).module()
