"""Serving signatures: floats (`serving_default`) and encoded images (`serving_bytes`).

REST JSON of raw floats is TF Serving's best-known bottleneck (about 150,000 numbers per 224 px
image), so the packaged SavedModel also takes JPEG/PNG bytes and does the pipeline's preprocessing in
the graph: resize the shorter side (bilinear, antialiased), center crop, round to 8-bit pixels as the
pipeline's PIL path does, scale and normalize.
"""

from __future__ import annotations

from pathlib import Path

from crossdeploy.layout import INPUT_NAME, OUTPUT_NAME, SIGNATURE
from crossdeploy.preprocessing import Preprocessing

BYTES_SIGNATURE = "serving_bytes"
# TF Serving's REST API base64-decodes {"b64": ...} values for inputs whose name ends in "_bytes".
BYTES_INPUT = "image_bytes"


def preprocess_encoded(tf, encoded, prep: Preprocessing):
    """One encoded image (scalar string tensor) -> normalized float32 HWC tensor."""
    # TensorFlow's default JPEG IDCT is the fast one (off by up to 5 grey levels); PIL uses the accurate one
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    short, long = tf.minimum(height, width), tf.maximum(height, width)
    # torchvision: the shorter side becomes resize_size, the longer one is truncated, not rounded
    new_long = tf.cast(tf.floor(prep.resize_size * tf.cast(long, tf.float64) / tf.cast(short, tf.float64)), tf.int32)
    new_height = tf.where(height <= width, prep.resize_size, new_long)
    new_width = tf.where(height <= width, new_long, prep.resize_size)
    image = tf.image.resize(image, tf.stack([new_height, new_width]), method=prep.interpolation, antialias=True)
    image = tf.round(tf.clip_by_value(image, 0.0, 255.0))
    top = tf.cast(tf.round((new_height - prep.crop_size) / 2), tf.int32)
    left = tf.cast(tf.round((new_width - prep.crop_size) / 2), tf.int32)
    image = image[top : top + prep.crop_size, left : left + prep.crop_size, :]
    image.set_shape([prep.crop_size, prep.crop_size, 3])
    return (image / 255.0 - tf.constant(prep.mean)) / tf.constant(prep.std)


def export_with_bytes_signature(saved_model_dir: Path, export_dir: Path, prep: Preprocessing) -> None:
    """Re-export the pipeline's SavedModel with both signatures; the float one is unchanged."""
    from crossdeploy.tensorflow_env import import_tensorflow

    tf = import_tensorflow()
    loaded = tf.saved_model.load(str(saved_model_dir))
    size = prep.crop_size

    class ServingModule(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)])
        def serve(self, images):
            return {OUTPUT_NAME: self.model.signatures[SIGNATURE](**{INPUT_NAME: images})[OUTPUT_NAME]}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
        def serve_bytes(self, image_bytes):
            images = tf.map_fn(
                lambda encoded: preprocess_encoded(tf, encoded, prep),
                image_bytes,
                fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
            )
            return self.serve(images)

    module = ServingModule(loaded)
    tf.saved_model.save(module, str(export_dir), signatures={SIGNATURE: module.serve, BYTES_SIGNATURE: module.serve_bytes})
