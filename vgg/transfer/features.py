"""The image descriptor of Appendix B: a net's penultimate (FC2) activations, applied densely.

The net, without its last FC layer, is applied fully convolutionally (`penultimate_map`, the
view `VGG.score_map` takes, stopped after FC2's ReLU) to the image rescaled isotropically to
shorter side Q; the fc_width-channel map (4096 for the paper's nets) is averaged over its
positions, and averaged with that of the horizontally flipped image. Over several Q the
per-scale descriptors are stacked (concatenated, D = fc_width x scales) or averaged (D = fc_width);
the result is L2-normalised. No soft-max anywhere. Two nets are fused late by stacking their
descriptors (`fuse_descriptors`). Scales here are in pixels (no profile mapping).

`descriptors` computes them over a dataset as dense evaluation does (`vgg.evaluation.evaluate`):
images decoded and rescaled to every scale in loader workers (`ScaledImages`), the passes over
images of the same rescaled size batched with their mirrors (`Batcher`), in IEEE fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vgg.data.datasets import ImageList
from vgg.data.loaders import EpochSampler, default_workers, read_image
from vgg.data.transforms import rescale
from vgg.evaluation.evaluate import ScaledImages
from vgg.evaluation.protocols import BATCH_IMAGES, Batcher, Protocol
from vgg.nets.models import VGG
from vgg.nets.trained import Net
from vgg.runtime.stop_signals import ignore_stop_signals

COMBINE = ("average", "stack")
"""How the descriptors of several scales make one: averaged (VOC), or stacked (concatenated: Caltech)."""
RAW = "raw"
"""`descriptors`' third way: the per-scale descriptors concatenated unnormalised, (N, scales x fc_width), which
`combine_raw` turns into either combination over any subset of the scales (what the feature cache keeps)."""


def penultimate_map(model: VGG, x: torch.Tensor) -> torch.Tensor:
    """The dense view of the net without its last FC layer (`VGG.score_map` up to FC2's ReLU and dropout, the
    identity in eval mode): (N, fc_width, h, w) for an input of at least crop x crop."""
    return model.score_map(x, layers=len(model.classifier) - 1)


def combine_scales(per_scale: Sequence[torch.Tensor], combine: str) -> torch.Tensor:
    """One L2-normalised descriptor from per-scale ones (each (D,)): stacked or averaged (`combine_raw`)."""
    every = range(len(per_scale))
    return combine_raw(torch.cat(list(per_scale))[None], every, every, combine)[0]


def combine_raw(raw: torch.Tensor, scales: Sequence[int], chosen: Sequence[int], combine: str) -> torch.Tensor:
    """(N, D) L2-normalised descriptors from (N, len(scales) x fc_width) raw ones (`descriptors(..., combine=RAW)`):
    the columns of the `chosen` scales (a subset of `scales`, in the given order), stacked or averaged."""
    missing = [q for q in chosen if q not in scales]
    if missing or not chosen:
        raise ValueError(f"scales {list(chosen)} are not all among the extracted {list(scales)}")
    per_scale = raw.reshape(len(raw), len(scales), -1)[:, [list(scales).index(q) for q in chosen]]
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    joined = per_scale.flatten(1) if combine == "stack" else per_scale.mean(dim=1)
    return F.normalize(joined, dim=1)


def fuse_descriptors(*parts: torch.Tensor) -> torch.Tensor:
    """Late fusion of several nets' descriptors of the same images, by stacking: each part ((D_i,) or
    (N, D_i)) is L2-normalised (a no-op on this module's descriptors), the parts are concatenated
    along the last dimension, and the result is L2-normalised again, so each net weighs the same."""
    if not parts:
        raise ValueError("fuse_descriptors needs at least one descriptor")
    return F.normalize(torch.cat([F.normalize(part, dim=-1) for part in parts], dim=-1), dim=-1)


class DescriptorPass(Protocol):
    """Dense evaluation's batchable pass (`Protocol`, driven by `Batcher`) with the penultimate
    map's spatial mean, flip-averaged, in place of the posteriors, and the scales combined by
    `combine_scales`: `posteriors(scaled_images)` is one image's descriptor. Always IEEE fp32
    (the protocol's fp32 context is `FullFP32`: TF32 off on CUDA); the model is put in eval mode."""

    def __init__(self, net: Net, combine: str = "average", flip: bool = True, device: torch.device | str = "cpu"):
        if combine not in (*COMBINE, RAW):
            raise ValueError(f"combine must be one of {', '.join((*COMBINE, RAW))}, got {combine!r}")
        super().__init__(net.model, net.normalization, "dense", flip, device=device, precision="fp32")
        self.combine_mode = combine

    @torch.no_grad()
    def run_batch(self, inputs: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate activations (B, fc_width) of B (3, Q, W) uint8 images of one size, each
        averaged with its mirror's (the mirrors run in the same batch)."""
        with self.autocast:
            pooled = penultimate_map(self.model, self._inputs(inputs)).float().mean(dim=(2, 3))
        return self._flip_mean(pooled)

    def combine(self, per_scale: list[torch.Tensor], multi_crop: torch.Tensor | None) -> torch.Tensor:
        if self.combine_mode == RAW:
            return torch.cat(per_scale).cpu()
        return combine_scales(per_scale, self.combine_mode).cpu()


class CroppedScaledImages(ScaledImages):
    """`ScaledImages` of a box of each image (VOC actions' person boxes): the image decoded, cut to its box
    (x0, y0, x1, y1 continuous pixels, rounded outwards and clipped to the image), and rescaled."""

    def __init__(self, images: ImageList, scales: list[int], boxes: np.ndarray):
        super().__init__(images, scales)
        if len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} boxes for {len(images)} images")
        self.boxes = np.asarray(boxes, dtype=np.float64)

    def __getitem__(self, key: tuple[int, int]):
        _, index = key
        path, label = self.images.samples[index]
        image = read_image(path)
        height, width = image.shape[-2:]
        x0, y0, x1, y1 = self.boxes[index]
        left, top = min(max(0, math.floor(x0)), width - 1), min(max(0, math.floor(y0)), height - 1)
        right, bottom = max(left + 1, min(width, math.ceil(x1))), max(top + 1, min(height, math.ceil(y1)))
        crop = image[:, top:bottom, left:right]
        return index, label, [rescale(crop, scale) for scale in self.scales]


def _check_scales(net: Net, scales: Sequence[int]) -> list[int]:
    crop = net.model.spec.crop
    if not scales or min(scales) < crop:
        raise ValueError(f"give at least one scale, each at least the net's crop of {crop} px; got {list(scales)}")
    return [int(scale) for scale in scales]


def image_descriptor(
    net: Net, image: torch.Tensor, scales: Sequence[int], combine: str = "average", flip: bool = True
) -> torch.Tensor:
    """The Appendix B descriptor (D,) of one uint8 (3, H, W) image, on the device the net is on:
    per scale Q (pixels), the penultimate map of the image rescaled to shorter side Q, averaged over
    its positions (and with its mirror's when `flip`); the scales stacked (D = fc_width x scales)
    or averaged (D = fc_width) as `combine` says; L2-normalised."""
    scales = _check_scales(net, scales)
    device = next(net.model.parameters()).device
    return DescriptorPass(net, combine, flip, device).posteriors([rescale(image, scale) for scale in scales])


def descriptors(
    net: Net,
    images: ImageList,
    scales: Sequence[int],
    combine: str = "average",
    flip: bool = True,
    device: torch.device | str | None = None,
    workers: int | None = None,
    batch_images: int = BATCH_IMAGES,
    boxes: np.ndarray | None = None,
) -> torch.Tensor:
    """`image_descriptor` of every image of `images`, (N, D) in dataset order, computed as dense
    evaluation is: each image decoded once and rescaled to every scale in `workers` loader processes
    (None: `default_workers`), and the passes over up to `batch_images` images of the same rescaled
    size (fewer when large, at most `BATCH_PIXELS` pixels) batched with their mirrors on `device`
    (None: CUDA if available). Batching changes the descriptors by float rounding only. With `boxes`
    ((N, 4) x0, y0, x1, y1), each image's box is described in its place (`CroppedScaledImages`); `combine`
    may be `RAW` (per-scale descriptors, unnormalised, for `combine_raw`)."""
    scales = _check_scales(net, scales)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    batcher = Batcher(DescriptorPass(net, combine, flip, device), batch_images=batch_images)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        ScaledImages(images, scales) if boxes is None else CroppedScaledImages(images, scales, boxes), batch_size=None,
        sampler=EpochSampler(len(images), shuffle=False, pad=False),
        num_workers=workers, prefetch_factor=4 if workers else None, worker_init_fn=ignore_stop_signals,
    )
    done: dict[int, torch.Tensor] = {}
    for index, _, scaled in loader:
        done.update(batcher.add(index, scaled))
    done.update(batcher.finish())
    if not done:
        return torch.empty(0, net.model.spec.fc_width * (1 if combine == "average" else len(scales)))
    return torch.stack([done[index] for index in range(len(images))])
