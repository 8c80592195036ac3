"""Where a run's first weights come from (`vgg.training.starting_weights`): one vocabulary; the paper's init
chain (B-E from A, Sect. 3.1; the same configuration fine-tuned); and fine-tuning trained weights
on new classes (`weights:SPEC`, the `finetune` command)."""

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers_images import assert_drawn_figure
from tests.test_train import assert_same_weights, config
from vgg.cli import main
from vgg.data.datasets import load_split
from vgg.data.normalization import get_normalization
from vgg.data.synthetic import SynthSpec, generate
from vgg.evaluation.evaluate import evaluate
from vgg.nets.models import VGG
from vgg.nets.trained import load_net
from vgg.recipe.profiles import get_profile
from vgg.runtime.checkpoint import load_checkpoint, read_done
from vgg.runtime.stop_signals import Preempted
from vgg.training.run_config import TrainConfig
from vgg.training.starting_weights import InitSource, NetOptions, first_weights, normalized_init
from vgg.training.train import train

ROOT = Path(__file__).resolve().parent.parent
FAR_BELOW_CHANCE = 30.0  # % top-1 error on two classes, where chance is 50%: 4 standard errors below it on 100 val images


def test_one_vocabulary_names_every_source_of_first_weights():
    words = {
        "random": InitSource("random"), None: InitSource("random"), "paper": InitSource("random", scheme="paper"),
        "glorot": InitSource("random", scheme="glorot"), "from:runs/ci/A-256": InitSource("parent", where="runs/ci/A-256"),
        "weights:torchvision:vgg16": InitSource("weights", where="torchvision:vgg16"),
    }
    for text, source in words.items():
        assert InitSource.parse(text) == source
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
        model = first_weights(InitSource.parse("random"), options, get_profile("ci"), get_normalization("mean-rgb"), ("a", "b"), print).model
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
    return first_weights(InitSource.parse(f"from:{parent}"), options, get_profile("ci"), get_normalization("mean-rgb"), classes, log=print)


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


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory) -> Path:
    """The cats-vs-dogs stand-in: two generated classes, 200 train and 50 val images each."""
    return generate(tmp_path_factory.mktemp("cats-dogs") / "two", SynthSpec(classes=2, train_per_class=200, val_per_class=50, seed=3), workers=1)


@pytest.fixture(scope="module")
def source_run(ci_data, tmp_path_factory) -> Path:
    """A ci-scale source for the mechanics (resume, errors): cheap, but too small to learn features worth transferring."""
    run = tmp_path_factory.mktemp("source") / "A"
    train(TrainConfig(config="A", train_scale="256", data=str(ci_data), profile="ci", init="glorot", epochs=2, workers=0, progress=False), run)
    return run


@pytest.fixture(scope="module")
def trained_source(tmp_path_factory) -> Path:
    """A source whose features transfer: smoke-scale VGG-A trained on four generated classes (other images than
    `two_classes`, whose two classes are two of these four, as cats and dogs are ImageNet classes). Batch norm
    makes it learn in 15 epochs (~30 s on two cores); the plain net needs several times longer."""
    root = tmp_path_factory.mktemp("transfer")
    data = generate(root / "four", SynthSpec(classes=4, train_per_class=300, val_per_class=20), workers=1)
    run = root / "A-bn"
    done = train(TrainConfig(config="A", train_scale="256", data=str(data), profile="smoke", batch_norm=True, epochs=15, workers=0, progress=False), run)
    assert done["val_top1_err"] <= 25, done  # chance: 75%
    return run


def finetune_config(two_classes, source_run, **overrides) -> TrainConfig:
    fields = dict(config="A", train_scale="256:512", data=str(two_classes), profile="ci", weights=f"checkpoint:{source_run}",
                  freeze="features", head_lr_mult=10.0, epochs=12, lr=0.01, workers=0, progress=False)
    fields.update(overrides)
    return TrainConfig(**fields)


