"""Calibration and evaluation image sets: disjoint, deterministic, stored as preprocessed uint8 pixels.

The evaluation set also keeps each image encoded (JPEG or PNG) as a client would send it to a server
with an encoded-image signature; its pixels are decoded from those very bytes, so the served bytes
path and the in-process variants see the same picture.

The default draws on the real photographs that ship inside scikit-image's wheel, so nothing is
downloaded; the source photographs are split between the two sets before any crop is taken, so an
evaluation image is never a crop of a calibration photograph. A user's ImageFolder directory
(one sub-folder per class) replaces them; where class names map to the model's labels the
evaluation set carries labels and validate reports accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossdeploy.data.preprocessing import Preprocessing, normalize
from crossdeploy.errors import CrossdeployError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# Photographs (not synthetic patterns) in skimage/data; grayscale ones are expanded to RGB.
SAMPLE_PHOTOGRAPHS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
NO_LABEL = -1


@dataclass(frozen=True)
class DataSettings:
    """The data section and the model's preprocessing: which images, how many in each set, prepared how."""

    calibration_size: int
    evaluation_size: int
    preprocessing: Preprocessing
    seed: int = 0
    images: str | None = None  # an ImageFolder directory; None: scikit-image's photographs
    categories: tuple[str, ...] | None = None  # the weights' category names, which label folders by name
    num_classes: int = 0

    def __post_init__(self) -> None:
        if self.calibration_size < 1 or self.evaluation_size < 1:
            raise CrossdeployError("data.calibration_size and data.evaluation_size must both be at least 1.")


