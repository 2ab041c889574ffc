"""package.image_limits: the serving_bytes graph refuses, from the header alone, an image too large or
too long before decoding it, so TF Serving running the same SavedModel is protected too."""

import io
import json
import os
import re
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from crossdeploy.data.datasets import sample_photograph_paths
from crossdeploy.errors import CrossdeployError
from crossdeploy.layout import BYTES_SIGNATURE
from crossdeploy.serving.signatures import BYTES_INPUT, ImageLimits, export_with_bytes_signature

LIMITS = ImageLimits(max_pixels=100_000, max_aspect_ratio=4)
#: the planted defect: the same graph with limits that refuse nothing
NO_LIMITS = ImageLimits(max_pixels=2**62, max_aspect_ratio=1e9)


@pytest.fixture(scope="module")
def limited(tiny_saved_model, tiny_source, tmp_path_factory):
    """(SavedModel directory with LIMITS, one with NO_LIMITS) of the tiny model."""
    root = tmp_path_factory.mktemp("limits")
    for name, limits in (("limited", LIMITS), ("unlimited", NO_LIMITS)):
        export_with_bytes_signature(tiny_saved_model, root / name / "1", tiny_source[1].preprocessing, limits=limits)
    return root / "limited" / "1", root / "unlimited" / "1"


@pytest.fixture(scope="module")
def bytes_signatures(limited):
    import tensorflow as tf

    return tuple(tf.saved_model.load(str(path)).signatures[BYTES_SIGNATURE] for path in limited)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def photograph(size: tuple[int, int]) -> Image.Image:
    return Image.open(next(p for p in sample_photograph_paths() if p.stem == "chelsea")).convert("RGB").resize(size)


def run(signature, *encoded: bytes) -> np.ndarray:
    import tensorflow as tf

    return signature(**{BYTES_INPUT: tf.constant(list(encoded))})["logits"].numpy()


def refusal(signature, encoded: bytes) -> str:
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        run(signature, encoded)
    return caught.value.message


