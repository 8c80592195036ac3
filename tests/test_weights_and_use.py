"""Published weights and everyday use: weight specs, predict, finetune, make pretrained."""

import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

import vgg.weights as weights_module
from tests.helpers_images import assert_drawn_figure
from vgg.checkpoint import load_checkpoint, read_done
from vgg.cli import main
from vgg.datasets import load_split
from vgg.evaluate import evaluate
from vgg.models import VGG
from vgg.nets import load_net
from vgg.predict import predict, save_figure
from vgg.profiles import get_profile
from vgg.suite.results_csv import read_rows
from vgg.synthetic import SynthSpec, generate
from vgg.run_config import TrainConfig
from vgg.stop_signals import Preempted
from vgg.train import train
from vgg.weights import cache_path, load_weights

ROOT = Path(__file__).resolve().parent.parent


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


def rigged_net_file(tmp_path: Path, winner: int) -> Path:
    torch.manual_seed(0)
    model = VGG("A", num_classes=4, width=16, crop=32, init="glorot")
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]) + 9.0 * torch.nn.functional.one_hot(torch.tensor(winner), 4))
    path = tmp_path / "rigged.pth"
    torch.save(model.state_dict(), path)
    return path


def test_predict_prints_the_known_answer_and_draws_it(tmp_path, ci_data):
    images = [path for path, _ in load_split(ci_data, "val").samples[:2]]
    path = rigged_net_file(tmp_path, winner=2)
    result = subprocess.run([sys.executable, "-m", "vgg", "predict", *map(str, images), "--weights", str(path), "--topk", "2",
                             "--device", "cpu", "--save-figure", str(tmp_path / "top2.png")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith(str(images[0].parent.parent))]) == 2
    assert all(": class 2 (0.99" in line and ", class 1 (0.00" in line for line in lines[:2])
    assert_drawn_figure(tmp_path / "top2.png")


def test_predict_names_our_classes(tmp_path, ci_data):
    run = tmp_path / "A"
    train(TrainConfig(config="A", train_scale="256", data=str(ci_data), profile="ci", init="glorot", epochs=1, workers=0, progress=False), run)
    image = load_split(ci_data, "val").samples[0][0]
    (prediction,) = predict(load_net(checkpoint=run), [image], topk=4)
    assert sorted(prediction.classes) == sorted(f"n9{i:07d} ({d})" for i, d in enumerate(["disc with stripes", "square with checker", "triangle with dots", "cross with solid"]))
    assert abs(sum(prediction.probabilities) - 1) < 1e-4
    assert_drawn_figure(save_figure([prediction], tmp_path / "p.png"))


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


FAR_BELOW_CHANCE = 30.0  # % top-1 error on two classes, where chance is 50%: 4 standard errors below it on 100 val images
                         # (generator 2, darker textures and clutter: 23-27% after 4-6 epochs)


def test_finetune_command_learns_two_new_classes(two_classes, trained_source, tmp_path):
    out = tmp_path / "cats-dogs"
    result = subprocess.run([sys.executable, "-m", "vgg", "finetune", "--checkpoint", str(trained_source), "--data", str(two_classes),
                             "--out", str(out), "--workers", "0", "--device", "cpu", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    done = read_done(out)
    assert done["profile"] == "smoke" and done["epochs"] <= get_profile("smoke").finetune_max_epochs  # the smoke profile's fine-tuning length
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


def test_make_pretrained_end_to_end_on_ci_data(tmp_path, ci_data):
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg11(weights=None, num_classes=4).state_dict(), weights_dir / "vgg11-random.pth")
    (weights_dir / "notes.pt").write_bytes(b"not weights")
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "vgg", "pretrained", "--weights-dir", str(weights_dir), "--data", str(ci_data),
                          "--results", str(results), "--limit", "1", "--workers", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipping notes.pt" in run.stdout
    rows = {(row["method"], row["test_scales"]): float(row["wall_s"]) for row in read_rows(results / "pretrained.csv")}
    # multi-crop+dense averages its parts' posteriors instead of evaluating them again
    assert abs(rows[("multi-crop+dense", "256|384|512")] - rows[("dense", "256|384|512")] - rows[("multi-crop", "256|384|512")]) <= 0.011
    report = subprocess.run([sys.executable, "-m", "vgg", "report", "pretrained", "--results", str(results), "--out-dir", str(tmp_path / "reports")],
                            cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "reports" / "pretrained.md").read_text()
    assert text.startswith("> **Not ImageNet (4 classes)") and "## vgg11-random (configuration A)" in text
    assert "| dense, Q = 256 (Table 3, S = 256) " in text and "29.6" in text  # the paper's A at S = Q = 256
    assert "torchvision docs (vgg11)" in text and "31.0" in text  # 100 - 69.020
