"""Weight specs (`vgg.nets.weights`): torchvision:NAME from the hub cache (clear when offline), files, and bad specs as clear errors."""

from urllib.error import URLError

import pytest
import torch
import torchvision

from vgg.data.datasets import load_split
from vgg.evaluation.evaluate import evaluate
from vgg.nets.models import VGG
from vgg.nets.trained import load_net
import vgg.nets.weights as weights_module
from vgg.nets.weights import cache_path, load_weights


def test_torchvision_spec_reads_the_hub_cache_and_explains_when_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, destination):
        raise URLError("no network")

    monkeypatch.setattr(weights_module, "_download", offline)
    path = cache_path("vgg11")
    assert path == tmp_path / "hub" / "checkpoints" / "vgg11-8a719046.pth"
    with pytest.raises(ValueError, match=r"vgg11 weights are not in the cache .*could not be downloaded .*put the file at .*vgg11-8a719046\.pth"):
        load_weights("torchvision:vgg11")
    path.parent.mkdir(parents=True)
    with torch.device("meta"):
        state = torchvision.models.vgg11(weights=None).state_dict()
    torch.save({k: torch.zeros(v.shape) for k, v in state.items()}, path)
    assert load_weights("torchvision:vgg11").name == "vgg11"
    with pytest.raises(ValueError, match="unknown torchvision VGG 'vgg12'"):
        load_weights("torchvision:vgg12")


def test_unknown_and_mismatched_weights_are_clear_errors(tmp_path, ci_data):
    garbage = tmp_path / "vgg16.pth"
    garbage.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="weights file .*vgg16.pth is not a PyTorch file, or is corrupt \\(Unsupported operand 110\\)"):
        load_weights(str(garbage))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="not a VGG state dict"):
        load_weights(str(tmp_path / "resnet.pth"))
    small = VGG("A", num_classes=1000, width=16, crop=32)
    torch.save(small.state_dict(), tmp_path / "small.pth")
    with pytest.raises(ValueError, match="the net has 1000 classes, .* has 4"):
        evaluate(load_net(weights=str(tmp_path / "small.pth")), load_split(ci_data, "val"), "dense", [256], workers=0)
