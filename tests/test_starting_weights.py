"""Where a run's first weights come from (`vgg.starting_weights`): one vocabulary, and the paper's
init chain (B-E from A, Sect. 3.1; the same configuration fine-tuned)."""

import csv
from pathlib import Path

import pytest
import torch

from tests.test_train import assert_same_weights, config
from vgg.datasets import load_split
from vgg.nets import load_net
from vgg.normalization import get_normalization
from vgg.profiles import get_profile
from vgg.run_config import TrainConfig
from vgg.starting_weights import InitSource, NetOptions, first_weights, normalized_init
from vgg.train import train


def test_one_vocabulary_names_every_source_of_first_weights():
    words = {
        "random": InitSource("random"), None: InitSource("random"), "paper": InitSource("random", scheme="paper"),
        "glorot": InitSource("random", scheme="glorot"), "from:runs/ci/A-256": InitSource("parent", where="runs/ci/A-256"),
        "weights:torchvision:vgg16": InitSource("weights", where="torchvision:vgg16"),
    }
    for text, source in words.items():
        assert InitSource.parse(text) == source and str(source) == (text or "random")
    assert InitSource.of_run(None, "checkpoint:runs/ci/D-384") == InitSource("weights", where="checkpoint:runs/ci/D-384")
    assert InitSource.of_run("from:x", None) == InitSource("parent", where="x")
    for bad in ("kaiming", "from:", "gaussian", "A-256"):
        with pytest.raises(ValueError, match=f"init must be random, paper, glorot or from:RUN \\(or weights:SPEC\\), got '{bad}'"):
            InitSource.parse(bad)
    with pytest.raises(ValueError, match="fine-tuning from --weights replaces --init: give one of them"):
        InitSource.of_run("glorot", "torchvision:vgg16")


def test_train_init_takes_the_same_words_and_random_keeps_the_run_hash():
    assert normalized_init("random") is None and normalized_init("paper") == "paper" and normalized_init("from:x") == "from:x"
    fields = dict(config="A", train_scale="256", data="/nonexistent", profile="ci")
    assert TrainConfig(**fields, init="random") == TrainConfig(**fields) and TrainConfig(**fields, init="random").settings()["init"] is None
    with pytest.raises(ValueError, match="trained weights are given with --weights SPEC, not --init weights:torchvision:vgg16"):
        TrainConfig(**fields, init="weights:torchvision:vgg16")


def test_the_lrn_constant_is_the_models_default_unless_the_run_sets_it():
    def lrn_alphas(lrn_alpha):
        options = NetOptions("A-LRN", batch_norm=False, dropout=0.5, lrn_alpha=lrn_alpha, freeze="none", head_lr_mult=1.0)
        model = first_weights(InitSource.parse("random"), options, get_profile("ci"), get_normalization("mean-rgb"), ("a", "b"), False, print).model
        return [module.alpha for module in model.features if isinstance(module, torch.nn.LocalResponseNorm)]

    assert lrn_alphas(None) == [5e-4] and lrn_alphas(1e-4) == [1e-4]


def conv_blocks(model) -> list[list[torch.nn.Conv2d]]:
    """The conv layers of a net, block by block (a block ends at a max-pool)."""
    blocks, current = [], []
    for module in model.features:
        if isinstance(module, torch.nn.Conv2d):
            current.append(module)
        elif isinstance(module, torch.nn.MaxPool2d):
            blocks.append(current)
            current = []
    return blocks


def first_net(ci_data, parent: Path, config_name: str):
    options = NetOptions(config_name, batch_norm=False, dropout=0.5, lrn_alpha=None, freeze="none", head_lr_mult=1.0)
    classes = load_split(str(ci_data), "train").classes
    return first_weights(InitSource.parse(f"from:{parent}"), options, get_profile("ci"), get_normalization("mean-rgb"), classes, resuming=False, log=print)


def test_init_chains_load_the_right_parents(ci_data, tmp_path):
    train(config(ci_data, epochs=1), tmp_path / "A-256")
    a_net = load_net(checkpoint=tmp_path / "A-256").model
    # B at S=256 from A (Sect. 3.1): A's first four conv layers, block by block, and its three FC layers
    b = first_net(ci_data, tmp_path / "A-256", "B")
    assert not b.fine_tune
    a_blocks, b_blocks = conv_blocks(a_net), conv_blocks(b.model)
    a_first_four = [conv for block in a_blocks for conv in block][:4]
    assert sum(len(block) for block in a_blocks[:3]) == 4  # blocks of 1, 1 and 2 convs in A
    copied = [b_block[position] for a_block, b_block in zip(a_blocks[:3], b_blocks) for position in range(len(a_block))]
    for ours, theirs in zip(copied, a_first_four, strict=True):
        assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    fc = lambda model: [m for m in model.classifier if isinstance(m, torch.nn.Linear)]  # noqa: E731
    for ours, theirs in zip(fc(b.model), fc(a_net), strict=True):
        assert torch.equal(ours.weight, theirs.weight)
    fresh = [conv for conv in (c for block in b_blocks for c in block) if conv not in copied]
    assert len(fresh) == 6  # B's other convs: the ci profile's random init (Glorot)
    for conv in fresh:
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(conv.weight)
        assert conv.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.3)
    # A at S=384 from A at S=256: every layer, a fine-tune, which trains at the profile's finetune_lr 1e-3
    a384 = first_net(ci_data, tmp_path / "A-256", "A")
    assert a384.fine_tune
    assert_same_weights(a384.model.state_dict(), a_net.state_dict())
    train(config(ci_data, train_scale="384", init=f"from:{tmp_path / 'A-256'}", epochs=1), tmp_path / "A-384")
    assert float(next(csv.DictReader(open(tmp_path / "A-384" / "metrics.csv")))["lr"]) == pytest.approx(1e-3)
    b_first_lr = float(next(csv.DictReader(open(tmp_path / "A-256" / "metrics.csv")))["lr"])
    assert b_first_lr == pytest.approx(1e-2)  # a run from random init trains at the paper's 1e-2
