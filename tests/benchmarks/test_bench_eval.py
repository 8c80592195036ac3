"""Evaluation throughput at smoke size (width 1/8, crop 64, Q = 73 px; 3 scales for multi-crop).

Reported: images/s for dense and for multi-crop (50 crops per scale, batched), the batched
multi-crop against the same crops run one forward pass per crop, and dense evaluation batched
over images of the same size (`Batcher`, as `evaluate` does) against one image at a time
(`Protocol.posteriors`, a pass of 2 per image, as evaluation did before batching) on 200
synthetic val images, whose sizes and aspect ratios vary as the generator makes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vgg.data.datasets import load_split
from vgg.data.loaders import read_image
from vgg.data.normalization import PAPER_MEAN_RGB
from vgg.data.synthetic import SynthSpec, generate
from vgg.data.transforms import rescale
from vgg.evaluation.protocols import Batcher, Protocol, grid_crops
from vgg.nets.models import VGG
from vgg.nets.trained import Net
from vgg.recipe.profiles import get_profile

IMAGES = 8


def smoke_net(config: str, classes: int) -> Net:
    torch.manual_seed(0)
    model = VGG(config, num_classes=classes, width=8, crop=64, init="glorot")
    return Net(model, PAPER_MEAN_RGB, get_profile("smoke"), Path("bench"), "bench", "256", None)


@pytest.fixture(scope="module")
def net() -> Net:
    return smoke_net("D", 10)


@pytest.fixture(scope="module")
def scaled_images() -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [[torch.randint(0, 256, (3, q, q * 4 // 3), dtype=torch.uint8, generator=generator) for q in (64, 73, 82)] for _ in range(IMAGES)]


@pytest.fixture(scope="module")
def synthetic_at_73(tmp_path_factory) -> list[list[torch.Tensor]]:
    spec = SynthSpec(classes=20, train_per_class=1, val_per_class=10)
    val = load_split(generate(tmp_path_factory.mktemp("bench") / "synthetic", spec, workers=1), "val")
    return [[rescale(read_image(path), 73)] for path, _ in val.samples]


def run(benchmark, group: str, work, items: int = IMAGES, reference: bool = False) -> None:
    benchmark.group = group
    benchmark.extra_info.update(items=items, reference=reference)
    benchmark.pedantic(work, rounds=3, warmup_rounds=1)


def test_dense_single_scale(benchmark, net, scaled_images):
    protocol = Protocol.of_net(net, "dense")
    run(benchmark, "evaluation images/s (smoke D)", lambda: [protocol.posteriors(images[1:2]) for images in scaled_images], reference=True)


def test_multi_crop_three_scales(benchmark, net, scaled_images):
    protocol = Protocol.of_net(net, "multi-crop")
    run(benchmark, "evaluation images/s (smoke D)", lambda: [protocol.posteriors(images) for images in scaled_images])


def test_multi_crop_per_crop_loop_reference(benchmark, net, scaled_images):
    model = net.model.eval().to(memory_format=torch.channels_last)

    @torch.no_grad()
    def one_forward_per_crop():
        for images in scaled_images:
            for image in images:
                crops = grid_crops(image, 64)
                for crop in torch.cat([crops, crops.flip(-1)]):
                    F.softmax(model(PAPER_MEAN_RGB(crop[None]).contiguous(memory_format=torch.channels_last)), dim=1)

    run(benchmark, "multi-crop: batched vs one forward per crop", one_forward_per_crop, reference=True)


def test_multi_crop_batched(benchmark, net, scaled_images):
    protocol = Protocol.of_net(net, "multi-crop")
    run(benchmark, "multi-crop: batched vs one forward per crop", lambda: [protocol.posteriors(images) for images in scaled_images])


DENSE_GROUP = "dense Q=73: batched by size vs one image at a time (smoke A)"


def test_dense_one_image_at_a_time_reference(benchmark, synthetic_at_73):
    protocol = Protocol.of_net(smoke_net("A", 50), "dense")
    run(benchmark, DENSE_GROUP, lambda: [protocol.posteriors(images) for images in synthetic_at_73], len(synthetic_at_73), reference=True)


def test_dense_batched_by_size(benchmark, synthetic_at_73):
    protocol = Protocol.of_net(smoke_net("A", 50), "dense")

    def batched():
        batcher = Batcher(protocol)
        done = [item for number, images in enumerate(synthetic_at_73) for item in batcher.add(number, images)]
        return done + batcher.finish()

    run(benchmark, DENSE_GROUP, batched, len(synthetic_at_73))
