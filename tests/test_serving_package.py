"""The TF Serving repository: both serving signatures, models.config and batching parameters."""

import io

import numpy as np
import pytest
from PIL import Image

from crossdeploy.data.datasets import sample_photograph_paths
from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import BYTES_SIGNATURE
from crossdeploy.serving.repository import BatchingParameters, models_config, write_repository_files
from crossdeploy.serving.signatures import BYTES_INPUT, export_with_bytes_signature
from crossdeploy.validation.parity import compare_logits

BATCHING = BatchingParameters(max_batch_size=32, batch_timeout_micros=2000, num_batch_threads=2, max_enqueued_batches=100)


@pytest.fixture(scope="module")
def packaged(tiny_saved_model, tiny_source, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp("serving") / "tiny" / "1"
    export_with_bytes_signature(tiny_saved_model, export_dir, tiny_source[1].preprocessing)
    return export_dir


def encoded(path, fmt):
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


# the tiny model has random weights, which amplify the one grey level a resize may round differently
# (cosine about 0.998); a wrong channel order, crop or normalization lands far below these bounds
@pytest.mark.parametrize("fmt,min_cosine", [("PNG", 0.99), ("JPEG", 0.99)])
def test_bytes_signature_preprocesses_like_the_pipeline(packaged, tiny_source, fmt, min_cosine):
    import tensorflow as tf

    from crossdeploy.data.preprocessing import normalize

    prep = tiny_source[1].preprocessing
    # landscape, portrait and square photographs exercise the shorter-side resize and the crop
    paths = [p for p in sample_photograph_paths() if p.stem in ("chelsea", "coffee", "astronaut", "rocket")]
    assert {Image.open(p).size[0] > Image.open(p).size[1] for p in paths} == {True, False}
    signatures = tf.saved_model.load(str(packaged)).signatures
    pil_pixels = np.stack([prep.crop(Image.open(io.BytesIO(encoded(p, fmt)))) for p in paths])
    expected = signatures["serving_default"](images=tf.constant(normalize(pil_pixels, prep.mean, prep.std, "NHWC")))["logits"]
    got = signatures[BYTES_SIGNATURE](**{BYTES_INPUT: tf.constant([encoded(p, fmt) for p in paths])})["logits"]
    metrics = compare_logits(expected.numpy(), got.numpy())
    assert metrics["cosine_min"] >= min_cosine and metrics["max_abs_err_rel"] < 5e-2


def test_float_signature_is_the_pipeline_savedmodel(packaged, tiny_saved_model, tiny_images):
    import tensorflow as tf

    x = tf.constant(tiny_images[1].tensors("NHWC"))
    before = tf.saved_model.load(str(tiny_saved_model)).signatures["serving_default"](images=x)["logits"]
    after = tf.saved_model.load(str(packaged)).signatures["serving_default"](images=x)["logits"]
    np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-6, atol=1e-6)


def test_repository_files_parse_as_tf_serving_config(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    write_repository_files(tmp_path, "resnet50", "/models", BATCHING)
    config = text_format.Parse((tmp_path / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("resnet50", "/models/resnet50", "tensorflow")
    assert (tmp_path / "batching_parameters.txt").read_text().splitlines() == [
        "max_batch_size { value: 32 }",
        "batch_timeout_micros { value: 2000 }",
        "num_batch_threads { value: 2 }",
        "max_enqueued_batches { value: 100 }",
    ]


def test_bad_packaging_params_name_the_param(tmp_path):
    with pytest.raises(CrossdeployError, match="package.base_path 'models' must be absolute"):
        write_repository_files(tmp_path, "resnet50", "models", BATCHING)
    with pytest.raises(CrossdeployError, match="package.batching.max_batch_size must be a positive integer"):
        BatchingParameters(max_batch_size=0, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1)
    assert 'base_path: "/srv/models/m"' in models_config("m", "/srv/models")
