"""The training step (Sect. 3.1): SGD with momentum and weight decay, and one forward and backward
pass on a batch, with device-side sums; and how fast it runs (`timed`, `probe_rates`).

The trainer (`vgg.training.train`) and the GPU check (`vgg.suite.gpu_check`) both step through here, so
that what the GPU check measures is what training runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vgg.data.loaders import Batch, iterate_epoch
from vgg.data.normalization import Normalization
from vgg.evaluation.metrics import batch_sums
from vgg.localisation.regression import box_sums, euclidean_loss, predicted_boxes
from vgg.nets.models import VGG, is_head
from vgg.runtime.precision import autocast

MEMORY_FORMAT = torch.channels_last
PROBE_BATCHES = 8


def forward_backward(network: nn.Module, normalization: Normalization, batch: Batch, device: torch.device, accum: int = 1, bf16: bool | None = None) -> torch.Tensor:
    """The training step's forward and backward pass on one (micro-)batch already on `device`,
    gradients scaled by 1/`accum`; returns its loss and top-k sums on the device
    (`vgg.evaluation.metrics.batch_sums`), without waiting for it. bf16: autocast (default: on CUDA)."""
    bf16 = device.type == "cuda" if bf16 is None else bf16
    with autocast(device, "bf16" if bf16 else "fp32"):
        inputs = normalization(batch.images, batch.offsets).contiguous(memory_format=MEMORY_FORMAT)
        outputs = network(inputs)
        if batch.targets is not None:  # a box regressor (Appendix A): Euclidean loss on the true class's box
            boxes = predicted_boxes(outputs.float(), batch.labels)
            loss = euclidean_loss(boxes, batch.targets)
        else:
            loss = F.cross_entropy(outputs.float(), batch.labels)
    (loss / accum).backward()
    if batch.targets is not None:
        return box_sums(loss.detach(), boxes.detach(), batch.targets)
    return batch_sums(loss.detach(), outputs.detach(), batch.labels)


def sgd_optimizer(model: VGG, lr: float, momentum: float, weight_decay: float, head_lr_mult: float = 1.0, freeze_features: bool = False) -> torch.optim.SGD:
    """SGD with momentum and weight decay on the trainable parameters; a new last layer trained at
    `head_lr_mult` times the rate gets a group of its own. Each group's `lr_mult` scales the
    schedule's rate (`vgg.training.train_loop`)."""
    if freeze_features:
        model.features.requires_grad_(False)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for _, p in trainable], "lr_mult": 1.0}]
    if head_lr_mult != 1.0:
        groups = [
            {"params": [p for name, p in trainable if not is_head(name)], "lr_mult": 1.0},
            {"params": [p for name, p in trainable if is_head(name)], "lr_mult": head_lr_mult},
        ]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA; a no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Seconds per call of `run` after `warmup` calls, the device drained before and after."""
    for _ in range(warmup):
        run()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize(device)
    return (time.perf_counter() - started) / repeats


def probe_rates(
    network: nn.Module, model: VGG, normalization: Normalization, loader, device: torch.device, bf16: bool, batches: int = PROBE_BATCHES
) -> tuple[float, float]:
    """Images/s of `loader` over `batches` batches after its first, and of forward and backward
    passes of `network` on its first batch in the run's arithmetic (`bf16` or fp32). Leaves the weights, buffers, gradients and random
    generators as they were: the run is the same whether it probed or not."""
    torch_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    iterator = iter(iterate_epoch(loader, log=lambda message: None))
    first = next(iterator).to(device)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += len(next(iterator))
        except StopIteration:
            break
    loader_rate = seen / max(time.perf_counter() - started, 1e-9)
    del iterator
    # one warm-up step (and cuDNN's choice of algorithms), then three timed
    seconds = timed(lambda: forward_backward(network, normalization, first, device, bf16=bf16), device, warmup=1, repeats=3)
    step_rate = len(first) / seconds
    for parameter in model.parameters():
        parameter.grad = None
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    torch.set_rng_state(torch_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
    return loader_rate, step_rate
