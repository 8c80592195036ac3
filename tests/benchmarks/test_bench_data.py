"""Training-pipeline throughput on ImageNet-sized JPEGs: ours vs torchvision.transforms.

Both run in one process on one thread (as one DataLoader worker does), decode a JPEG,
rescale it so the shorter side is S, take a random 224 crop and a random flip. torchvision's
pipeline then converts to float and normalises, as is usual; ours returns uint8 and a
colour-shift offset, leaving normalisation to the model's device.
"""

from __future__ import annotations

import pytest
from PIL import Image
from torchvision import transforms as T

from vgg.data.datasets import load_split
from vgg.data.loaders import ImageDataset
from vgg.data.synthetic import SynthSpec, generate
from vgg.data.transforms import ScaleRange, TrainTransform

IMAGES = 48
CROP = 224


@pytest.fixture(scope="module")
def imagenet_sized_jpegs(tmp_path_factory):
    """JPEGs of about 500x375 (shorter side 375, aspect 3:4 to 4:3), like ImageNet's typical image."""
    spec = SynthSpec(classes=2, train_per_class=IMAGES // 2, val_per_class=1, min_side=375, max_side=375)
    return load_split(generate(tmp_path_factory.mktemp("bench") / "jpegs", spec), "train")


def torchvision_pipeline(scale: int) -> T.Compose:
    return T.Compose(
        [
            T.Resize(scale),
            T.RandomCrop(CROP),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


@pytest.mark.parametrize("scale", [256, 512])
def test_torchvision_transforms_reference(benchmark, imagenet_sized_jpegs, one_thread, scale):
    pipeline = torchvision_pipeline(scale)
    paths = [path for path, _ in imagenet_sized_jpegs.samples]

    def run():
        for path in paths:
            with Image.open(path) as image:
                pipeline(image.convert("RGB"))

    benchmark.group = f"train pipeline S={scale}"
    benchmark.extra_info.update(items=len(paths), reference=True)
    benchmark.pedantic(run, rounds=6, warmup_rounds=1)


@pytest.mark.parametrize("scale", [256, 512])
def test_ours(benchmark, imagenet_sized_jpegs, one_thread, scale):
    dataset = ImageDataset(imagenet_sized_jpegs, TrainTransform(ScaleRange(scale, scale), CROP), seed=0)

    def run():
        for index in range(len(dataset)):
            dataset[(0, index)]

    benchmark.group = f"train pipeline S={scale}"
    benchmark.extra_info.update(items=len(dataset))
    benchmark.pedantic(run, rounds=6, warmup_rounds=1)
