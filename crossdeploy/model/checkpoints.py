"""The user's checkpoint: read under the trust policy (a state_dict always; a pickled model or TorchScript
archive, which run code when loaded, only with model.trust_checkpoint), and what it holds against
model.arch and model.num_classes, said as one sentence naming the param to change."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from crossdeploy.errors import CrossdeployError
from crossdeploy.model.architectures import architectures_matching, empty_model, layers_of


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
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def read_checkpoint(path: Path, trust: bool):
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


def whole_model_mismatch(module, arch: str, num_classes: int, input_size: int, path: Path) -> str | None:
    """What a trusted whole model (pickled or TorchScript) holds against model.arch and model.num_classes, as one
    sentence naming both sides and the param to change; None when it is what the params say."""
    classes = _output_classes(module, input_size, path)
    class_name, layers = _class_name(module), layers_of(module.state_dict())
    expected = empty_model(arch, classes)
    if type(expected).__name__ != class_name or layers_of(expected.state_dict()) != layers:
        also = f" and model.num_classes: {classes}" if classes != num_classes else ""
        matches = architectures_matching(class_name, layers, classes)
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


def state_dict_mismatch(model, state_dict: dict, arch: str, num_classes: int, path: Path) -> str | None:
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
