"""Nets loaded for use: from our run checkpoints (their dataset) and from torchvision-format weight files."""

import dataclasses

import pytest
import torch
import torchvision

from vgg.nets.trained import default_dataset, load_net


@pytest.mark.slow
@pytest.mark.parametrize("name, config", [("vgg11", "A"), ("vgg13", "B"), ("vgg16", "D"), ("vgg19", "E")])
def test_saved_torchvision_files_are_recognised_and_give_torchvision_logits(tmp_path, name, config):
    reference = getattr(torchvision.models, name)(weights=None).eval()
    path = tmp_path / f"{name}-random.pth"
    torch.save(reference.state_dict(), path)
    net = load_net(weights=str(path))
    assert net.model.config == config and net.normalization.name == "torchvision" and net.profile.name == "paper"
    if name == "vgg11":  # one forward pass at 224 suffices for the logits (all four are in test_torchvision_compat)
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            torch.testing.assert_close(net.model.eval()(x), reference(x), rtol=1e-5, atol=1e-6)


def test_evaluate_defaults_to_the_dataset_the_net_was_trained_on(ci_data, ci_checkpoint, tmp_path):
    net = load_net(ci_checkpoint)
    assert net.profile.data != str(ci_data)  # so the profile's default would be the wrong set
    assert default_dataset(net, None) == str(ci_data)
    assert default_dataset(net, "elsewhere") == "elsewhere"
    moved = dataclasses.replace(net, data_dir=str(tmp_path / "moved"))
    with pytest.raises(ValueError, match="pass --data"):
        default_dataset(moved, None)
