import numpy as np
import pytest
import torch
import torchvision

from crossdeploy.errors import CrossdeployError
from crossdeploy.model.source import SourceSpec, build_source_model, export_program, load_program

BASE = dict(name="m", arch="resnet18", num_classes=10, input_size=64)


def build(**overrides):
    return build_source_model(SourceSpec(**{**BASE, **overrides}))


def reference_model(num_classes=10, arch="resnet18"):
    torch.manual_seed(123)
    return torchvision.models.get_model(arch, num_classes=num_classes).eval()


def test_random_weights_are_seeded_and_said_so():
    a, card = build()
    b, _ = build()
    c, _ = build(seed=1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))
    assert card.random_weights and card.source == "random"
    assert "random weights" in card.to_dict()["note"]


def test_unknown_architecture_names_the_param():
    with pytest.raises(CrossdeployError, match=r"model\.arch 'resnet51'.*did you mean.*resnet50"):
        build(arch="resnet51")


def test_detection_models_are_not_classifiers():
    with pytest.raises(CrossdeployError, match="model.arch"):
        build(arch="fasterrcnn_resnet50_fpn")


def test_state_dict_checkpoint_loads_exactly(tmp_path):
    reference = reference_model()
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)
    model, card = build(checkpoint=str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    assert card.source == "checkpoint" and not card.random_weights


def test_wrapped_ddp_checkpoint_loads(tmp_path):
    reference = reference_model()
    path = tmp_path / "ddp.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model, _ = build(checkpoint=str(path))
    assert torch.equal(model.fc.weight, reference.fc.weight)


def test_checkpoint_with_other_class_count_says_which(tmp_path):
    path = tmp_path / "five.pt"
    torch.save(reference_model(num_classes=5).state_dict(), path)
    with pytest.raises(CrossdeployError, match=r"5 output classes.*set model\.num_classes: 5"):
        build(checkpoint=str(path))


def test_checkpoint_of_another_architecture(tmp_path):
    path = tmp_path / "mobilenet.pt"
    torch.save(reference_model(arch="mobilenet_v3_small").state_dict(), path)
    with pytest.raises(CrossdeployError, match=r"does not fit model\.arch resnet18.*set model\.arch"):
        build(checkpoint=str(path))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CrossdeployError, match=r"model\.checkpoint .*does not exist"):
        build(checkpoint=str(tmp_path / "nope.pt"))


def test_whole_pickled_model_needs_explicit_trust(tmp_path):
    reference = reference_model()
    path = tmp_path / "whole.pt"
    torch.save(reference, path)
    with pytest.raises(CrossdeployError, match=r"arbitrary code.*model\.trust_checkpoint: true"):
        build(checkpoint=str(path))
    model, _ = build(checkpoint=str(path), trust_checkpoint=True)
    assert torch.equal(model.fc.weight, reference.fc.weight)


def _torchscript(model, path, how="script"):
    scripted = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.randn(1, 3, 64, 64))
    torch.jit.save(scripted, str(path))
    return path


@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archive_needs_explicit_trust(tmp_path, how):
    """torch.jit.load runs the archive's code (CVE-2025-32434): like a pickled model, only when trusted."""
    reference = reference_model()
    path = _torchscript(reference, tmp_path / f"{how}.pt", how)
    with pytest.raises(
        CrossdeployError,
        match=r"is a TorchScript archive, and loading one runs code it carries; "
        r"set model\.trust_checkpoint: true if you trust its source",
    ):
        build(checkpoint=str(path))
    model, card = build(checkpoint=str(path), trust_checkpoint=True)
    assert torch.equal(model.fc.weight, reference.fc.weight) and card.source == "checkpoint"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_trusted_torchscript_with_other_class_count_names_both(tmp_path):
    path = _torchscript(reference_model(num_classes=7), tmp_path / "seven.pt")
    with pytest.raises(CrossdeployError, match=r"has 7 output classes but model\.num_classes is 10; set model\.num_classes: 7\.$"):
        build(checkpoint=str(path), trust_checkpoint=True)


def test_trusted_pickled_model_with_other_class_count_names_both(tmp_path):
    path = tmp_path / "seven.pt"
    torch.save(reference_model(num_classes=7), path)
    with pytest.raises(CrossdeployError, match=r"has 7 output classes but model\.num_classes is 10; set model\.num_classes: 7\.$"):
        build(checkpoint=str(path), trust_checkpoint=True)


