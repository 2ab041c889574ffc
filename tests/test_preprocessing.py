import numpy as np
import pytest
from PIL import Image

from crossdeploy.data.preprocessing import IMAGENET_MEAN, Preprocessing, normalize


def test_weights_metadata_gives_torchvisions_preset():
    import torchvision

    transforms = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    p = Preprocessing.resolve(weights_transforms=transforms)
    assert (p.resize_size, p.crop_size) == (232, 224)
    assert p.mean == pytest.approx(IMAGENET_MEAN)


def test_params_override_and_defaults():
    assert Preprocessing.resolve().crop_size == 224
    p = Preprocessing.resolve(input_size=64, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    assert (p.resize_size, p.crop_size, p.mean) == (73, 64, (0.5, 0.5, 0.5))
    assert Preprocessing.from_dict(p.to_dict()) == p


def test_crop_and_normalize_match_torchvision_pipeline():
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    p = Preprocessing.resolve(input_size=224)
    ours = normalize(p.crop(image)[None], p.mean, p.std, "NCHW")[0]
    reference = T.Compose([T.Resize(p.resize_size), T.CenterCrop(224), T.ToTensor(), T.Normalize(p.mean, p.std)])(image)
    np.testing.assert_allclose(ours, reference.numpy(), atol=1e-5)


def test_layouts():
    pixels = np.zeros((2, 8, 8, 3), np.uint8)
    assert normalize(pixels, IMAGENET_MEAN, IMAGENET_MEAN, "NCHW").shape == (2, 3, 8, 8)
    pixels = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    nchw, nhwc = (normalize(pixels, IMAGENET_MEAN, IMAGENET_MEAN, layout) for layout in ("NCHW", "NHWC"))
    assert nchw[1, 2, 3, 0] == nhwc[1, 3, 0, 2]
    with pytest.raises(ValueError, match="unknown layout CHWN"):
        normalize(pixels, IMAGENET_MEAN, IMAGENET_MEAN, "CHWN")
