"""KServe InferenceService manifests for scaling out on Kubernetes: the tensorflow predictor (TF
Serving itself, serving the packaged model) and a Triton predictor slot for the TensorRT plan.

Built from KServe's own API models, so they follow the InferenceService schema by construction.
"""

from __future__ import annotations

import re
from typing import Any

from crossdeploy.errors import CrossdeployError

API_VERSION = "serving.kserve.io/v1beta1"
CONTAINER = "kserve-container"  # the name KServe's defaulter would give the predictor container
# KServe's storage initializer downloads storageUri here inside the predictor pod
MOUNT = "/mnt/models"


# KServe names the served model after its InferenceService, a Kubernetes DNS-1035 label; the Triton
# service adds "-tensorrt" (9 characters) to the 63 a label may have.
SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,52}[a-z0-9])?")


def check_service_name(name: str) -> None:
    """A model.name KServe cannot take would serve under another name there than in TF Serving."""
    if not SERVICE_NAME.fullmatch(name):
        from crossdeploy.compose import default_model_name

        raise CrossdeployError(
            f"model.name '{name}' cannot name a KServe InferenceService (lowercase letters, digits and '-', "
            f"starting with a letter, at most 54 characters); set model.name: {default_model_name(name, None)}."
        )


def _isvc(name: str, predictor) -> dict[str, Any]:
    import kserve
    from kubernetes.client import V1ObjectMeta

    service = kserve.V1beta1InferenceService(
        api_version=API_VERSION,
        kind="InferenceService",
        metadata=V1ObjectMeta(name=name),
        spec=kserve.V1beta1InferenceServiceSpec(predictor=predictor),
    )
    return kserve.ApiClient().sanitize_for_serialization(service)


def tfserving_service(name: str, storage_uri: str, runtime_version: str, resources: dict[str, Any]) -> dict[str, Any]:
    import kserve
    from kubernetes.client import V1ResourceRequirements

    tensorflow = kserve.V1beta1TFServingSpec(
        name=CONTAINER,
        storage_uri=storage_uri,
        runtime_version=runtime_version,
        # the model base path carries a copy of batching_parameters.txt beside its version folders
        args=["--enable_batching=true", f"--batching_parameters_file={MOUNT}/batching_parameters.txt"],
        resources=V1ResourceRequirements(requests=resources, limits=resources),
    )
    return _isvc(name, kserve.V1beta1PredictorSpec(min_replicas=1, tensorflow=tensorflow))


def triton_service(name: str, storage_uri: str, runtime_version: str) -> dict[str, Any]:
    """A Triton predictor for a model repository holding the TensorRT plan (built by the GPU stage)."""
    import kserve
    from kubernetes.client import V1ResourceRequirements

    gpu = {"nvidia.com/gpu": "1"}
    triton = kserve.V1beta1TritonSpec(
        name=CONTAINER,
        storage_uri=storage_uri,
        runtime_version=runtime_version,
        resources=V1ResourceRequirements(requests=gpu, limits=gpu),
    )
    return _isvc(f"{name}-tensorrt", kserve.V1beta1PredictorSpec(min_replicas=1, triton=triton))


def _model_class(type_name: str):
    import kserve.models
    import kubernetes.client.models

    return getattr(kserve.models, type_name, None) or getattr(kubernetes.client.models, type_name)


def schema_errors(data: Any, type_name: str = "V1beta1InferenceService", where: str = "") -> list[str]:
    """Fields of `data` that KServe's (and Kubernetes') OpenAPI models do not define, by JSON path."""
    if type_name.startswith("list["):
        return [e for i, item in enumerate(data) for e in schema_errors(item, type_name[5:-1], f"{where}[{i}]")]
    if type_name.startswith("dict("):
        value_type = type_name[5:-1].split(", ", 1)[1]
        return [e for k, v in data.items() for e in schema_errors(v, value_type, f"{where}.{k}")]
    if not type_name.startswith("V1"):
        return []  # str, int, bool, object: leaves
    model = _model_class(type_name)
    by_json_key = {json_key: model.openapi_types[attr] for attr, json_key in model.attribute_map.items()}
    if not isinstance(data, dict):
        return [f"{where or '.'}: expected an object ({type_name})"]
    errors = [f"{where}.{key}: not a field of {type_name}" for key in data if key not in by_json_key]
    return errors + [
        e for key, value in data.items() if key in by_json_key for e in schema_errors(value, by_json_key[key], f"{where}.{key}")
    ]


def write_manifests(directory, name: str, cfg: dict[str, Any]) -> None:
    import yaml

    check_service_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    services = {
        "inferenceservice-tfserving.yaml": tfserving_service(
            name, cfg["storage_uri"], str(cfg["tfserving_runtime_version"]), cfg["resources"]
        ),
        "inferenceservice-triton.yaml": triton_service(name, cfg["triton_storage_uri"], str(cfg["triton_runtime_version"])),
    }
    for file_name, service in services.items():
        errors = schema_errors(service)
        if errors:  # a KServe upgrade renamed a field: fail here, not at kubectl apply
            raise ValueError(f"{file_name} does not follow the InferenceService schema: {'; '.join(errors)}")
        (directory / file_name).write_text(yaml.safe_dump(service, sort_keys=False))
