"""Appendix A's costs against classification's, measured in the same run: the trainer's step of a per-class
box regressor (PCR head, Euclidean loss on the true class's box, its correct-box counts) against the classifier's
step, and the dense localisation of one image (boxes of 5 classes at every position, scored by the parent net)
against the dense classification of it.

On a CPU: config D at smoke size (width 1/8, crop 64, batch 64, 50 classes, fp32). On CUDA: D at full width,
crop 224, batch 64, 1000 classes, bf16 autocast, as the paper profile trains.
"""

from __future__ import annotations

import pytest
import torch

from vgg.data.loaders import Batch
from vgg.data.normalization import PAPER_MEAN_RGB
from vgg.evaluation.protocols import Protocol
from vgg.localisation.boxes import encode
from vgg.localisation.protocols import dense_candidates
from vgg.localisation.regression import head_outputs
from vgg.nets.models import VGG
from vgg.nets.trained import Net
from vgg.recipe.profiles import get_profile
from vgg.training.train_step import MEMORY_FORMAT, forward_backward, sgd_optimizer

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
WIDTH, CROP, CLASSES = (1, 224, 1000) if CUDA else (8, 64, 50)
BATCH, BF16 = 64, CUDA
WHERE = f"D width/{WIDTH} crop {CROP} batch {BATCH}, {'CUDA bf16' if CUDA else f'CPU fp32, {torch.get_num_threads()} threads'}"


def net(outputs: int) -> VGG:
    torch.manual_seed(0)
    return VGG("D", num_classes=outputs, width=WIDTH, crop=CROP, init="glorot", dropout=0.0).to(DEVICE, memory_format=MEMORY_FORMAT)


def batch(boxes: bool) -> Batch:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (BATCH, 3, CROP, CROP), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    corners = torch.rand(BATCH, 2, generator=generator) * CROP / 2
    targets = encode(torch.cat([corners, corners + CROP / 2], dim=1), CROP) if boxes else None
    return Batch(images, labels, torch.zeros(BATCH, 3), torch.arange(BATCH), targets=targets).to(DEVICE)


def step_of(boxes: bool):
    model = net(head_outputs("pcr", CLASSES) if boxes else CLASSES)
    optimizer = sgd_optimizer(model, 1e-3, 0.9, 5e-4)
    data = batch(boxes)

    def step():
        forward_backward(model, PAPER_MEAN_RGB, data, DEVICE, bf16=BF16)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if CUDA:
            torch.cuda.synchronize()

    return step


def run(benchmark, step, items: int, group: str, reference: bool = False) -> None:
    benchmark.group = f"{group} ({WHERE})"
    benchmark.extra_info.update(items=items, reference=reference)
    benchmark.pedantic(step, rounds=8, warmup_rounds=2)


def test_classifier_training_step_reference(benchmark):
    run(benchmark, step_of(boxes=False), BATCH, "training step: box regressor vs classifier", reference=True)


def test_pcr_box_regressor_training_step(benchmark):
    run(benchmark, step_of(boxes=True), BATCH, "training step: box regressor vs classifier")


@pytest.fixture(scope="module")
def nets() -> tuple[Net, Net]:
    profile = get_profile("paper")
    made = [Net(net(outputs).eval(), PAPER_MEAN_RGB, profile, "bench.pt", "bench", "384", None) for outputs in (head_outputs("pcr", CLASSES), CLASSES)]
    return made[0], made[1]


def image() -> torch.Tensor:
    side = CROP * 12 // 7  # Q = 384 at the crop's scale
    return torch.randint(0, 256, (3, side, side * 4 // 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))


def test_dense_classification_of_one_image_reference(benchmark, nets):
    protocol = Protocol(nets[1].model, PAPER_MEAN_RGB, "dense", flip=False, device=DEVICE, precision="bf16" if BF16 else "fp32")
    picture = image()
    run(benchmark, lambda: protocol.dense(picture), 1, "dense protocol: localisation vs classification of one image", reference=True)


def test_dense_localisation_of_one_image(benchmark, nets):
    picture, classes = image(), torch.arange(5)

    def localise():
        with torch.no_grad(), torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=BF16):
            dense_candidates(nets[0], nets[1], picture, tuple(picture.shape[-2:]), classes, DEVICE)

    run(benchmark, localise, 1, "dense protocol: localisation vs classification of one image")
