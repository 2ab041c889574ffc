"""torchvision's classification architectures and their published weights: checking a name, building one
with no weights, finding the architectures a set of layers belongs to."""

from __future__ import annotations

import difflib
from pathlib import Path

from crossdeploy.errors import CrossdeployError


def classification_architectures() -> list[str]:
    import torchvision

    # module= keeps detection, segmentation, video and optical-flow models out.
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_architecture(arch: str, param: str = "model.arch") -> None:
    known = classification_architectures()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise CrossdeployError(
            f"{param} '{arch}' is not a torchvision classification architecture{hint}; "
            f"set {param} to one of torchvision.models.list_models(module=torchvision.models)."
        )


def published_weights(arch: str, weights: str):
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise CrossdeployError(
            f"model.weights '{weights}' does not exist for {arch}; set model.weights to one of {names}, or none."
        ) from None


def load_torchvision_weights(arch: str, weights) -> dict:
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # network, hash or file errors all mean the same thing to the user
        raise CrossdeployError(
            f"could not read {arch} weights {weights.name} from the torch hub cache or download them ({exc}); "
            f"put {Path(weights.url).name} in $TORCH_HOME/hub/checkpoints or set model.weights: none."
        ) from None


def layers_of(state_dict: dict) -> dict[str, tuple[int, ...]]:
    """Each weight's name and shape: what tells two architectures of one class apart."""
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def empty_model(arch: str, num_classes: int):
    """`arch` with its layers' shapes but no weights: built on the meta device, which costs next to nothing
    (a few builders copy tensors while building, which meta cannot: those are built on the CPU)."""
    import torch
    import torchvision

    try:
        with torch.device("meta"):
            return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    except NotImplementedError:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def architectures_matching(class_name: str, layers: dict, num_classes: int) -> list[str]:
    """The torchvision architectures with this class and exactly these layers (names and shapes). Only builders
    whose module defines the class are built: resnet18 and resnet50 share ResNet, and the layers tell them apart."""
    import sys

    import torchvision

    matches = []
    for arch in classification_architectures():
        builder_module = sys.modules[torchvision.models.get_model_builder(arch).__module__]
        if not isinstance(getattr(builder_module, class_name, None), type):
            continue
        if layers_of(empty_model(arch, num_classes).state_dict()) == layers:
            matches.append(arch)
    return matches
