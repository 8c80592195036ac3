"""Evaluation throughput at smoke size (D, width 1/8, crop 64, Q = 73 px, 3 scales for multi-crop).

Reported: images/s for dense and for multi-crop (50 crops per scale, batched), and the
batched multi-crop against the same crops run one forward pass per crop (the reference).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vgg.evaluate import Net, Protocol, grid_crops
from vgg.models import VGG
from vgg.normalization import PAPER_MEAN_RGB
from vgg.profiles import get_profile

IMAGES = 8


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(0)
    model = VGG("D", num_classes=10, width=8, crop=64, init="glorot")
    return Net(model, PAPER_MEAN_RGB, get_profile("smoke"), Path("bench"), "bench", "256", None)


@pytest.fixture(scope="module")
def scaled_images() -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [[torch.randint(0, 256, (3, q, q * 4 // 3), dtype=torch.uint8, generator=generator) for q in (64, 73, 82)] for _ in range(IMAGES)]


def run(benchmark, group: str, work, reference: bool = False) -> None:
    benchmark.group = group
    benchmark.extra_info.update(items=IMAGES, reference=reference)
    benchmark.pedantic(work, rounds=3, warmup_rounds=1)


def test_dense_single_scale(benchmark, net, scaled_images):
    protocol = Protocol(net, "dense")
    run(benchmark, "evaluation images/s (smoke D)", lambda: [protocol.posteriors(images[1:2]) for images in scaled_images], reference=True)


def test_multi_crop_three_scales(benchmark, net, scaled_images):
    protocol = Protocol(net, "multi-crop")
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
    protocol = Protocol(net, "multi-crop")
    run(benchmark, "multi-crop: batched vs one forward per crop", lambda: [protocol.posteriors(images) for images in scaled_images])
