"""The one preprocessing definition every runtime sees: resize, center crop, scale to [0, 1], normalize.

It matches torchvision's `ImageClassification` preset (what `weights.transforms()` returns), so a
model with torchvision weights is fed exactly as it was evaluated. The geometric part (resize and
crop to uint8 pixels) is done once by the data stage; normalization is applied when tensors are
made, in NCHW for PyTorch/ONNX/TensorRT or NHWC for TensorFlow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = 224


@dataclass(frozen=True)
class Preprocessing:
    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @classmethod
    def resolve(cls, *, weights_transforms=None, input_size=None, resize_size=None, mean=None, std=None) -> "Preprocessing":
        """Params win where set; otherwise the weights' own transforms; otherwise ImageNet conventions."""
        base = weights_transforms
        crop = input_size or (base.crop_size[0] if base else DEFAULT_INPUT_SIZE)
        if resize_size is None:
            # torchvision's classic ratio 256/224 when nothing says otherwise.
            resize_size = base.resize_size[0] if base and not input_size else round(crop * 256 / 224)
        return cls(
            resize_size=int(resize_size),
            crop_size=int(crop),
            mean=tuple(float(v) for v in (mean or (base.mean if base else IMAGENET_MEAN))),
            std=tuple(float(v) for v in (std or (base.std if base else IMAGENET_STD))),
            interpolation=(base.interpolation.value if base else "bilinear"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(
            resize_size=int(data["resize_size"]),
            crop_size=int(data["crop_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            interpolation=data.get("interpolation", "bilinear"),
        )

    def crop(self, image) -> np.ndarray:
        """PIL image -> uint8 HWC array of crop_size x crop_size RGB pixels."""
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode

        image = image.convert("RGB")
        image = F.resize(image, self.resize_size, interpolation=InterpolationMode(self.interpolation), antialias=True)
        image = F.center_crop(image, self.crop_size)
        return np.asarray(image, dtype=np.uint8)


def normalize(pixels: np.ndarray, mean, std, layout: str = "NCHW") -> np.ndarray:
    """uint8 NHWC pixels -> float32 normalized tensor in the requested layout."""
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    elif layout != "NHWC":
        raise ValueError(f"unknown layout {layout}")
    return np.ascontiguousarray(x, dtype=np.float32)
