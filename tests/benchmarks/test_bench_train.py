"""Training-step throughput at smoke size (D, width 1/8, crop 64, batch 32) on this machine's CPU.

Reference: torchvision's VGG-16 built with the same widths (features from its own
`make_layers`, classifier widths divided by 8) trained the plain way: float NCHW input,
its AdaptiveAvgPool2d((7, 7)) head. Ours: uint8 batch normalised in the step, channels-last
memory format, FC1 over the real 2x2 feature map. A third entry isolates channels-last.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import VGG as TorchvisionVGG
from torchvision.models.vgg import cfgs, make_layers

from vgg.models import VGG
from vgg.normalization import PAPER_MEAN_RGB

WIDTH, CROP, BATCH, CLASSES = 8, 64, 32, 10


def torchvision_d() -> nn.Module:
    config = [v if v == "M" else v // WIDTH for v in cfgs["D"]]
    model = TorchvisionVGG(make_layers(config), num_classes=CLASSES)
    fc = 4096 // WIDTH
    model.classifier = nn.Sequential(
        nn.Linear(512 // WIDTH * 7 * 7, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, CLASSES)
    )
    return model


def make_step(model: nn.Module, prepare):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.randint(0, 256, (BATCH, 3, CROP, CROP), dtype=torch.uint8)
    labels = torch.randint(0, CLASSES, (BATCH,))

    def step():
        loss = F.cross_entropy(model(prepare(images)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def run(benchmark, step, reference: bool = False) -> None:
    benchmark.group = f"train step D width/{WIDTH} crop {CROP} batch {BATCH} (CPU, {torch.get_num_threads()} threads)"
    benchmark.extra_info.update(items=BATCH, reference=reference)
    benchmark.pedantic(step, rounds=8, warmup_rounds=2)


def test_torchvision_vgg16_plain_reference(benchmark):
    torch.manual_seed(0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    run(benchmark, make_step(torchvision_d().train(), lambda x: (x.float() / 255 - mean) / std), reference=True)


def test_ours_channels_last(benchmark):
    torch.manual_seed(0)
    model = VGG("D", num_classes=CLASSES, width=WIDTH, crop=CROP, init="glorot").train().to(memory_format=torch.channels_last)
    run(benchmark, make_step(model, lambda x: PAPER_MEAN_RGB(x).contiguous(memory_format=torch.channels_last)))


def test_ours_nchw(benchmark):
    torch.manual_seed(0)
    model = VGG("D", num_classes=CLASSES, width=WIDTH, crop=CROP, init="glorot").train()
    run(benchmark, make_step(model, lambda x: PAPER_MEAN_RGB(x)))
