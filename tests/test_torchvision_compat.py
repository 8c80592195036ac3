import pytest
import torch
import torchvision

from vgg.nets.initialization import initialize
from vgg.nets.models import VGG
from vgg.nets.torchvision_compat import (
    clean_state_dict,
    infer_spec,
    load_torchvision_state_dict,
    to_torchvision_state_dict,
    torchvision_name,
    vgg_from_torchvision_state_dict,
)

TORCHVISION_MODELS = [
    ("vgg11", "A", False),
    ("vgg13", "B", False),
    ("vgg16", "D", False),
    ("vgg19", "E", False),
    ("vgg11_bn", "A", True),
    ("vgg13_bn", "B", True),
    ("vgg16_bn", "D", True),
    ("vgg19_bn", "E", True),
]


def randomize_batch_norm_statistics(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)


@pytest.mark.slow
@pytest.mark.parametrize("name, config, batch_norm", TORCHVISION_MODELS)
def test_torchvision_weights_round_trip_with_identical_outputs(name, config, batch_norm):
    reference = getattr(torchvision.models, name)(weights=None).eval()
    randomize_batch_norm_statistics(reference)
    x = torch.randn(2, 3, 224, 224)

    ours = vgg_from_torchvision_state_dict(reference.state_dict()).eval()
    assert (ours.config, ours.spec.batch_norm, torchvision_name(ours.spec)) == (config, batch_norm, name)
    with torch.no_grad():
        expected = reference(x)
        assert expected.std() > 0
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.dense(x), expected, rtol=1e-4, atol=1e-5)

    # and back: new weights of ours, exported, give torchvision the same outputs
    initialize(ours, "glorot")
    randomize_batch_norm_statistics(ours)
    reference.load_state_dict(to_torchvision_state_dict(ours), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(reference(x), ours(x), rtol=1e-5, atol=1e-6)


def test_wrapper_prefixes_are_stripped_and_files_load_weights_only(tmp_path):
    model = VGG("A", width=8, crop=224, num_classes=10)
    wrapped = {f"module._orig_mod.{key}": value for key, value in model.state_dict().items()}
    path = tmp_path / "wrapped.pth"
    torch.save(wrapped, path)
    loaded = torch.load(path, weights_only=True)
    assert list(clean_state_dict(loaded)) == list(model.state_dict())
    restored = VGG("A", width=8, crop=224, num_classes=10, init="glorot")
    load_torchvision_state_dict(restored, loaded)
    assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"config": "C", "width": 8, "crop": 64, "num_classes": 10},
        {"config": "A-LRN", "width": 1, "crop": 96, "num_classes": 3},
        {"config": "B-5x5", "width": 4, "crop": 224, "num_classes": 1000, "batch_norm": True},
        {"config": "E", "width": 16, "crop": 32, "num_classes": 2, "batch_norm": True},
    ],
)
def test_infer_spec_recognises_every_configuration(kwargs):
    with torch.device("meta"):
        model = VGG(**kwargs)
    spec = infer_spec(model.state_dict())
    assert spec == model.spec


def test_configurations_torchvision_lacks_are_refused():
    with pytest.raises(ValueError, match="torchvision has no VGG of configuration C"):
        to_torchvision_state_dict(VGG("C", width=8, crop=64))
    with pytest.raises(ValueError, match="torchvision has no VGG of configuration A-LRN"):
        load_torchvision_state_dict(VGG("A-LRN", width=8, crop=64), {})


def test_reduced_networks_are_not_exported_as_torchvision():
    with pytest.raises(ValueError, match="full widths and a 224 crop; this net has width 8 and crop 64"):
        to_torchvision_state_dict(VGG("D", width=8, crop=64))


def test_a_state_dict_of_another_configuration_is_a_clear_error():
    with torch.device("meta"):
        d_bn = VGG("D", batch_norm=True).state_dict()
        plain_d = VGG("D")
    with pytest.raises(ValueError, match=r"the state dict is vgg16_bn \(configuration D\), but the model is vgg16 "):
        load_torchvision_state_dict(plain_d, d_bn)


def test_not_a_vgg_state_dict_is_a_clear_error():
    with pytest.raises(ValueError, match="not a VGG state dict: key 'features.0.weight' is missing"):
        infer_spec({"conv1.weight": torch.zeros(64, 3, 7, 7)})
    truncated = VGG("A", width=8, crop=64).state_dict()
    truncated.pop("features.3.bias")
    with pytest.raises(ValueError, match="matches no VGG configuration"):
        infer_spec(truncated)
