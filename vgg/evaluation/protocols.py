"""The paper's test protocols (Sect. 3.2, Tables 3-6): dense, multi-crop, their combination,
multi-scale averaging, and the test scales they accept; `vgg.evaluation.evaluate` runs them over a dataset
(`vgg.evaluation.scores` fuses nets, Table 6).

Every protocol first rescales the test image isotropically so that its shorter side is the
test scale Q (given in the paper's units, mapped by the net's profile).

- dense: the net applied fully convolutionally (`VGG.score_map`) to the whole image; the
  class-score map is averaged spatially, and by default the soft-max comes after that
  average (`dense_softmax="after-average"`; the paper leaves the order open, so
  "before-average" soft-maxes each map cell first). With flips (the default), the
  posteriors of the image and its mirror are averaged.
- multi-crop: a regular 5x5 grid of crop x crop crops per scale, evenly spaced with the
  corners included, and their mirrors: 50 crops per scale, batched through the net; their
  soft-max posteriors are averaged.
- multi-crop+dense: the average of the two methods' posteriors (Table 5).
- centre-crop: the central crop x crop crop only (the Sect. 4.1 B vs B-5x5 comparison).
- several scales: posteriors averaged over them (Table 4), each at most `vgg.data.transforms.MAX_SCALE`
  unless raised (`check_test_scales`: dense memory grows as the square of the scale).

Over a dataset, `Batcher` batches the dense and centre-crop passes over images of the same
size; the posteriors are those of `Protocol.posteriors` image by image, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Hashable
import torch
import torch.nn.functional as F

from vgg.data.normalization import Normalization
from vgg.data.transforms import MAX_SCALE, centre_crop
from vgg.nets.models import VGG
from vgg.nets.trained import Net
from vgg.recipe.paper import PAPER
from vgg.runtime.precision import autocast, resolve

METHODS = ("dense", "multi-crop", "multi-crop+dense", "centre-crop")
COMBINED_METHODS = {"multi-crop+dense": ("dense", "multi-crop")}
"""Methods whose posteriors are the average of other methods' at the same scales (Sect. 4.3)."""
DENSE_SOFTMAX = ("after-average", "before-average")
GRID = PAPER.multi_crop_grid
BATCH_IMAGES = 32
"""Images (each with its mirror) per batched dense or centre-crop pass over a dataset..."""
BATCH_PIXELS = 1 << 22
"""...and at most this many pixels per pass (e.g. 11 images at Q = 512): bounds the activations."""
PENDING_IMAGES = 256
"""Rescaled images waiting for a batch at most; beyond, the oldest size's batch runs part-full."""


