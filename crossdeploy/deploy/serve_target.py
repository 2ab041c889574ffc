"""What `crossdeploy serve --bundle DIR` or `--variant NAME` serves: a SavedModel repository (TF Serving or the
embedded server, as without either flag) or another runtime's file with what the embedded server needs to
run it (a runner of its variant row, the preprocessing its bytes signature applies, the image limits)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.deploy.bundle import DECISION, KINDS, PREPROCESSING
from crossdeploy.errors import CrossdeployError
from crossdeploy.serving.signatures import ImageLimits
from crossdeploy.variants import Variant, benchmark_variants


@dataclass(frozen=True)
class Runtime:
    variant: Variant  # its artifact is the file served
    preprocessing: Preprocessing
    image_limits: ImageLimits

    def open_runner(self):
        """A new runner of the served file, on the runtime's own threads (every core)."""
        from crossdeploy.runtimes.base import ThreadSettings

        return self.variant.runner(ThreadSettings())

    @property
    def label(self) -> str:
        return f"{self.variant.framework} running {self.variant.artifact.name} ({self.variant.name})"


@dataclass(frozen=True)
class Target:
    repository: Path | None = None  # a SavedModel repository (<model>/<version>/)
    runtime: Runtime | None = None


def _table(params: dict[str, Any]) -> dict[str, Variant]:
    return {v.name: v for v in benchmark_variants(params)}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CrossdeployError(f"{path} is missing: {what}") from None
    except ValueError:
        raise CrossdeployError(f"{path} is not JSON: {what}") from None


def _runtime(variant: Variant, artifact: Path, preprocessing: dict[str, Any], params: dict[str, Any]) -> Target:
    if not artifact.exists():
        raise CrossdeployError(f"{artifact} is missing: run `dvc repro` to build {variant.name}.")
    return Target(
        runtime=Runtime(
            dataclasses.replace(variant, artifact=artifact),
            Preprocessing.from_dict(preprocessing["preprocessing"]),
            ImageLimits(**params["package"]["image_limits"]),
        )
    )


def _refuse(variant: Variant) -> None:
    kind = KINDS[variant.framework]
    if kind == "tensorrt":
        raise CrossdeployError(f"{variant.name} is a TensorRT plan, which Triton serves on its GPU: its bundle's README gives the command.")
    if variant.on_gpu:
        raise CrossdeployError(
            f"{variant.name} runs on a GPU; the embedded server serves the CPU runtimes (onnxruntime-*, openvino-*, tflite-*, torch-fp32)."
        )


def bundle_target(bundle: Path, params: dict[str, Any]) -> Target:
    """The deploy bundle's choice, from the files in the bundle (not the pipeline's paths)."""
    decision = _read_json(bundle / DECISION, "give --bundle the deploy stage's folder (models/deploy), after `dvc repro deploy`.")
    choice = decision.get("choice") if isinstance(decision, dict) else None
    if not choice:
        raise CrossdeployError(
            f"{bundle} deploys nothing: no variant met the SLO (its README says which came closest); change deploy.p99_ms or the variants."
        )
    if not isinstance(choice, dict) or not isinstance(choice.get("variant"), str):
        raise CrossdeployError(f"{bundle / DECISION} names no variant in its choice: re-run `dvc repro deploy`.")
    table = _table(params)
    if choice["variant"] not in table:
        raise CrossdeployError(
            f"{bundle} chose {choice['variant']}, which this pipeline's variant table has not: re-run `dvc repro deploy`."
        )
    variant = table[choice["variant"]]
    _refuse(variant)
    kind = KINDS[variant.framework]
    if kind == "tfserving":
        return Target(repository=bundle)
    name, version = params["model"]["name"], int(params["to_tensorflow"]["version"])
    artifact = bundle / name / str(version) / "model.xml" if kind == "openvino" else bundle / variant.artifact.name
    preprocessing = _read_json(bundle / PREPROCESSING, "the deploy stage writes it beside the model; re-run `dvc repro deploy`.")
    return _runtime(variant, artifact, preprocessing, params)


def variant_target(name: str, params: dict[str, Any]) -> Target:
    """One pipeline variant by name, from the pipeline's own paths."""
    table = _table(params)
    name = name.strip()
    if name not in table:
        raise CrossdeployError(f"unknown variant {name!r}; --variant takes one of {', '.join(sorted(table))}.")
    variant = table[name]
    _refuse(variant)
    if KINDS[variant.framework] == "tfserving":
        return Target()  # the package stage's repository, as without --variant
    preprocessing = _read_json(Path(params["paths"]["preprocessing"]), "run `dvc repro` first.")
    return _runtime(variant, variant.artifact, preprocessing, params)