# in its own interpreter, whose peak RSS (VmHWM) is reset to the current RSS before each request
MEASURE = textwrap.dedent(
    """
    import io, json, re, sys
    import tensorflow as tf
    from PIL import Image

    def peak_mib():
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

    wide = open(sys.argv[3], "rb").read()
    normal = io.BytesIO()
    Image.new("RGB", (80, 60), (120, 80, 40)).save(normal, format="PNG")
    signatures = [tf.saved_model.load(path).signatures["serving_bytes"] for path in sys.argv[1:3]]
    for signature in signatures:  # warm: load, trace and allocate for an ordinary image first
        signature(image_bytes=tf.constant([normal.getvalue()] * 2))
    result = {}
    for name, signature in zip(("limited", "unlimited"), signatures):
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # Linux 4.0+: the peak becomes the current RSS
        before = peak_mib()
        try:
            signature(image_bytes=tf.constant([wide]))
            result[name] = {"error": None}
        except tf.errors.InvalidArgumentError as exc:
            result[name] = {"error": exc.message}
        result[name]["peak_growth_mib"] = peak_mib() - before
    print(json.dumps(result))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="resets and reads the peak RSS through Linux's /proc/self")
def test_a_long_image_is_refused_before_it_is_decoded_or_resized(limited, tmp_path, tiny_source):
    # 1 x 2000 pixels, a few dozen bytes of PNG: its shorter side resized to 73 px makes 73 x 146000 x 3 floats (128 MiB)
    wide = tmp_path / "wide.png"
    wide.write_bytes(encode(Image.new("RGB", (2000, 1), (200, 30, 30))))
    resize = tiny_source[1].preprocessing.resize_size
    resized_mib = resize * (resize * 2000) * 3 * 4 / 2**20
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(limited[0]), str(limited[1]), str(wide)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "image is 2000 x 1 pixels (width x height): its aspect ratio 2000.0 exceeds package.image_limits.max_aspect_ratio (4)" in (
        result["limited"]["error"] or ""
    )
    # the planted defect, no limit: the same request decodes and resizes, and the peak shows it
    assert result["unlimited"]["error"] is None
    assert result["unlimited"]["peak_growth_mib"] > 0.75 * resized_mib, result
    assert result["limited"]["peak_growth_mib"] < 0.1 * resized_mib, result


def test_an_image_over_max_pixels_is_refused_naming_the_param(bytes_signatures):
    limited, unlimited = bytes_signatures
    large = photograph((400, 300))  # 120,000 pixels, aspect 1.33
    for fmt in ("PNG", "JPEG"):  # PNG: read from IHDR; JPEG: tf.io.extract_jpeg_shape
        message = refusal(limited, encode(large, fmt))
        assert "image is 400 x 300 pixels (width x height): 120000 pixels exceed package.image_limits.max_pixels (100000)" in message
        assert run(unlimited, encode(large, fmt)).shape == (1, 10)  # the planted defect: no limit, no refusal
        assert run(limited, encode(photograph((300, 300)), fmt)).shape == (1, 10)  # 90,000 pixels pass
    # only the header is read: a PNG whose IHDR claims 20000 x 20000 is refused before its (garbage) body is
    forged = bytearray(encode(photograph((8, 8))))
    forged[16:24] = struct.pack(">II", 20000, 20000)
    message = refusal(limited, bytes(forged))
    assert "image is 20000 x 20000 pixels (width x height): 400000000 pixels exceed package.image_limits.max_pixels (100000)" in message
    assert "package.image_limits" not in refusal(unlimited, bytes(forged))  # without a limit, libpng's own error


def test_one_image_over_a_limit_refuses_the_request(bytes_signatures):
    limited, _ = bytes_signatures
    ok, wide = encode(photograph((200, 100))), encode(photograph((500, 100)))  # aspect 2, then 5
    assert run(limited, ok, ok).shape == (2, 10)
    assert "its aspect ratio 5.0 exceeds package.image_limits.max_aspect_ratio (4)" in refusal(limited, wide)
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError, match="max_aspect_ratio"):
        run(limited, ok, wide)


@pytest.mark.parametrize(
    "name,cut,message",
    [
        ("empty", 0, "image_bytes holds 0 bytes that are not a JPEG or PNG image (serving_bytes takes JPEG and PNG)"),
        ("PNG signature only", 8, "image_bytes holds 8 bytes that are not a JPEG or PNG image"),
        ("header cut in IHDR", 20, "image_bytes holds 20 bytes that are not a JPEG or PNG image"),
        ("body cut", 100, "Invalid PNG"),  # the header passes; libpng refuses the rest
    ],
)
def test_empty_and_truncated_images_are_refused_clearly(bytes_signatures, name, cut, message):
    limited, _ = bytes_signatures
    complete = encode(photograph((120, 90)))
    assert run(limited, complete).shape == (1, 10)  # the same file, whole, is served
    assert message in refusal(limited, complete[:cut])


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP"])
def test_formats_other_than_jpeg_and_png_are_refused_by_name(bytes_signatures, fmt):
    limited, _ = bytes_signatures
    assert "not a JPEG or PNG image (serving_bytes takes JPEG and PNG)" in refusal(limited, encode(photograph((40, 30)), fmt))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P"])
def test_grey_alpha_and_palette_pngs_are_read_as_pil_converts_them_to_rgb(bytes_signatures, mode):
    limited, _ = bytes_signatures
    source = photograph((160, 120))
    if mode in ("LA", "RGBA"):  # an alpha channel that varies, so dropping it and compositing it differ
        source.putalpha(Image.linear_gradient("L").resize(source.size))
    image = source.convert(mode)
    as_rgb = run(limited, encode(image.convert("RGB")))[0]
    np.testing.assert_allclose(run(limited, encode(image))[0], as_rgb, rtol=0, atol=1e-6)
    # the planted defect: a different reading (the colour original, or alpha composited on white) is told apart
    other = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA")) if "A" in mode else photograph((160, 120))
    assert np.abs(run(limited, encode(other.convert("RGB")))[0] - as_rgb).max() > 1e-3


@pytest.mark.parametrize(
    "limits,message",
    [
        ({"max_pixels": 0}, "package.image_limits.max_pixels must be a positive integer, got 0"),
        ({"max_pixels": 1.5e7}, "package.image_limits.max_pixels must be a positive integer, got 15000000.0"),
        ({"max_aspect_ratio": 0.5}, "package.image_limits.max_aspect_ratio must be a number of at least 1, got 0.5"),
        ({"max_aspect_ratio": "20"}, "package.image_limits.max_aspect_ratio must be a number of at least 1, got '20'"),
    ],
)
def test_bad_limits_name_the_param(limits, message):
    with pytest.raises(CrossdeployError, match=re.escape(message)):
        ImageLimits(**limits)