@pytest.mark.parametrize(
    "saved, configured, expected_class", [("resnet18", "mobilenet_v2", "MobileNetV2"), ("resnet50", "resnet18", "ResNet")]
)
def test_trusted_pickled_model_of_another_architecture_names_both(tmp_path, saved, configured, expected_class):
    """resnet18 and resnet50 share the class ResNet: their layers tell them apart."""
    path = tmp_path / "whole.pt"
    torch.save(reference_model(arch=saved), path)
    with pytest.raises(
        CrossdeployError,
        match=rf"holds a {saved} \(ResNet, 10 classes\) but model\.arch is {configured} "
        rf"\(a {expected_class}\); set model\.arch: {saved}\.$",
    ):
        build(checkpoint=str(path), trust_checkpoint=True, arch=configured)


def test_trusted_model_of_another_architecture_and_class_count_names_both_fixes(tmp_path):
    path = _torchscript(reference_model(num_classes=7), tmp_path / "seven.pt", "trace")
    with pytest.raises(
        CrossdeployError,
        match=r"holds a resnet18 \(ResNet, 7 classes\) but model\.arch is mobilenet_v2 .*"
        r"set model\.arch: resnet18 and model\.num_classes: 7\.$",
    ):
        build(checkpoint=str(path), trust_checkpoint=True, arch="mobilenet_v2")


def test_trusted_model_of_no_torchvision_architecture(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 10)), path)
    with pytest.raises(
        CrossdeployError,
        match=r"holds a Sequential \(122,890 parameters, 10 classes\) that is no torchvision "
        r"classification architecture, and model\.arch resnet18 is a ResNet",
    ):
        build(checkpoint=str(path), trust_checkpoint=True)


def test_weights_and_checkpoint_are_exclusive(tmp_path):
    with pytest.raises(CrossdeployError, match="set one of them to null"):
        build(weights="IMAGENET1K_V1", checkpoint=str(tmp_path / "x.pt"))


def test_unknown_weights_name_lists_the_real_ones():
    with pytest.raises(CrossdeployError, match=r"model\.weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        build(weights="IMAGENET9K", num_classes=1000)


def test_weights_class_count_must_match():
    with pytest.raises(CrossdeployError, match=r"1000 classes.*model\.num_classes: 1000"):
        build(weights="IMAGENET1K_V1", num_classes=10)


def test_exported_program_takes_any_batch(tmp_path):
    model, _ = build()
    path = tmp_path / "m.pt2"
    torch.export.save(export_program(model, 64), path)
    loaded = load_program(path)
    for batch in (1, 3, 8):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)


def _input_independence(logits: np.ndarray) -> float:
    """How much of the logits is one vector shared by every image: |mean| over the typical deviation."""
    deviation = np.linalg.norm(logits - logits.mean(0), axis=1).mean()
    return float(np.linalg.norm(logits.mean(0)) / max(deviation, 1e-30))


def test_random_weights_are_made_input_sensitive(tiny_source, tiny_images):
    """Seeded random weights with BatchNorm's initial statistics give every image nearly the same logits;
    the model stage re-estimates them on real photographs and centres the head."""
    inputs = torch.from_numpy(tiny_images[1].tensors("NCHW"))
    with torch.no_grad():
        ours = load_program(tiny_source[0])(inputs).numpy()
        torch.manual_seed(0)
        untouched = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()(inputs).numpy()
    assert _input_independence(untouched) > 3 * _input_independence(ours), (_input_independence(untouched), _input_independence(ours))
    assert _input_independence(ours) < 0.5
    assert len(np.unique(ours.argmax(1))) >= 3


def test_a_zero_initialised_head_is_given_random_weights(tiny_images):
    """torchvision's ViT starts its classifier at zero: every image got the bias alone (one class for all)."""
    from crossdeploy.model.source import make_random_model_input_sensitive

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    ).eval()
    inputs = torch.from_numpy(tiny_images[1].tensors("NCHW"))
    with torch.no_grad():
        assert len(np.unique(vit(inputs).numpy().round(6), axis=0)) == 1
        make_random_model_input_sensitive(vit, tiny_images[0].tensors("NCHW"), 10)
        logits = vit(inputs).numpy()
    assert len(np.unique(logits.argmax(1))) >= 3