@dataclass
class ImageSet:
    """Preprocessed pixels plus where each came from; labels are NO_LABEL where unknown."""

    pixels: np.ndarray  # uint8, N x H x W x 3
    labels: np.ndarray  # int64, N
    sources: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    encoded: list[bytes] | None = None  # the evaluation set's images as files, before resize and crop
    _tensors: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def has_labels(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def tensors(self, layout: str = "NCHW") -> np.ndarray:
        """Normalized once per layout and shared (the benchmark asks per cell): do not modify the result."""
        if layout not in self._tensors:
            self._tensors[layout] = normalize(self.pixels, self.mean, self.std, layout)
        return self._tensors[layout]

    def save(self, path: Path) -> None:
        arrays = {
            "pixels": self.pixels,
            "labels": self.labels,
            "sources": np.asarray(self.sources),
            "mean": np.asarray(self.mean, dtype=np.float64),
            "std": np.asarray(self.std, dtype=np.float64),
        }
        if self.encoded is not None:
            # one flat buffer and offsets: npz without pickles cannot hold a list of byte strings
            arrays["encoded"] = np.frombuffer(b"".join(self.encoded), dtype=np.uint8)
            arrays["encoded_offsets"] = np.cumsum([0, *map(len, self.encoded)], dtype=np.int64)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ImageSet":
        with np.load(path, allow_pickle=False) as data:
            return cls(
                pixels=data["pixels"],
                labels=data["labels"],
                sources=[str(s) for s in data["sources"]],
                mean=tuple(data["mean"].tolist()),
                std=tuple(data["std"].tolist()),
                encoded=_split(data["encoded"], data["encoded_offsets"]) if "encoded" in data else None,
            )


def _split(buffer: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    return [buffer[start:end].tobytes() for start, end in zip(offsets[:-1], offsets[1:])]


def encode_image(image) -> bytes:
    """A PIL image as the JPEG a client would upload: quality 90, and 4:4:4 because chroma upsampling
    is where JPEG decoders (PIL's, TensorFlow's) disagree."""
    import io

    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90, subsampling=0)
    return out.getvalue()


def decode_image(encoded: bytes):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as image:
        return image.convert("RGB")


def sample_photograph_paths() -> list[Path]:
    try:
        root = importlib.resources.files("skimage") / "data"
    except ModuleNotFoundError:
        raise CrossdeployError(
            "scikit-image is not installed; install crossdeploy's dependencies or set data.images to an image folder."
        ) from None
    return [Path(str(root / name)) for name in SAMPLE_PHOTOGRAPHS if (root / name).is_file()]


def _rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _random_view(image, rng: np.random.Generator):
    """A deterministic random-resized-crop and optional flip of a PIL image."""
    from PIL import Image

    width, height = image.size
    scale = rng.uniform(0.3, 1.0)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w = int(round(min(width, np.sqrt(scale * width * height * ratio))))
    h = int(round(min(height, np.sqrt(scale * width * height / ratio))))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    view = image.crop((left, top, left + w, top + h))
    if rng.random() < 0.5:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return view


def expand_photographs(paths: list[Path], count: int, settings: DataSettings, split: str, keep_encoded: bool = False) -> ImageSet:
    """`count` images from `paths`: each photograph once as it is, then deterministic crops and flips.

    keep_encoded: store each image as a JPEG and take its pixels from that JPEG.
    """
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    pixels, sources, encoded = [], [], []
    for k in range(count):
        index = k % len(images)
        image = images[index]
        if k >= len(images):
            image = _random_view(image, _rng(settings.seed, split, k))
        if keep_encoded:
            encoded.append(encode_image(image))
            image = decode_image(encoded[-1])
        pixels.append(settings.preprocessing.crop(image))
        sources.append(f"{paths[index].name}#{k}")
    return ImageSet(
        pixels=np.stack(pixels),
        labels=np.full(count, NO_LABEL, dtype=np.int64),
        sources=sources,
        mean=settings.preprocessing.mean,
        std=settings.preprocessing.std,
        encoded=encoded if keep_encoded else None,
    )


def default_image_sets(settings: DataSettings) -> tuple[ImageSet, ImageSet]:
    paths = sample_photograph_paths()
    # Every third photograph is held out for evaluation before anything is cropped.
    evaluation_paths = paths[2::3]
    calibration_paths = [p for p in paths if p not in evaluation_paths]
    return (
        expand_photographs(calibration_paths, settings.calibration_size, settings, "calibration"),
        expand_photographs(evaluation_paths, settings.evaluation_size, settings, "evaluation", keep_encoded=True),
    )


def _normalize_class_name(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip().lower()


def class_index_map(class_names: list[str], categories: Sequence[str] | None, num_classes: int) -> dict[str, int] | None:
    """Map ImageFolder class names to the model's output indices, or None where they cannot be mapped.

    Names match the weights' category names (case and '_' insensitive); otherwise, with exactly
    num_classes folders, torchvision ImageFolder's order: folder names sorted as strings -> 0..N-1.
    Folders named with digits follow that order too ('10' before '2'), since a model trained with
    ImageFolder on them learned exactly that order, not the digits' values. Fewer folders than classes
    leave no way to tell which indices they stand for, so they get no labels.
    """
    if categories:
        lookup = {_normalize_class_name(c): i for i, c in enumerate(categories)}
        mapped = {name: lookup.get(_normalize_class_name(name)) for name in class_names}
        if all(v is not None for v in mapped.values()):
            return mapped
    if len(class_names) == num_classes:
        return {n: i for i, n in enumerate(sorted(class_names))}
    return None


def folder_image_sets(settings: DataSettings) -> tuple[ImageSet, ImageSet]:
    from PIL import Image

    root, calibration_size, preprocessing = Path(settings.images), settings.calibration_size, settings.preprocessing
    if not root.is_dir():
        raise CrossdeployError(
            f"data.images {root} is not a directory; set data.images to an ImageFolder directory, or null for the built-in photographs."
        )
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[tuple[Path, str | None]] = []
    for class_dir in class_dirs:
        files += [(f, class_dir.name) for f in sorted(class_dir.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
    files += [(f, None) for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise CrossdeployError(
            f"data.images {root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); add images in one sub-folder per class."
        )
    needed = calibration_size + settings.evaluation_size
    if needed > len(files):
        raise CrossdeployError(
            f"data.images {root} has {len(files)} images but data.calibration_size + data.evaluation_size is {needed}, "
            f"so the two sets would overlap; lower them to at most {len(files)} together."
        )

    labelled = all(label is not None for _, label in files)
    # every class folder counts, as in ImageFolder, so an empty one cannot shift the indices after it;
    # hidden folders (.ipynb_checkpoints) are not classes here, where ImageFolder would count them
    index = class_index_map([d.name for d in class_dirs], settings.categories, settings.num_classes) if labelled else None
    order = _rng(settings.seed, "folder").permutation(len(files))
    chosen = [files[i] for i in order[:needed]]

    def build(entries, keep_encoded: bool) -> ImageSet:
        pixels, encoded = [], []
        for path, _ in entries:
            try:
                with Image.open(path) as image:
                    if keep_encoded:
                        encoded.append(_as_served(path, image))
                    pixels.append(preprocessing.crop(image))
            except OSError as exc:
                raise CrossdeployError(f"{path} in data.images is not a readable image ({exc}); remove it or replace it.") from None
        labels = [index[label] if index else NO_LABEL for _, label in entries]
        return ImageSet(
            pixels=np.stack(pixels),
            labels=np.asarray(labels, dtype=np.int64),
            sources=[str(p.relative_to(root)) for p, _ in entries],
            mean=preprocessing.mean,
            std=preprocessing.std,
            encoded=encoded if keep_encoded else None,
        )

    return build(chosen[:calibration_size], False), build(chosen[calibration_size:], True)


def _as_served(path: Path, image) -> bytes:
    """The file's own bytes where a serving graph decodes its format (JPEG, PNG); otherwise a PNG of it."""
    if image.format in ("JPEG", "PNG"):
        return path.read_bytes()
    import io

    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def make_image_sets(settings: DataSettings) -> tuple[ImageSet, ImageSet]:
    """(calibration, evaluation): from settings.images where set, else from scikit-image's photographs."""
    return folder_image_sets(settings) if settings.images else default_image_sets(settings)