def averaged_parts(method: str, scales: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """The (method, scales) evaluations whose posterior average an evaluation is, as `Protocol.combine`
    computes it: multi-crop+dense is the mean of dense and multi-crop at the same scales; dense or
    multi-crop at several scales is the mean of that method at each scale. Empty where the
    evaluation is computed from images (one scale of dense, multi-crop or centre-crop)."""
    if method in COMBINED_METHODS:
        return [(part, tuple(scales)) for part in COMBINED_METHODS[method]]
    if method in ("dense", "multi-crop") and len(scales) > 1:
        return [(method, (scale,)) for scale in scales]
    return []


def grid_positions(length: int, crop: int, count: int = GRID) -> list[int]:
    """`count` evenly spaced crop offsets along a side of `length`, both ends included."""
    if length < crop:
        raise ValueError(f"a side of {length} px cannot hold a {crop} px crop")
    return [round(i * (length - crop) / (count - 1)) for i in range(count)]


def grid_crops(image: torch.Tensor, crop: int, count: int = GRID) -> torch.Tensor:
    """The count x count grid of crop x crop crops of a (3, H, W) image: (count^2, 3, crop, crop)."""
    rows = grid_positions(image.shape[-2], crop, count)
    columns = grid_positions(image.shape[-1], crop, count)
    return torch.stack([image[:, top : top + crop, left : left + crop] for top in rows for left in columns])


def dense_memory_bytes(net: Net, scale: int) -> int:
    """A rough peak memory of the dense evaluation of one image at test scale `scale` (paper units).

    The image is taken as 4:3, its shorter side `scale` mapped by the net's profile. The peak is the
    rescaled uint8 image plus two float32 maps of the first block at full resolution (a conv's input
    and output; each later block holds half as many values), for the image and its mirror. The
    weights, convolution workspace and batches of several small images come on top.
    """
    side = net.profile.size(scale)
    pixels = side * (side * 4 // 3)
    first_channels = net.model.features[0].out_channels  # conv1's: block 1 has the largest maps
    return pixels * 3 + 2 * 2 * first_channels * pixels * 4


def check_test_scales(net: Net, scales: list[int], max_scale: int | None = None) -> None:
    """Refuse test scales that are not positive or above `max_scale` paper units (None: the
    `MAX_SCALE`), before anything is allocated, naming what the largest would take."""
    limit = MAX_SCALE if max_scale is None else max_scale
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"test scale {scale} is not positive: give the shorter image side in paper units, e.g. 256,384,512")
    largest = max(scales)
    if largest > limit:
        size = dense_memory_bytes(net, largest)
        memory = f"{size / 1e9:,.1f} GB" if size >= 1e9 else f"{size / 1e6:,.0f} MB"
        raise ValueError(
            f"test scale {largest} is above the limit of {limit} (paper units; the paper tests at 224 to 512): "
            f"densely evaluating one 4:3 image at Q = {largest} ({net.profile.size(largest)} px on the {net.profile.name} "
            f"profile) takes about {memory}; pass --max-scale {largest} to allow it"
        )


class Protocol:
    """One test protocol of one net on one device: posteriors for an image given at each scale.

    Dense and centre-crop are the batchable part (`batch_input`, `run_batch`): one pass per
    scale on an image, or on its central crop. Multi-crop runs its 50 crops per scale per image.
    """

    def __init__(
        self, model: VGG, normalization: Normalization, method: str, flip: bool = True, dense_softmax: str = "after-average",
        device: torch.device | str = "cpu", precision: str = "fp32",
    ):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if dense_softmax not in DENSE_SOFTMAX:
            raise ValueError(f"--dense-softmax must be one of {', '.join(DENSE_SOFTMAX)}, got {dense_softmax!r}")
        self.normalization, self.method, self.flip, self.dense_softmax = normalization, method, flip, dense_softmax
        self.device = torch.device(device)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        self.crop = model.spec.crop
        # fp32 is true fp32 (TF32 off on CUDA: the paper's numbers are fp32); auto is decided for the device; resolve rejects the rest
        self.precision = resolve(precision, self.device)
        self.autocast = autocast(self.device, self.precision)

    @classmethod
    def of_net(
        cls, net: Net, method: str, flip: bool = True, dense_softmax: str = "after-average", device: torch.device | str = "cpu",
        precision: str | None = None,
    ) -> Protocol:
        """The protocol for a trained net; `precision` defaults to its profile's `eval_precision`."""
        return cls(net.model, net.normalization, method, flip, dense_softmax, device, precision or net.profile.eval_precision)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.flip:
            images = torch.cat([images, images.flip(-1)])
        return self.normalization(images).contiguous(memory_format=torch.channels_last)

    def _flip_mean(self, posteriors: torch.Tensor) -> torch.Tensor:
        """(B, K) from the (2B, K) posteriors of B images then their mirrors (or (B, K) without flips)."""
        return posteriors.unflatten(0, (2 if self.flip else 1, -1)).mean(dim=0)

    @torch.no_grad()
    def dense_batch(self, images: torch.Tensor) -> torch.Tensor:
        """Dense posteriors (B, K) of B (3, Q, W) uint8 images of one size, each flip-averaged."""
        with self.autocast:
            maps = self.model.score_map(self._inputs(images)).float()
        if self.dense_softmax == "after-average":
            return self._flip_mean(F.softmax(maps.mean(dim=(2, 3)), dim=1))
        return self._flip_mean(F.softmax(maps, dim=1).mean(dim=(2, 3)))

    def dense(self, image: torch.Tensor) -> torch.Tensor:
        """Dense posteriors (K,) of one (3, Q, W) uint8 image, flip-averaged."""
        return self.dense_batch(image[None])[0]

    @torch.no_grad()
    def crop_batch(self, crops: torch.Tensor) -> torch.Tensor:
        """Posteriors (B, K) of B crop x crop uint8 crops, each flip-averaged."""
        with self.autocast:
            logits = self.model(self._inputs(crops)).float()
        return self._flip_mean(F.softmax(logits, dim=1))

    @torch.no_grad()
    def crop_outputs(self, crops: torch.Tensor) -> torch.Tensor:
        """The net's raw outputs (B, outputs) for B crop x crop uint8 crops, unflipped: a box regressor's boxes."""
        with self.autocast:
            return self.model(self.normalization(crops.to(self.device, non_blocking=True)).contiguous(memory_format=torch.channels_last)).float()

    @torch.no_grad()
    def multi_crop(self, image: torch.Tensor) -> torch.Tensor:
        """Posteriors (K,) averaged over the 5x5 grid of crops (and their mirrors), in one batch."""
        with self.autocast:
            logits = self.model(self._inputs(grid_crops(image, self.crop))).float()
        return F.softmax(logits, dim=1).mean(dim=0)

    def batch_input(self, image: torch.Tensor) -> torch.Tensor:
        """What the batchable part runs on for a rescaled image (or a batch of one size): the image, or its central crop."""
        return centre_crop(image, self.crop) if self.method == "centre-crop" else image

    def run_batch(self, inputs: torch.Tensor) -> torch.Tensor:
        """Posteriors (B, K) of B same-size `batch_input`s: dense, or centre-crop."""
        return self.crop_batch(inputs) if self.method == "centre-crop" else self.dense_batch(inputs)

    def multi_crop_part(self, scaled_images: list[torch.Tensor]) -> torch.Tensor | None:
        """The multi-crop posteriors (K,) averaged over the scales (None if the method has none)."""
        if self.method not in ("multi-crop", "multi-crop+dense"):
            return None
        return torch.stack([self.multi_crop(image) for image in scaled_images]).mean(dim=0)

    def combine(self, per_scale: list[torch.Tensor], multi_crop: torch.Tensor | None) -> torch.Tensor:
        """The protocol's posteriors (K,): the batchable part's averaged over the scales, averaged
        with the multi-crop part (multi-crop+dense)."""
        parts = [torch.stack(per_scale).mean(dim=0)] if per_scale else []
        if multi_crop is not None:
            parts.append(multi_crop)
        return torch.stack(parts).mean(dim=0).cpu()

    def posteriors(self, scaled_images: list[torch.Tensor]) -> torch.Tensor:
        """The protocol's posteriors (K,) for one image given rescaled to each test scale."""
        batchable = self.method != "multi-crop"
        per_scale = [self.run_batch(self.batch_input(image)[None])[0] for image in scaled_images] if batchable else []
        return self.combine(per_scale, self.multi_crop_part(scaled_images))


class Batcher:
    """A protocol's posteriors for a stream of images, the dense (or centre-crop) passes batched.

    Each image's rescaled copies (or their central crops) wait with inputs of exactly their
    size (never padded: padding would change the dense result); a size's inputs run when
    there are `batch_images` of them (fewer for large images: `batch_pixels` at most), the
    oldest size's run part-full when more than `pending` inputs wait, and `finish` runs the
    rest. An image is done when all its scales have run; multi-crop runs image by image.
    """

    def __init__(self, protocol: Protocol, batch_images: int = BATCH_IMAGES, batch_pixels: int = BATCH_PIXELS, pending: int = PENDING_IMAGES):
        self.protocol, self.batch_images, self.batch_pixels, self.pending = protocol, batch_images, batch_pixels, pending
        self.sizes: dict[tuple[int, ...], list[tuple[Hashable, int, torch.Tensor]]] = {}  # (key, scale, input), oldest size first
        self.images: dict[Hashable, tuple[list, torch.Tensor | None]] = {}  # per waiting image: posteriors per scale, multi-crop part
        self.waiting = 0

    def add(self, key: Hashable, scaled_images: list[torch.Tensor]) -> list[tuple[Hashable, torch.Tensor]]:
        """Queue one image given rescaled to each test scale: the (key, posteriors (K,)) of the images done meanwhile."""
        multi_crop = self.protocol.multi_crop_part(scaled_images)
        if self.protocol.method == "multi-crop":
            return [(key, self.protocol.combine([], multi_crop))]
        if key in self.images:
            raise ValueError(f"image {key!r} is already waiting")
        self.images[key] = ([None] * len(scaled_images), None if multi_crop is None else multi_crop.cpu())
        done = []
        for scale, image in enumerate(scaled_images):
            item = self.protocol.batch_input(image).clone()  # a copy frees the loader worker's shared memory
            size = tuple(item.shape)
            self.sizes.setdefault(size, []).append((key, scale, item))
            self.waiting += 1
            if len(self.sizes[size]) >= max(1, min(self.batch_images, self.batch_pixels // (size[-2] * size[-1]))):
                done += self._run(size)
        while self.waiting > self.pending:
            done += self._run(next(iter(self.sizes)))
        return done

    def finish(self) -> list[tuple[Hashable, torch.Tensor]]:
        """Run everything still waiting: the (key, posteriors) of the remaining images."""
        done = []
        while self.sizes:
            done += self._run(next(iter(self.sizes)))
        return done

    def _run(self, size: tuple[int, ...]) -> list[tuple[Hashable, torch.Tensor]]:
        batch = self.sizes.pop(size)
        self.waiting -= len(batch)
        posteriors = self.protocol.run_batch(torch.stack([item for _, _, item in batch])).cpu()
        done = []
        for (key, scale, _), row in zip(batch, posteriors):
            per_scale, multi_crop = self.images[key]
            per_scale[scale] = row
            if all(part is not None for part in per_scale):
                del self.images[key]
                done.append((key, self.protocol.combine(per_scale, multi_crop)))
        return done
