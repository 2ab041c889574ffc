"""Resolve the user's classifier (torchvision architecture, weights, checkpoint) into one exported program.

Every later step (ONNX export, the PyTorch reference in validate and benchmark) starts from the
`torch.export` program written here, so they all see exactly the same weights and the same graph.
"""

from __future__ import annotations

import difflib
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import MAX_BATCH
from crossdeploy.preprocessing import Preprocessing

#: photographs the random default's BatchNorm statistics are re-estimated on
RANDOM_INIT_IMAGES = 64
RANDOM_WEIGHTS_NOTE = "random weights: fidelity figures only, no accuracy"
SWITCH_TO_REAL_WEIGHTS = (
    "set `model.weights: IMAGENET1K_V2` (torchvision weights, from the local torch hub cache or downloaded) "
    "or `model.checkpoint: path/to/your_state_dict.pt` in conf/config.yaml"
)


@dataclass(frozen=True)
class ModelCard:
    """What the pipeline knows about the source model; written beside the exported program."""

    name: str
    arch: str
    num_classes: int
    source: str  # "random", "torchvision-weights" or "checkpoint"
    weights: str | None
    checkpoint: str | None
    random_weights: bool
    preprocessing: Preprocessing
    categories: list[str] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        data["note"] = RANDOM_WEIGHTS_NOTE if self.random_weights else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["preprocessing"] = Preprocessing.from_dict(data["preprocessing"])
        return cls(**fields)


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


def _weights_enum(arch: str, weights: str):
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(w.name for w in enum)
        raise CrossdeployError(
            f"model.weights '{weights}' does not exist for {arch}; set model.weights to one of {names}, or none."
        ) from None


def _load_torchvision_weights(arch: str, weights_enum) -> dict:
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # network, hash or file errors all mean the same thing to the user
        raise CrossdeployError(
            f"could not read {arch} weights {weights_enum.name} from the torch hub cache or download them ({exc}); "
            f"put {Path(weights_enum.url).name} in $TORCH_HOME/hub/checkpoints or set model.weights: none."
        ) from None


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def _unwrap_state_dict(obj: Any, path: Path) -> dict:
    # Training scripts often save {"state_dict": ...} or {"model": ...}, and DDP prefixes "module.".
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise CrossdeployError(f"model.checkpoint {path} holds no state_dict; save it with torch.save(model.state_dict(), path).")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _read_checkpoint(path: Path, trust: bool):
    """Return a state_dict, or an nn.Module (a pickled model or TorchScript) when the user trusts the file."""
    import torch

    if not path.is_file():
        raise CrossdeployError(f"model.checkpoint {path} does not exist; set model.checkpoint to your state_dict file, or null.")
    if _is_torchscript(path):
        # torch.jit.load runs the code the archive carries (PyTorch calls TorchScript loading unsecured,
        # CVE-2025-32434), so it is a whole model like a pickled one: only with explicit trust.
        if not trust:
            raise CrossdeployError(
                f"model.checkpoint {path} is a TorchScript archive, and loading one runs code it carries; "
                f"set model.trust_checkpoint: true if you trust its source, or save a state_dict "
                f"(torch.save(model.state_dict(), ...)) instead."
            )
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise CrossdeployError(f"model.checkpoint {path} is not a TorchScript archive torch.jit.load can read ({exc}).") from None
    try:
        return _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True), path)
    except CrossdeployError:
        raise
    except Exception as exc:
        if "Weights only load failed" not in str(exc):
            raise CrossdeployError(f"model.checkpoint {path} is not a PyTorch checkpoint torch.load can read ({exc}).") from None
        if not trust:
            raise CrossdeployError(
                f"model.checkpoint {path} is a whole pickled model and unpickling runs arbitrary code; "
                f"save a state_dict instead, or set model.trust_checkpoint: true if you trust the file."
            ) from None
    module = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(module, dict):
        return _unwrap_state_dict(module, path)
    if not isinstance(module, torch.nn.Module):
        raise CrossdeployError(f"model.checkpoint {path} holds a {type(module).__name__}, not a state_dict or nn.Module.")
    return module


def _class_name(module) -> str:
    """The model's class: TorchScript keeps the scripted or traced class's name as original_name."""
    import torch

    return module.original_name if isinstance(module, torch.jit.ScriptModule) else type(module).__name__


def _layers(state_dict: dict) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


def _empty_model(arch: str, num_classes: int):
    """`arch` with its layers' shapes but no weights: built on the meta device, which costs next to nothing
    (a few builders copy tensors while building, which meta cannot: those are built on the CPU)."""
    import torch
    import torchvision

    try:
        with torch.device("meta"):
            return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    except NotImplementedError:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def _architectures_matching(class_name: str, layers: dict, num_classes: int) -> list[str]:
    """The torchvision architectures with this class and exactly these layers (names and shapes). Only builders
    whose module defines the class are built: resnet18 and resnet50 share ResNet, and the layers tell them apart."""
    import sys

    import torchvision

    matches = []
    for arch in classification_architectures():
        builder_module = sys.modules[torchvision.models.get_model_builder(arch).__module__]
        if not isinstance(getattr(builder_module, class_name, None), type):
            continue
        if _layers(_empty_model(arch, num_classes).state_dict()) == layers:
            matches.append(arch)
    return matches


