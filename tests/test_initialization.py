import math

import pytest
import torch
from torch import nn

from vgg.nets.initialization import init_from_a, initialize
from vgg.nets.models import VGG

SMALL = {"width": 8, "crop": 64, "num_classes": 10}


def weights_and_biases(model: nn.Module):
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return [m.weight for m in layers], [m.bias for m in layers]


def test_paper_init_is_zero_mean_normal_with_the_given_std_and_zero_biases():
    model = VGG("D", **SMALL, init="paper", init_std=0.01)
    weights, biases = weights_and_biases(model)
    flat = torch.cat([w.flatten() for w in weights])
    assert abs(flat.mean().item()) < 1e-4
    assert flat.std().item() == pytest.approx(0.01, rel=0.01)
    assert all((b == 0).all() for b in biases)
    literal = VGG("D", **SMALL, init="paper", init_std=0.1)
    assert torch.cat([w.flatten() for w in weights_and_biases(literal)[0]]).std().item() == pytest.approx(0.1, rel=0.01)


def test_glorot_init_is_uniform_within_the_glorot_bound():
    model = VGG("D", **SMALL, init="glorot")
    weights, biases = weights_and_biases(model)
    for weight in weights:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.9 * bound  # uniform fills the range; a normal of this std would not stop at it
    assert all((b == 0).all() for b in biases)


def test_batch_norm_starts_as_identity():
    model = VGG("A", **SMALL, batch_norm=True)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all((n.weight == 1).all() and (n.bias == 0).all() for n in norms)


def test_init_from_a_copies_exactly_the_first_four_convs_and_the_three_fc_layers():
    source = VGG("A", **SMALL, init="glorot")
    target = VGG("D", **SMALL, init="glorot")
    copied = init_from_a(target, source, std=0.01)
    # D's layout: block 1 convs at features.0/2, block 2 at 5/7, block 3 at 10/12/14.
    # A's first four convs (features.0, 3, 6, 8) go to D's block 1 #1, block 2 #1, block 3 #1 and #2.
    expected_pairs = {
        "features.0": "features.0",
        "features.5": "features.3",
        "features.10": "features.6",
        "features.12": "features.8",
        "classifier.0": "classifier.0",
        "classifier.3": "classifier.3",
        "classifier.6": "classifier.6",
    }
    assert sorted(copied) == sorted(f"{t}.{p}" for t in expected_pairs for p in ("weight", "bias"))
    source_state = source.state_dict()
    for key, value in target.state_dict().items():
        prefix, param = key.rsplit(".", 1)
        if prefix in expected_pairs:
            assert torch.equal(value, source_state[f"{expected_pairs[prefix]}.{param}"]), key
        elif param == "weight":  # the rest is fresh paper init, not A's and not the old glorot
            assert value.std().item() == pytest.approx(0.01, rel=0.1), key
        else:
            assert (value == 0).all(), key


def test_init_from_a_carries_batch_norm_of_copied_convs():
    source = VGG("A", **SMALL, batch_norm=True)
    with torch.no_grad():
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.uniform_()
    target = VGG("B", **SMALL, batch_norm=True)
    copied = init_from_a(target, source)
    # B: block 1 conv features.0 (bn .1), features.3 (bn .4); block 2 starts at features.7 (bn .8).
    assert "features.1.running_mean" in copied and "features.8.weight" in copied
    assert torch.equal(target.features[8].weight, source.features[5].weight)
    assert "features.4.weight" not in copied and (target.features[4].weight == 1).all()


@pytest.mark.parametrize(
    "source_kwargs, target_kwargs, message",
    [
        ({"width": 8, "crop": 64}, {"width": 4, "crop": 64}, "width differs"),
        ({"width": 8, "crop": 64}, {"width": 8, "crop": 96}, "crop differs"),
        ({"width": 8, "crop": 64, "num_classes": 10}, {"width": 8, "crop": 64, "num_classes": 5}, "num_classes differs"),
    ],
)
def test_init_from_a_mismatch_is_a_clear_error(source_kwargs, target_kwargs, message):
    with pytest.raises(ValueError, match=message):
        init_from_a(VGG("D", **target_kwargs), VGG("A", **source_kwargs))


def test_init_from_a_needs_a_and_a_target_with_matching_layers():
    with pytest.raises(ValueError, match="needs a net of configuration A, got B"):
        init_from_a(VGG("D", **SMALL), VGG("B", **SMALL))
    with pytest.raises(ValueError, match="shape"):
        init_from_a(VGG("B-5x5", **SMALL), VGG("A", **SMALL))


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown init scheme 'he'; choose one of paper, glorot"):
        initialize(VGG("A", **SMALL), "he")


def test_glorot_init_shrinks_the_signal_with_depth_at_the_smoke_widths():
    """Why the deepest nets from Glorot's init are slow to start (README, "How each net trained"):
    Glorot keeps a linear layer's variance and each ReLU halves it, so at init E's logits and its
    first conv's gradient (relative to the weights) are an order of magnitude below A's."""
    inputs, labels = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 50
    logit_std, conv1_step = {}, {}
    for config in ("A", "D", "E"):
        torch.manual_seed(0)
        model = VGG(config, num_classes=50, width=8, crop=64, dropout=0.0)
        initialize(model, "glorot")
        logits = model(inputs)
        nn.functional.cross_entropy(logits, labels).backward()
        conv1 = model.features[0].weight
        logit_std[config], conv1_step[config] = logits.std().item(), (conv1.grad.norm() / conv1.norm()).item()
    assert logit_std["A"] > 3 * logit_std["D"] > 9 * logit_std["E"]
    assert conv1_step["A"] > 10 * conv1_step["E"]
