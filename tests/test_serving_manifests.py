"""KServe InferenceService manifests, checked against KServe's own InferenceService model."""

import yaml

from crossdeploy.serving.manifests import schema_errors, write_manifests

CFG = {
    "storage_uri": "s3://bucket/serving/resnet50",
    "tfserving_runtime_version": "2.21.0",
    "resources": {"cpu": "2", "memory": "4Gi"},
    "triton_storage_uri": "s3://bucket/triton",
    "triton_runtime_version": "25.10-py3",
}


def test_manifests_follow_the_inference_service_schema(tmp_path):
    write_manifests(tmp_path, "resnet50", CFG)
    tfserving = yaml.safe_load((tmp_path / "inferenceservice-tfserving.yaml").read_text())
    assert schema_errors(tfserving) == []
    assert (tfserving["apiVersion"], tfserving["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = tfserving["spec"]["predictor"]["tensorflow"]
    assert tfserving["metadata"]["name"] == "resnet50" and predictor["storageUri"] == CFG["storage_uri"]
    assert "--batching_parameters_file=/mnt/models/batching_parameters.txt" in predictor["args"]
    assert predictor["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}

    triton = yaml.safe_load((tmp_path / "inferenceservice-triton.yaml").read_text())
    assert schema_errors(triton) == []
    assert triton["metadata"]["name"] == "resnet50-tensorrt"
    assert triton["spec"]["predictor"]["triton"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_fields_outside_the_schema_are_named(tmp_path):
    write_manifests(tmp_path, "resnet50", CFG)
    manifest = yaml.safe_load((tmp_path / "inferenceservice-tfserving.yaml").read_text())
    manifest["spec"]["predictor"]["tensorflow"]["storageURI"] = "typo"
    manifest["spec"]["predictor"]["tensorflow"]["resources"]["limit"] = {}
    assert schema_errors(manifest) == [
        ".spec.predictor.tensorflow.storageURI: not a field of V1beta1TFServingSpec",
        ".spec.predictor.tensorflow.resources.limit: not a field of V1ResourceRequirements",
    ]
