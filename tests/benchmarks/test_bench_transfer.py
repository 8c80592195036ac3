"""Appendix B's feature extraction against torchvision's VGG-16 used the usual way, measured in the same run: a
batch of 16 images of one size (the smoke profile's Q = 384: 110 x 146, widths / 8, on this machine's CPU; on
CUDA, Q = 384 at full width, 384 x 512) to 4096/width-D penultimate descriptors.

Reference: torchvision's VGG-16 of the same widths on float NCHW input, `features`, its adaptive 7 x 7 average
pool and `classifier[:-1]` (one vector per image). Ours: the uint8 batch normalised in the step, channels-last,
the dense penultimate map (`vgg.transfer.features.penultimate_map`) averaged over its positions, without and with
the flipped images in the same batch (the descriptor Appendix B uses).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import VGG as TorchvisionVGG
from torchvision.models.vgg import cfgs, make_layers

from vgg.data.normalization import PAPER_MEAN_RGB
from vgg.nets.models import VGG
from vgg.transfer.features import penultimate_map

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
WIDTH, CROP, HEIGHT, WIDE = (1, 224, 384, 512) if CUDA else (8, 64, 110, 146)
BATCH = 16
GROUP = f"penultimate descriptors of {BATCH} images of {HEIGHT}x{WIDE}, D width/{WIDTH} ({'CUDA fp32' if CUDA else f'CPU, {torch.get_num_threads()} threads'})"


def images() -> torch.Tensor:
    return torch.randint(0, 256, (BATCH, 3, HEIGHT, WIDE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def run(benchmark, step, items: int = BATCH, reference: bool = False) -> None:
    benchmark.group = GROUP
    benchmark.extra_info.update(items=items, reference=reference)

    def timed():
        with torch.no_grad():
            step()
        if CUDA:
            torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=8, warmup_rounds=2)


def test_torchvision_vgg16_penultimate_reference(benchmark):
    torch.manual_seed(0)
    config = [v if v == "M" else v // WIDTH for v in cfgs["D"]]
    model = TorchvisionVGG(make_layers(config), num_classes=1000)
    fc = 4096 // WIDTH
    model.classifier = nn.Sequential(nn.Linear(512 // WIDTH * 7 * 7, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, 1000))
    model = model.eval().to(DEVICE)
    mean = torch.tensor([0.485, 0.456, 0.406], device=DEVICE).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=DEVICE).view(1, 3, 1, 1)
    batch = images()
    run(benchmark, lambda: model.classifier[:-1](torch.flatten(model.avgpool(model.features((batch.float() / 255 - mean) / std)), 1)), reference=True)


def ours() -> VGG:
    torch.manual_seed(0)
    return VGG("D", num_classes=1000, width=WIDTH, crop=CROP, init="glorot").eval().to(DEVICE, memory_format=torch.channels_last)


def test_ours_dense_penultimate_descriptor(benchmark):
    model, batch = ours(), images()
    run(benchmark, lambda: penultimate_map(model, PAPER_MEAN_RGB(batch).contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3)))


def test_ours_dense_penultimate_descriptor_with_flips(benchmark):
    model, batch = ours(), images()

    def step():
        both = PAPER_MEAN_RGB(torch.cat([batch, batch.flip(-1)])).contiguous(memory_format=torch.channels_last)
        return penultimate_map(model, both).mean(dim=(2, 3)).unflatten(0, (2, -1)).mean(dim=0)

    run(benchmark, step)
