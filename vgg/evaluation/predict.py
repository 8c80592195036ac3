"""`python -m vgg predict`: the top-k classes of images under one of the paper's test protocols."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vgg.data.loaders import read_image
from vgg.data.transforms import ScaleRange, rescale
from vgg.evaluation.protocols import Protocol, check_test_scales
from vgg.nets.trained import Net
from vgg.nets.weights import imagenet_categories
from vgg.runtime.checkpoint import atomic_write_figure

DEFAULT_WEIGHTS_SCALE = 256
"""Test scale for torchvision weights, which carry no training scale: the paper's Q for S = 256."""
BAD_IMAGE_ADVICE = "Replace the file, or leave it out of the command"
"""What to do about an undecodable image: predict has no --skip-bad-images."""


@dataclass
class Prediction:
    image: Path
    classes: list[str]
    probabilities: list[float]

    def line(self) -> str:
        ranked = ", ".join(f"{name} ({p:.3f})" for name, p in zip(self.classes, self.probabilities))
        return f"{self.image}: {ranked}"


def class_names(net: Net) -> list[str]:
    """Readable class names: ImageNet's for 1000-class torchvision weights; our run's folder names
    (with the synthetic set's descriptions when its classes.txt is at hand) for our checkpoints."""
    if net.classes is None:
        if net.model.spec.num_classes == 1000:
            return imagenet_categories()
        return [f"class {i}" for i in range(net.model.spec.num_classes)]
    names = list(net.classes)
    data = net.data_dir
    descriptions = {}
    if data is not None and (Path(data) / "classes.txt").is_file():
        for line in (Path(data) / "classes.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            descriptions[wnid] = text
    return [f"{name} ({descriptions[name]})" if name in descriptions else name for name in names]


def default_scales(net: Net) -> list[int]:
    if net.train_scale == "unknown":
        return [DEFAULT_WEIGHTS_SCALE]
    return [ScaleRange.parse(net.train_scale).single_test_scale]


def check_image_paths(images: list[Path]) -> None:
    """Refuse a path that does not exist or is a folder, before any image is read."""
    for path in map(Path, images):
        if not path.exists():
            raise ValueError(f"image {path} does not exist")
        if path.is_dir():
            raise ValueError(f"image {path} is a folder: pass image files (JPEG or PNG), e.g. {path / '*.jpg'}")


def predict(
    net: Net, images: list[Path], method: str = "dense", topk: int = 5, scales: list[int] | None = None, device: str = "cpu",
    max_scale: int | None = None,
) -> list[Prediction]:
    """Top-k classes and posteriors of each image (scales in paper units, default: the net's single
    test scale; at most `max_scale`, default: see `vgg.evaluation.protocols.check_test_scales`)."""
    if topk < 1:
        raise ValueError("--topk must be at least 1")
    scales = scales or default_scales(net)
    check_test_scales(net, scales, max_scale)
    check_image_paths(images)
    pixels = [max(net.profile.size(q), net.model.spec.crop) for q in scales]
    protocol = Protocol.of_net(net, method, device=device)
    names = class_names(net)
    predictions = []
    for path in images:
        image = read_image(path, BAD_IMAGE_ADVICE)
        posteriors = protocol.posteriors([rescale(image, q) for q in pixels])
        values, indices = torch.topk(posteriors, min(topk, len(names)))
        predictions.append(Prediction(Path(path), [names[i] for i in indices.tolist()], values.tolist()))
    return predictions


def save_figure(predictions: list[Prediction], path: Path | str) -> Path:
    """Each image beside a bar chart of its top-k posteriors, one row per image."""
    import matplotlib  # here, not at the top: predict without --save-figure starts without matplotlib and seaborn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(len(predictions), 2, figsize=(10, 3 * len(predictions)), squeeze=False)
    for (image_axis, bar_axis), prediction in zip(axes, predictions):
        image_axis.imshow(read_image(prediction.image).permute(1, 2, 0).numpy())
        image_axis.set_title(prediction.image.name)
        image_axis.axis("off")
        sns.barplot(x=prediction.probabilities, y=prediction.classes, ax=bar_axis, orient="h")
        bar_axis.set_xlim(0, 1)
        bar_axis.set_xlabel("posterior")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_figure(figure, path)
    plt.close(figure)
    return path
