"""JPEG/PNG files to the model's input for a runtime that cannot run the SavedModel's graph: the same
limits as serving_bytes (package.image_limits and the JPEG scan bound, read from the header before
anything is decoded, with the same sentences) and the data stage's own preprocessing (PIL's decode,
torchvision's resize and crop: data/preprocessing.py), so the served logits match the validated ones."""

from __future__ import annotations

import io
import warnings

import numpy as np

from crossdeploy.data.preprocessing import Preprocessing, normalize
from crossdeploy.serving.rest_payload import RequestError
from crossdeploy.serving.signatures import BYTES_INPUT, JPEG_START_OF_SCAN, MAX_JPEG_SCANS, ImageLimits

FORMATS = ("JPEG", "PNG")


class ImageDecoder:
    def __init__(self, preprocessing: Preprocessing, limits: ImageLimits):
        # torchvision (Preprocessing.crop) is loaded now, before the server's gRPC API loads TensorFlow: imported
        # after TensorFlow 2.21 in one process, torchvision 0.29's import crashes it (a segmentation fault)
        import torchvision.transforms.functional  # noqa: F401

        self.preprocessing, self.limits = preprocessing, limits

    def pixels(self, data: bytes) -> np.ndarray:
        """One encoded image -> uint8 HWC pixels of crop_size, or RequestError naming the limit or the defect."""
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        except Image.DecompressionBombError:  # PIL's own bound (twice its MAX_IMAGE_PIXELS), read from the header too
            raise RequestError(
                f"image is over {2 * Image.MAX_IMAGE_PIXELS} pixels: it exceeds package.image_limits.max_pixels ({self.limits.max_pixels})"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise RequestError(
                f"{BYTES_INPUT} holds {len(data)} bytes that are not a JPEG or PNG image (serving_bytes takes JPEG and PNG)."
            ) from None
        width, height = image.size
        size = f"image is {width} x {height} pixels (width x height): "
        if width * height > self.limits.max_pixels:
            raise RequestError(f"{size}{width * height} pixels exceed package.image_limits.max_pixels ({self.limits.max_pixels})")
        ratio = max(width, height) / max(min(width, height), 1)
        if ratio > self.limits.max_aspect_ratio:
            raise RequestError(
                f"{size}its aspect ratio {ratio:.1f} exceeds package.image_limits.max_aspect_ratio ({self.limits.max_aspect_ratio})"
            )
        # PIL reports a JPEG with a multi-picture header (many phone photographs) as MPO: a JPEG all the same
        if image.format in ("JPEG", "MPO") and (scans := data.count(JPEG_START_OF_SCAN)) > MAX_JPEG_SCANS:
            raise RequestError(f"image is a JPEG of {scans} scans; more than {MAX_JPEG_SCANS} would take seconds of CPU each to decode")
        try:
            with warnings.catch_warnings():
                # the limits above are the bound; PIL's own bomb warning would only repeat it in the log
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
                return self.preprocessing.crop(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise RequestError(
                "an input was rejected by the model: an encoded image that is not a complete JPEG or PNG file, or a value it cannot take."
            ) from None

    def tensors(self, encoded: np.ndarray, layout: str) -> np.ndarray:
        """A 1-D object array of encoded images -> the normalized float32 batch in `layout`."""
        batch = np.stack([self.pixels(bytes(data)) for data in encoded])
        return normalize(batch, self.preprocessing.mean, self.preprocessing.std, layout)
