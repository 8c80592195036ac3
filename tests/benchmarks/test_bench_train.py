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

from vgg.data.normalization import PAPER_MEAN_RGB
from vgg.nets.models import VGG

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


# ----- the smoke profile's training arithmetic and its whole epoch --------------------------------
SMOKE_BATCH, SMOKE_CLASSES = 64, 50


def smoke_step(config: str, precision: str):
    """One SGD step of the trainer (`forward_backward`, then the optimizer) on a smoke-size batch."""
    from vgg.data.loaders import Batch
    from vgg.training.train_step import forward_backward, sgd_optimizer

    torch.manual_seed(0)
    model = VGG(config, num_classes=SMOKE_CLASSES, width=WIDTH, crop=CROP, dropout=0.0, init="glorot").to(memory_format=torch.channels_last)
    optimizer = sgd_optimizer(model, 0.01, 0.9, 5e-4)
    images = torch.randint(0, 256, (SMOKE_BATCH, 3, CROP, CROP), dtype=torch.uint8)
    batch = Batch(images, torch.randint(0, SMOKE_CLASSES, (SMOKE_BATCH,)), torch.zeros(SMOKE_BATCH, 3), torch.arange(SMOKE_BATCH))

    def step():
        forward_backward(model, PAPER_MEAN_RGB, batch, torch.device("cpu"), bf16=precision == "bf16")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


@pytest.mark.parametrize("config", ["A", "D"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_smoke_step_bf16_vs_fp32(benchmark, config, precision):
    """bf16 autocast against fp32 (the reference) on this CPU: what `--precision auto` measures and decides on."""
    benchmark.group = f"smoke train step VGG-{config} width/{WIDTH} crop {CROP} batch {SMOKE_BATCH}: bf16 autocast vs fp32 (CPU, {torch.get_num_threads()} threads)"
    benchmark.extra_info.update(items=SMOKE_BATCH, reference=precision == "fp32")
    benchmark.pedantic(smoke_step(config, precision), rounds=8, warmup_rounds=2)


@pytest.fixture(scope="module")
def smoke_epoch(tmp_path_factory):
    """A trainer of VGG-A on the smoke profile (its crop, widths, batch, cache, loader workers and
    precision), over a generated set of 1,280 train images, ready for its epochs."""
    from vgg.training.run_config import TrainConfig
    from vgg.runtime.stop_signals import StopRequests
    from vgg.data.synthetic import SynthSpec, generate
    from vgg.training.train import Trainer

    root = tmp_path_factory.mktemp("smoke-epoch")
    data = generate(root / "data", SynthSpec(classes=SMOKE_CLASSES, train_per_class=1280 // SMOKE_CLASSES, val_per_class=2))
    trainer = Trainer(TrainConfig(config="A", train_scale="256", data=str(data), profile="smoke", init="glorot", progress=False), root / "run")
    with StopRequests() as stop:
        yield trainer, trainer.begin(), stop


def test_smoke_epoch_reference_bare_step(benchmark, smoke_epoch):
    trainer, loop, _ = smoke_epoch
    step = smoke_step("A", loop.precision)
    benchmark.group = f"smoke epoch of VGG-A ({loop.steps_per_epoch} steps of {SMOKE_BATCH}) vs its bare step (CPU, {torch.get_num_threads()} threads)"
    benchmark.extra_info.update(items=SMOKE_BATCH, reference=True)
    benchmark.pedantic(step, rounds=8, warmup_rounds=2)


def test_smoke_epoch_end_to_end(benchmark, smoke_epoch):
    """The trainer's epoch: cached decoded images, crops and flips in the loader worker, the steps,
    the read-backs (the first epoch, which decodes, is the warm-up round)."""
    from vgg.training.run_state import EpochTotals

    trainer, loop, stop = smoke_epoch

    def epoch():
        trainer.steps.run_epoch(loop, stop)
        loop.epoch, loop.step_in_epoch, loop.totals = loop.epoch + 1, 0, EpochTotals()

    benchmark.group = f"smoke epoch of VGG-A ({loop.steps_per_epoch} steps of {SMOKE_BATCH}) vs its bare step (CPU, {torch.get_num_threads()} threads)"
    benchmark.extra_info.update(items=loop.steps_per_epoch * SMOKE_BATCH)
    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