def _output_classes(module, input_size: int, path: Path) -> int:
    """The width of the module's logits on one input of the configured size: every classifier head (fc,
    classifier[-1], heads.head, ...) shows there, and so does anything the forward does after it."""
    import torch

    module.eval()
    try:
        with torch.no_grad():
            logits = module(torch.zeros(1, 3, input_size, input_size))
    except Exception as exc:
        raise CrossdeployError(
            f"model.checkpoint {path} fails on a 1x3x{input_size}x{input_size} input ({exc}); "
            f"set model.input_size to the size it was trained on."
        ) from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else f"a {type(logits).__name__}"
        raise CrossdeployError(
            f"model.checkpoint {path} returns {got} for a 1x3x{input_size}x{input_size} input, not (batch, classes) logits; "
            f"save a classifier whose forward returns its logits."
        )
    return int(logits.shape[1])


def _whole_model_mismatch_message(module, arch: str, num_classes: int, input_size: int, path: Path) -> str | None:
    """What a trusted whole model (pickled or TorchScript) holds against model.arch and model.num_classes, as one
    sentence naming both sides and the param to change; None when it is what the params say."""
    classes = _output_classes(module, input_size, path)
    class_name, layers = _class_name(module), _layers(module.state_dict())
    expected = _empty_model(arch, classes)
    if type(expected).__name__ != class_name or _layers(expected.state_dict()) != layers:
        also = f" and model.num_classes: {classes}" if classes != num_classes else ""
        matches = _architectures_matching(class_name, layers, classes)
        if matches:
            fix = f"model.arch: {matches[0]}" if len(matches) == 1 else f"model.arch to one of {', '.join(matches)}"
            return (
                f"model.checkpoint {path} holds a {' / '.join(matches)} ({class_name}, {classes} classes) but model.arch is "
                f"{arch} (a {type(expected).__name__}); set {fix}{also}."
            )
        count = sum(p.numel() for p in module.parameters())
        expected_count = sum(p.numel() for p in expected.parameters())
        return (
            f"model.checkpoint {path} holds a {class_name} ({count:,} parameters, {classes} classes) that is no torchvision "
            f"classification architecture, and model.arch {arch} is a {type(expected).__name__} ({expected_count:,} parameters); "
            f"set model.arch to the architecture it was built with{also}, or save it as one of those."
        )
    if classes != num_classes:
        return (
            f"model.checkpoint {path} has {classes} output classes but model.num_classes is {num_classes}; "
            f"set model.num_classes: {classes}."
        )
    return None


def _checkpoint_mismatch_message(model, state_dict: dict, arch: str, num_classes: int, path: Path) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        (k, tuple(state_dict[k].shape), tuple(v.shape))
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or wrong_shape):
        return None
    if not missing and not unexpected and wrong_shape:
        # The usual case: a fine-tuned head with another number of classes.
        key, got, want = wrong_shape[-1]
        if len(wrong_shape) <= 2 and got[0] != want[0]:
            return (
                f"model.checkpoint {path} has {got[0]} output classes but model.num_classes is {num_classes}; "
                f"set model.num_classes: {got[0]}."
            )
    detail = "; ".join(
        part
        for part in (
            f"missing {len(missing)} keys (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(wrong_shape)} shape mismatches (e.g. {wrong_shape[0][0]}: {wrong_shape[0][1]} vs {wrong_shape[0][2]})"
            if wrong_shape
            else "",
        )
        if part
    )
    return f"model.checkpoint {path} does not fit model.arch {arch} ({detail}); set model.arch to the architecture it was trained with."


def build_source_model(
    *,
    name: str,
    arch: str,
    num_classes: int,
    weights: str | None,
    checkpoint: str | None,
    trust_checkpoint: bool,
    seed: int,
    input_size: int | None,
    resize_size: int | None,
    mean: list[float] | None,
    std: list[float] | None,
):
    """Return (eval-mode nn.Module, ModelCard) for the configured source."""
    import torch
    import torchvision

    check_architecture(arch)
    if weights and checkpoint:
        raise CrossdeployError("model.weights and model.checkpoint are both set; set one of them to null.")
    weights_enum = _weights_enum(arch, weights) if weights else None
    categories = list(weights_enum.meta["categories"]) if weights_enum else None
    if categories is not None and len(categories) != num_classes:
        raise CrossdeployError(
            f"model.weights {weights} has {len(categories)} classes but model.num_classes is {num_classes}; "
            f"set model.num_classes: {len(categories)}."
        )

    preprocessing = Preprocessing.resolve(
        weights_transforms=weights_enum.transforms() if weights_enum else None,
        input_size=input_size,
        resize_size=resize_size,
        mean=mean,
        std=std,
    )
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    source = "random"
    if weights_enum is not None:
        model.load_state_dict(_load_torchvision_weights(arch, weights_enum))
        source = "torchvision-weights"
    elif checkpoint:
        path = Path(checkpoint)
        loaded = _read_checkpoint(path, trust_checkpoint)
        if isinstance(loaded, torch.nn.Module):
            # a trusted whole model: the model card records model.arch and model.num_classes, so they must be its own
            problem = _whole_model_mismatch_message(loaded, arch, num_classes, preprocessing.crop_size, path)
            if problem:
                raise CrossdeployError(problem)
            if isinstance(loaded, torch.jit.ScriptModule):
                # torch.export takes no TorchScript: its weights go into the architecture, which it was just shown to be
                model.load_state_dict(loaded.state_dict())
            else:
                model = loaded
        else:
            problem = _checkpoint_mismatch_message(model, loaded, arch, num_classes, path)
            if problem:
                raise CrossdeployError(problem)
            model.load_state_dict(loaded)
        source = "checkpoint"
    model.eval()

    if source == "random":
        from crossdeploy.datasets import DataSettings, default_image_sets

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
