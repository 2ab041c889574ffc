"""KServe InferenceService manifests, checked against KServe's own InferenceService model."""

import yaml

from crossdeploy.serving.manifests import schema_errors, write_manifests
from tests.conftest import KSERVE


def test_manifests_follow_the_inference_service_schema(tmp_path):
    write_manifests(tmp_path, "resnet50", KSERVE)
    tfserving = yaml.safe_load((tmp_path / "inferenceservice-tfserving.yaml").read_text())
    assert schema_errors(tfserving) == []
    assert (tfserving["apiVersion"], tfserving["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    predictor = tfserving["spec"]["predictor"]["tensorflow"]
    assert tfserving["metadata"]["name"] == "resnet50" and predictor["storageUri"] == KSERVE["storage_uri"]
    assert "--batching_parameters_file=/mnt/models/batching_parameters.txt" in predictor["args"]
    assert predictor["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}

    triton = yaml.safe_load((tmp_path / "inferenceservice-triton.yaml").read_text())
    assert schema_errors(triton) == []
    assert triton["metadata"]["name"] == "resnet50-tensorrt"
    assert triton["spec"]["predictor"]["triton"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_fields_outside_the_schema_are_named(tmp_path):
    write_manifests(tmp_path, "resnet50", KSERVE)
    manifest = yaml.safe_load((tmp_path / "inferenceservice-tfserving.yaml").read_text())
    manifest["spec"]["predictor"]["tensorflow"]["storageURI"] = "typo"
    manifest["spec"]["predictor"]["tensorflow"]["resources"]["limit"] = {}
    assert schema_errors(manifest) == [
        ".spec.predictor.tensorflow.storageURI: not a field of V1beta1TFServingSpec",
        ".spec.predictor.tensorflow.resources.limit: not a field of V1ResourceRequirements",
    ]


def test_a_name_kserve_cannot_take_is_refused_with_the_name_to_set(tmp_path):
    import pytest

    from crossdeploy.errors import CrossdeployError

    for bad, fix in (("Mobilenet_V3", "mobilenet-v3"), ("3d-net", "model-3d-net"), ("x" * 60, "x" * 54)):
        with pytest.raises(CrossdeployError, match=f"model.name '{bad}'.*set model.name: {fix}\\.$"):
            write_manifests(tmp_path / bad[:8], bad, KSERVE)
        assert not (tmp_path / bad[:8]).exists()
    write_manifests(tmp_path / "ok", "mobilenet-v3-large", KSERVE)


def test_the_default_name_follows_the_model_and_fits_kserve():
    from crossdeploy.compose import compose, default_model_name
    from crossdeploy.serving.manifests import check_service_name
    from tests.conftest import ROOT

    params = compose(["model.arch=mobilenet_v3_large"], config_dir=ROOT / "conf")
    assert params["model"]["name"] == "mobilenet-v3-large"
    assert params["package"]["kserve"]["storage_uri"].endswith("/serving/mobilenet-v3-large")
    assert compose(["model.arch=mobilenet_v3_large", "model.name=mine"], config_dir=ROOT / "conf")["model"]["name"] == "mine"
    assert compose(["model.checkpoint=/data/Run_7.best.pt"], config_dir=ROOT / "conf")["model"]["name"] == "run-7-best"
    for arch in ("resnet50", "efficientnet_v2_s", "regnet_y_400mf", "shufflenet_v2_x1_0", "vit_b_16", "swin_v2_t", "maxvit_t"):
        check_service_name(default_model_name(arch, None))
