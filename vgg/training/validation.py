"""Training's per-epoch validation (what drives the learning-rate drops, `vgg.training.schedule`): the
centre-crop protocol (`vgg.evaluation.protocols`) on a fixed val subset rescaled to the single test scale Q
of the run's training scale, no flip; errors counted on the device, summed over the ranks. The
loader crops (`CentreCropTransform`) so that its batches are of one size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vgg.data.datasets import ImageList
from vgg.data.loaders import EpochSampler, iterate_epoch, make_loader
from vgg.data.normalization import Normalization
from vgg.data.transforms import CentreCropTransform
from vgg.evaluation.metrics import batch_sums, error_percent
from vgg.evaluation.protocols import Protocol
from vgg.localisation.box_data import image_dataset
from vgg.localisation.regression import box_sums, predicted_boxes
from vgg.nets.models import VGG
from vgg.runtime import distributed
from vgg.runtime.distributed import DistributedContext


class Validation:
    """The val subset of a run and its loader (built on first use: its workers then persist across epochs)."""

    def __init__(
        self, images: ImageList, boxes: list[np.ndarray] | None, scale: int, crop: int, normalization: Normalization, context: DistributedContext,
        batch: int, workers: int, skip_bad_images: bool = False, cache_decoded: bool = False, log: Callable[[str], None] = print,
        precision: str = "fp32",
    ):
        """`boxes`: a box regressor's, each image's (`vgg.localisation.box_data`); None for a classifier."""
        self.dataset = image_dataset(images, boxes, CentreCropTransform(scale, crop), crop, 0, skip_bad_images, cache_decoded)
        self.normalization, self.context = normalization, context
        self.batch, self.workers, self.log, self.precision = batch, workers, log, precision
        self._loader = None

    def _batches(self, device: torch.device):
        if self._loader is None:
            rank, world_size = self.context.rank, self.context.world_size
            sampler = EpochSampler(len(self.dataset), shuffle=False, rank=rank, world_size=world_size, pad=False)
            self._loader = make_loader(self.dataset, sampler, self.batch, workers=self.workers, device=device)
        return iterate_epoch(self._loader, log=self.log)

    def errors(self, model: VGG, device: torch.device) -> tuple[float, float, int]:
        """Top-1 and top-5 error (%) of `model` on the subset under the centre-crop protocol (the
        loader has cropped; no flip; in the run's training precision), and the subset's size
        (counts summed on the device, read back once). A box regressor's error, both times, is the share
        of crops whose box for the true class misses its target (IoU <= 0.5), of the crops with a target."""
        protocol = Protocol(model, self.normalization, "centre-crop", flip=False, device=device, precision=self.precision)
        counts = torch.zeros(5, dtype=torch.float64, device=device)
        no_loss = torch.zeros((), device=device)
        for batch in self._batches(device):
            batch = batch.to(device)
            if batch.targets is not None:
                boxes = predicted_boxes(protocol.crop_outputs(batch.images), batch.labels)
                counts += box_sums(no_loss, boxes, batch.targets)
                continue
            posteriors = protocol.run_batch(protocol.batch_input(batch.images))
            counts += batch_sums(no_loss, posteriors, batch.labels)
        counts = distributed.all_reduce_sum(counts).cpu()
        total = int(counts[3])
        return error_percent(int(counts[1]), total), error_percent(int(counts[2]), total), total
