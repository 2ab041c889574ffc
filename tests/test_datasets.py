import numpy as np
import pytest
from PIL import Image

from crossdeploy.data.datasets import DataSettings, ImageSet, class_index_map, decode_image, default_image_sets, make_image_sets
from crossdeploy.data.preprocessing import Preprocessing
from crossdeploy.errors import CrossdeployError

P = Preprocessing.resolve(input_size=32)


def photo_names(image_set):
    return {s.split("#")[0] for s in image_set.sources}


def test_default_sets_are_real_disjoint_and_deterministic():
    calibration, evaluation = default_image_sets(DataSettings(30, 12, P, seed=0))
    assert calibration.pixels.shape == (30, 32, 32, 3) and evaluation.pixels.shape == (12, 32, 32, 3)
    assert photo_names(calibration).isdisjoint(photo_names(evaluation))
    again, _ = default_image_sets(DataSettings(30, 12, P, seed=0))
    assert np.array_equal(calibration.pixels, again.pixels)
    other, _ = default_image_sets(DataSettings(30, 12, P, seed=1))
    assert not np.array_equal(calibration.pixels, other.pixels)
    # Expanded crops differ from each other, not copies of the same photograph.
    assert len({p.tobytes() for p in calibration.pixels}) == 30
    assert not evaluation.has_labels


def test_image_set_round_trip(tmp_path):
    calibration, _ = default_image_sets(DataSettings(4, 2, P, seed=0))
    calibration.save(tmp_path / "c.npz")
    loaded = ImageSet.load(tmp_path / "c.npz")
    assert np.array_equal(loaded.pixels, calibration.pixels) and loaded.sources == calibration.sources
    assert loaded.tensors("NHWC").shape == (4, 32, 32, 3)
    assert loaded.encoded is None


def test_evaluation_keeps_the_files_its_pixels_come_from(tmp_path):
    """What a client would upload to the bytes signature: JPEGs whose PIL crop is the stored pixels."""
    _, evaluation = default_image_sets(DataSettings(4, 5, P, seed=0))
    assert len(evaluation.encoded) == 5 and all(e[:2] == b"\xff\xd8" for e in evaluation.encoded)
    assert len({len(e) for e in evaluation.encoded}) > 1  # whole images of their own sizes, not crops
    for encoded, pixels in zip(evaluation.encoded, evaluation.pixels):
        assert np.array_equal(P.crop(decode_image(encoded)), pixels)
    evaluation.save(tmp_path / "e.npz")
    assert ImageSet.load(tmp_path / "e.npz").encoded == evaluation.encoded


def make_folder(root, classes, per_class):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_image_folder_with_category_names_is_labelled(tmp_path):
    make_folder(tmp_path, ["tench", "goldfish", "great_white_shark"], 4)
    categories = ["tench", "goldfish", "great white shark", "tiger shark"]
    settings = DataSettings(
        images=str(tmp_path), calibration_size=6, evaluation_size=6, preprocessing=P, categories=tuple(categories), num_classes=4
    )
    calibration, evaluation = make_image_sets(settings)
    assert evaluation.has_labels
    assert set(np.concatenate([calibration.labels, evaluation.labels])) == {0, 1, 2}
    assert set(calibration.sources).isdisjoint(evaluation.sources)
    for source, label in zip(evaluation.sources, evaluation.labels):
        assert categories[label].replace(" ", "_") == source.split("/")[0]
    # the evaluation set keeps each PNG file as it is, for the served bytes path
    assert [e for e in evaluation.encoded] == [(tmp_path / s).read_bytes() for s in evaluation.sources]
    assert calibration.encoded is None


def test_class_index_mapping_rules():
    assert class_index_map(["dog", "cat"], None, 2) == {"cat": 0, "dog": 1}
    assert class_index_map(["dog", "cat"], None, 5) is None
    # digits are names, not indices: a subset of digit folders says nothing about which outputs they are
    assert class_index_map(["3", "0"], None, 10) is None


def test_digit_named_folders_follow_image_folders_sorted_order(tmp_path):
    """torchvision's ImageFolder sorts folder names as strings: '10' and '11' come before '2'."""
    names = [str(i) for i in range(12)]
    make_folder(tmp_path, names, 1)
    settings = DataSettings(images=str(tmp_path), calibration_size=6, evaluation_size=6, preprocessing=P, num_classes=12)
    calibration, evaluation = make_image_sets(settings)
    expected = {name: i for i, name in enumerate(sorted(names))}
    assert expected["10"] == 2 and expected["2"] == 4
    for image_set in (calibration, evaluation):
        for source, label in zip(image_set.sources, image_set.labels):
            assert label == expected[source.split("/")[0]]
    assert evaluation.has_labels


def test_an_empty_class_folder_keeps_its_index(tmp_path):
    """ImageFolder counts every class folder; dropping an empty one would shift every label after it."""
    make_folder(tmp_path, ["a", "c"], 3)
    (tmp_path / "b").mkdir()
    settings = DataSettings(images=str(tmp_path), calibration_size=3, evaluation_size=3, preprocessing=P, num_classes=3)
    calibration, evaluation = make_image_sets(settings)
    labels = {
        s.split("/")[0]: int(label) for image_set in (calibration, evaluation) for s, label in zip(image_set.sources, image_set.labels)
    }
    assert labels == {"a": 0, "c": 2}


def test_empty_missing_and_overlapping_folders(tmp_path):
    kwargs = dict(calibration_size=4, evaluation_size=4, preprocessing=P, num_classes=2)
    with pytest.raises(CrossdeployError, match=r"data\.images .* is not a directory"):
        make_image_sets(DataSettings(images=str(tmp_path / "missing"), **kwargs))
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(CrossdeployError, match="holds no images"):
        make_image_sets(DataSettings(images=str(tmp_path / "empty"), **kwargs))
    make_folder(tmp_path / "small", ["a", "b"], 3)
    with pytest.raises(CrossdeployError, match=r"would overlap.*at most 6"):
        make_image_sets(DataSettings(images=str(tmp_path / "small"), **kwargs))


def test_unreadable_image_is_named(tmp_path):
    make_folder(tmp_path, ["a"], 3)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    settings = DataSettings(images=str(tmp_path), calibration_size=2, evaluation_size=2, preprocessing=P, num_classes=1)
    with pytest.raises(CrossdeployError, match="broken.jpg"):
        make_image_sets(settings)


@pytest.mark.parametrize("sizes", [(0, 4), (4, 0)])
def test_an_empty_set_is_refused(sizes):
    with pytest.raises(CrossdeployError, match=r"data\.calibration_size and data\.evaluation_size must both be at least 1"):
        DataSettings(*sizes, P)
