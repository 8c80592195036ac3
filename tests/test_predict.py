"""Top-k prediction for image files (`vgg.evaluation.predict`): a net rigged to a known answer, our class names, the figure."""

import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers_images import assert_drawn_figure
from vgg.data.datasets import load_split
from vgg.evaluation.predict import predict, save_figure
from vgg.nets.models import VGG
from vgg.nets.trained import load_net
from vgg.training.run_config import TrainConfig
from vgg.training.train import train

ROOT = Path(__file__).resolve().parent.parent


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
