"""Serving signatures: floats (`serving_default`) and encoded images (`serving_bytes`).

REST JSON of raw floats is TF Serving's best-known bottleneck (about 150,000 numbers per 224 px
image), so the packaged SavedModel also takes JPEG/PNG bytes and does the pipeline's preprocessing in
the graph: resize the shorter side (bilinear, antialiased), center crop, round to 8-bit pixels as the
pipeline's PIL path does, scale and normalize.

Before any of that, the graph reads the image's width and height from its header (JPEG's frame
header, PNG's IHDR chunk) and refuses, with an InvalidArgumentError that names the param, an image
over `package.image_limits`: a 100-byte 1 x 20000 PNG would otherwise resize into 15 GB of floats, a
20000 x 20000 one decode into 1.2 GB. The decode waits on those checks, so TF Serving running the
same SavedModel is protected too. Only JPEG and PNG are taken: GIF and BMP, which TensorFlow's
decode_image also reads, are refused before decoding (a GIF's frame count, and so the memory its
decode takes, is not in its header).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from pathlib import Path

from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import BYTES_SIGNATURE, INPUT_NAME, SIGNATURE

# TF Serving's REST API base64-decodes {"b64": ...} values for inputs whose name ends in "_bytes".
BYTES_INPUT = "image_bytes"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a PNG's signature (8 bytes), then its IHDR chunk's length and type (8), width and height (big-endian, 4 each)
PNG_HEADER_BYTES = 24
#: a progressive JPEG carries about ten scans; each decodes the whole frame again, so a small file of
#: thousands of tiny scans takes seconds of CPU per image (libjpeg-turbo's djpeg -maxscans guards the same)
MAX_JPEG_SCANS = 100
# a JPEG's start-of-scan marker: inside entropy-coded data every 0xFF byte is followed by 0x00, so this
# pair appears only as a marker
JPEG_START_OF_SCAN = b"\xff\xda"


@dataclass(frozen=True)
class ImageLimits:
    """package.image_limits: the images serving_bytes refuses before decoding them. The defaults pass any
    ordinary photograph (48 MP phone, 45 MP DSLR, a 10:1 panorama)."""

    max_pixels: int = 50_000_000
    max_aspect_ratio: float = 20

    def __post_init__(self) -> None:
        if isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise CrossdeployError(f"package.image_limits.max_pixels must be a positive integer, got {self.max_pixels!r}.")
        ratio = self.max_aspect_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 1 <= ratio < float("inf"):
            raise CrossdeployError(f"package.image_limits.max_aspect_ratio must be a number of at least 1, got {ratio!r}.")


def image_size_checks(tf, encoded, limits: ImageLimits) -> list:
    """Assertions on one encoded image (scalar string tensor), from its header alone: a JPEG or PNG, at
    most limits.max_pixels pixels, its longer side at most limits.max_aspect_ratio times its shorter."""
    length = tf.strings.length(encoded)
    # zero-padded to its full length: substr past a string's end is an error, not a short read
    head = tf.strings.join([tf.strings.substr(encoded, 0, PNG_HEADER_BYTES), b"\0" * PNG_HEADER_BYTES])
    head = tf.strings.substr(head, 0, PNG_HEADER_BYTES)
    is_jpeg = tf.io.is_jpeg(encoded)
    is_png = (length >= PNG_HEADER_BYTES) & (tf.strings.substr(head, 0, 8) == PNG_SIGNATURE)
    is_png &= tf.strings.substr(head, 12, 4) == b"IHDR"
    known = tf.debugging.Assert(
        is_jpeg | is_png,
        [_text(tf, "image_bytes holds ", length, f" bytes that are not a JPEG or PNG image ({BYTES_SIGNATURE} takes JPEG and PNG)")],
    )
    # unsigned 32-bit PNG dimensions, in int64; anything else is 0 x 0, which passes the limits and fails `known`
    digits = tf.cast(tf.io.decode_raw(tf.strings.substr(head, 16, 8), tf.uint8), tf.int64)
    png_width = digits[0] * 2**24 + digits[1] * 2**16 + digits[2] * 2**8 + digits[3]
    png_height = digits[4] * 2**24 + digits[5] * 2**16 + digits[6] * 2**8 + digits[7]
    zero = tf.constant(0, tf.int64)
    height, width = tf.cond(
        is_jpeg,
        lambda: tuple(tf.unstack(tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int64))),
        lambda: (tf.where(is_png, png_height, zero), tf.where(is_png, png_width, zero)),
    )
    pixels = tf.cast(height, tf.float64) * tf.cast(width, tf.float64)  # up to 2**64: no int64 overflow
    ratio = tf.cast(tf.maximum(height, width), tf.float64) / tf.cast(tf.maximum(tf.minimum(height, width), 1), tf.float64)
    size = _text(tf, "image is ", width, " x ", height, " pixels (width x height): ")
    over_pixels = f" pixels exceed package.image_limits.max_pixels ({limits.max_pixels})"
    over_ratio = f" exceeds package.image_limits.max_aspect_ratio ({limits.max_aspect_ratio})"
    too_many = tf.debugging.Assert(pixels <= limits.max_pixels, [_text(tf, size, tf.strings.as_string(pixels, precision=0), over_pixels)])
    too_long = tf.debugging.Assert(
        ratio <= limits.max_aspect_ratio, [_text(tf, size, "its aspect ratio ", tf.strings.as_string(ratio, precision=1), over_ratio)]
    )
    scans = tf.cond(is_jpeg, lambda: tf.size(tf.strings.split(encoded, sep=JPEG_START_OF_SCAN), out_type=tf.int64) - 1, lambda: zero)
    too_slow = tf.debugging.Assert(
        scans <= MAX_JPEG_SCANS,
        [_text(tf, "image is a JPEG of ", scans, f" scans; more than {MAX_JPEG_SCANS} would take seconds of CPU each to decode")],
    )
    return [known, too_many, too_long, too_slow]


def _text(tf, *parts):
    """One string tensor from Python strings and string or integer tensors."""
    return tf.strings.join([p if isinstance(p, str) or p.dtype == tf.string else tf.strings.as_string(p) for p in parts])


def preprocess_encoded(tf, encoded, prep: Preprocessing, limits: ImageLimits | None = None):
    """One encoded image (scalar string tensor) -> normalized float32 HWC tensor; InvalidArgumentError for
    an image that is not a JPEG or PNG or is over `limits` (ImageLimits' defaults when None)."""
    with tf.control_dependencies(image_size_checks(tf, encoded, limits or ImageLimits())):
        # every decode reads this copy, which exists only once the checks have passed: nothing is allocated before
        encoded = tf.identity(encoded)
    # TensorFlow's default JPEG IDCT is the fast one (off by up to 5 grey levels); PIL uses the accurate one.
    # channels=3 expands grey and drops alpha, as PIL's convert("RGB") does
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(encoded, channels=3),
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


def export_with_bytes_signature(
    saved_model_dir: Path, export_dir: Path, prep: Preprocessing, *, limits: ImageLimits = ImageLimits()
) -> None:
    """The pipeline's SavedModel saved again at `export_dir` with the bytes signature added. The float
    signature is the loaded model's own (not wrapped again); the bytes one preprocesses in the graph,
    refusing images over `limits` (package.image_limits) before decoding them, then calls it."""
    from crossdeploy.tensorflow.env import import_tensorflow
    from crossdeploy.tensorflow.saved_model import save_saved_model

    tf = import_tensorflow()
    model = tf.saved_model.load(str(saved_model_dir))
    serve = model.signatures[SIGNATURE]
    size = prep.crop_size

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    def serve_bytes(image_bytes):
        images = tf.map_fn(
            lambda encoded: preprocess_encoded(tf, encoded, prep, limits),
            image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        )
        return serve(**{INPUT_NAME: images})

    save_saved_model(tf, model, export_dir, {SIGNATURE: serve, BYTES_SIGNATURE: serve_bytes})