def assert_same_features(tuned: VGG, source: VGG) -> None:
    """Every tensor of the convolutional part bit-identical: what --freeze features promises."""
    for (name, a), b in zip(tuned.features.state_dict().items(), source.features.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_finetune_command_learns_two_new_classes(two_classes, trained_source, tmp_path):
    out = tmp_path / "cats-dogs"
    argv = ["finetune", "--checkpoint", str(trained_source), "--data", str(two_classes), "--out", str(out), "--epochs", "12",
            "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0  # in this process: the CLI's own start-up is tested by test_cli
    done = read_done(out)
    # 12 epochs, not the smoke profile's fine-tuning length (its 30,000 images: 75 epochs of these 400, 2.5 minutes of the suite)
    assert done["profile"] == "smoke" and done["epochs"] == 12
    assert done["val_top1_err"] <= FAR_BELOW_CHANCE, done
    tuned = load_net(checkpoint=out)
    assert tuned.classes == ("n90000000", "n90000001") and tuned.model.spec.batch_norm
    multi_scale = evaluate(tuned, load_split(two_classes, "val"), "dense", [256, 384, 512], workers=0, device="cpu")
    assert multi_scale.top1_err <= FAR_BELOW_CHANCE, multi_scale.top1_err


def test_finetune_on_frozen_features_trains_the_classifier_only_and_learns(two_classes, trained_source, tmp_path):
    done = train(finetune_config(two_classes, trained_source, profile="smoke", batch_norm=True, epochs=8, lr=None), tmp_path / "ft")
    assert done["val_top1_err"] <= FAR_BELOW_CHANCE, done
    assert_drawn_figure(tmp_path / "ft" / "curves.png")
    tuned, source = load_net(checkpoint=tmp_path / "ft").model, load_net(checkpoint=trained_source).model
    assert_same_features(tuned, source)  # frozen, batch-norm statistics included
    assert not torch.equal(tuned.classifier[0].weight, source.classifier[0].weight)  # trained
    assert tuned.head.weight.shape[0] == 2 and source.head.weight.shape[0] == 4


def test_finetune_command_from_a_weight_file_freezes_the_features(two_classes, tmp_path):
    """The CLI path users take with torchvision's files: --weights FILE, --freeze and --head-lr-mult reach training."""
    torch.manual_seed(0)
    source = VGG("A", num_classes=4, width=16, crop=32, init="glorot")  # torchvision format at ci scale: the ci profile is inferred
    weights = tmp_path / "vgg11-small.pth"
    torch.save(source.state_dict(), weights)
    out = tmp_path / "ft"
    argv = ["finetune", "--weights", str(weights), "--data", str(two_classes), "--out", str(out), "--freeze", "features",
            "--head-lr-mult", "3", "--epochs", "1", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    run = load_checkpoint(out)["run"]
    assert (run["profile"], run["weights"], run["freeze"], run["head_lr_mult"]) == ("ci", str(weights), "features", 3.0), run
    tuned = load_net(checkpoint=out)
    assert tuned.normalization.name == "torchvision" and tuned.classes == ("n90000000", "n90000001")
    assert_same_features(tuned.model, source)
    assert not torch.equal(tuned.model.classifier[0].weight, source.classifier[0].weight)
    assert tuned.model.head.weight.shape == (2, source.head.weight.shape[1])


def test_finetune_resumes_after_preemption(two_classes, source_run, tmp_path, monkeypatch):
    import os
    import signal

    reference = tmp_path / "reference"
    train(finetune_config(two_classes, source_run, epochs=2), reference)
    original, calls = torch.optim.SGD.step, {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    with pytest.raises(Preempted):
        train(finetune_config(two_classes, source_run, epochs=2), tmp_path / "preempted")
    monkeypatch.setattr(torch.optim.SGD, "step", original)
    import vgg.training.starting_weights

    def no_second_read(*args, **kwargs):
        raise AssertionError("a resumed run read its source weights again: its checkpoint holds them")

    monkeypatch.setattr(vgg.training.starting_weights, "load_net", no_second_read)
    train(finetune_config(two_classes, source_run, epochs=2), tmp_path / "preempted")
    ours, theirs = load_net(checkpoint=reference).model.state_dict(), load_net(checkpoint=tmp_path / "preempted").model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_finetune_errors(two_classes, source_run, tmp_path):
    with pytest.raises(ValueError, match="trained at a 32 px crop but the smoke profile crops 64 px"):
        train(finetune_config(two_classes, source_run, profile="smoke"), tmp_path / "x")
    with pytest.raises(ValueError, match="replaces --init"):
        train(finetune_config(two_classes, source_run, init="glorot"), tmp_path / "y")
    with pytest.raises(ValueError, match="expects the mean-rgb normalisation, not torchvision"):
        train(finetune_config(two_classes, source_run, normalization="torchvision"), tmp_path / "z")
