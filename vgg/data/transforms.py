"""The paper's train and test transforms (Sects. 3.1, 3.2), on uint8 CHW image tensors.

Train: isotropic rescale so the shorter side is the training scale S (fixed, or drawn per
image uniformly from [Smin, Smax]: scale jittering), a random crop x crop crop, a horizontal
flip with p = 0.5, and the AlexNet RGB colour shift, which is returned as a per-image RGB
offset and added on the model's device when the batch is normalised (`vgg.data.normalization`),
so the pixels stay uint8 until then. Test: isotropic rescale so the shorter side is the test
scale Q, nothing else (the evaluation protocols crop or run densely).

Randomness comes from the `numpy.random.Generator` passed in, one per image, so that the
augmentations of a run are a function of its seed alone.

Each transform is `augment(prepare(image), rng)`: `prepare` is its deterministic part (the
rescale to Q and the centre crop of validation; training's rescale to a fixed S, the paper's
order, after which a crop is a slice), which a loader may compute once per image and keep
(`vgg.data.loaders.ImageDataset`'s `cache_decoded`), and `augment` the random part. With a jittered
S, training's crop region is resized straight from the decoded image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vgg.recipe.paper import PAPER

# ImageNet RGB PCA for the colour shift: eigenvalues (for pixels in [0, 1]; scaled to 0-255
# below) and eigenvectors as columns. Krizhevsky et al. (2012) did not publish theirs; these
# are the values computed on ImageNet training images in Facebook's fb.resnet.torch
# (datasets/imagenet.lua), reused by GluonCV, timm and most PyTorch reimplementations.
IMAGENET_PCA_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045]) * 255.0
IMAGENET_PCA_EIGENVECTORS = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)
MAX_SCALE = 1024
"""The largest scale, S or Q in paper units, used without --max-scale: twice the paper's largest, 512
(memory grows as its square: S = 100000 grew one loader worker past 10 GB in two minutes)."""


@dataclass(frozen=True)
class ScaleRange:
    """The training scale S: fixed (low == high) or jittered uniformly over [low, high]."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high:
            raise ValueError(f"training scale range must satisfy 0 < Smin <= Smax, got {self.low}:{self.high}")

    @classmethod
    def parse(cls, text: str | int) -> ScaleRange:
        """"256" -> fixed S = 256; "256:512" -> S drawn from [256, 512]."""
        try:
            parts = [int(part) for part in str(text).split(":")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise ValueError(f"a training scale is S (e.g. 256) or Smin:Smax (e.g. 256:512), got {text!r}")
        return cls(parts[0], parts[-1])

    def check_bounds(self, max_scale: int | None = None) -> None:
        """Refuse an S (paper units) below the crop, 224, or above `max_scale` (None: `MAX_SCALE`),
        before any image is rescaled to it."""
        limit = MAX_SCALE if max_scale is None else max_scale
        if self.low < PAPER.crop:
            raise ValueError(
                f"training scale {self} is below the crop of {PAPER.crop} (paper units): S is the shorter side an image is "
                f"rescaled to before a {PAPER.crop} crop is taken from it; give S >= {PAPER.crop}, e.g. 256 or 256:512"
            )
        if self.high > limit:
            raise ValueError(
                f"training scale {self} is above the limit of {limit} (paper units; the paper trains at 256 to 512): "
                f"every training image is rescaled to it, and memory grows as its square; pass --max-scale {self.high} to allow it"
            )

    @property
    def jittered(self) -> bool:
        return self.low != self.high

    def sample(self, rng: np.random.Generator) -> int:
        """One S, uniform over the integers of [low, high], both ends included."""
        return int(rng.integers(self.low, self.high + 1))

    def __str__(self) -> str:
        return f"{self.low}:{self.high}" if self.jittered else str(self.low)

    def scaled(self, size) -> ScaleRange:
        """This range with both ends mapped by `size` (a profile's paper-units -> pixels map)."""
        return ScaleRange(size(self.low), size(self.high))

    @property
    def single_test_scale(self) -> int:
        """The paper's single test scale (Table 3): Q = S for fixed S, Q = (Smin + Smax) / 2 when jittered."""
        return (self.low + self.high) // 2

    @property
    def multi_test_scales(self) -> tuple[int, int, int]:
        """The paper's three test scales (Table 4): {S-32, S, S+32} for fixed S, {Smin, middle, Smax} when jittered."""
        if self.jittered:
            return self.low, self.single_test_scale, self.high
        return self.low - PAPER.multi_test_scale_offset, self.low, self.low + PAPER.multi_test_scale_offset


def rescaled_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """Size after an isotropic rescale that makes the shorter side exactly `shorter`."""
    if height <= width:
        return shorter, max(shorter, round(width * shorter / height))
    return max(shorter, round(height * shorter / width)), shorter


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 (3, H, W) image: torch's vectorised uint8 kernel on
    the CPU; elsewhere (`--decode gpu`) in float, rounded back to uint8."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if image.device.type == "cpu":
        return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def rescale(image: torch.Tensor, shorter: int) -> torch.Tensor:
    """Isotropic rescale of a (3, H, W) image so that its shorter side is `shorter`."""
    return resize(image, rescaled_size(image.shape[-2], image.shape[-1], shorter))


def centre_crop(image: torch.Tensor, crop: int) -> torch.Tensor:
    """The central crop x crop crop of a (..., H, W) image or batch (a view): training's per-epoch
    validation and the centre-crop test protocol."""
    top, left = (image.shape[-2] - crop) // 2, (image.shape[-1] - crop) // 2
    return image[..., top : top + crop, left : left + crop]


def colour_offset(rng: np.random.Generator, std: float = PAPER.colour_shift_std) -> np.ndarray:
    """One RGB offset (0-255 units): sum_i alpha_i lambda_i p_i with alpha_i ~ N(0, std)."""
    alpha = rng.normal(0.0, std, size=3)
    return IMAGENET_PCA_EIGENVECTORS @ (alpha * IMAGENET_PCA_EIGENVALUES)


@dataclass(frozen=True)
class CropPlan:
    """Where one training crop comes from, in the prepared image.

    `scale` is the drawn S and `rescaled` the size of the image rescaled to it (shorter side
    S). With a fixed S the prepared image is already rescaled: the crop is the `side` x `side`
    (= crop x crop) square at (`top`, `left`). With a jittered S, rather than rescaling the
    whole image and cropping, the crop's square region of the source (`top`, `left`, `side`,
    in source pixels) is resized straight to crop x crop: the same pixels for a fraction of
    the work. The region's side is rounded to whole source pixels, so the effective S differs
    from the drawn one by at most half a source pixel in `side` (under 0.3% at ImageNet sizes).
    """

    scale: int
    rescaled: tuple[int, int]
    top: int
    left: int
    side: int
    flip: bool


class TrainTransform:
    """Rescale to S (fixed or jittered), random crop, random flip, colour-shift offset."""

    def __init__(self, scale: ScaleRange, crop: int, flip: bool = True, colour_shift_std: float = PAPER.colour_shift_std):
        if scale.low < crop:
            raise ValueError(f"the training scale S={scale} must be at least the crop size {crop}")
        self.scale, self.crop, self.flip, self.colour_shift_std = scale, crop, flip, colour_shift_std

    def plan(self, height: int, width: int, rng: np.random.Generator) -> CropPlan:
        """Draw S, the crop position (uniform over the rescaled image) and the flip."""
        scale = self.scale.sample(rng)
        shorter = min(height, width)
        side = min(shorter, round(self.crop * shorter / scale))
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        flip = self.flip and bool(rng.random() < PAPER.flip_probability)
        return CropPlan(scale, rescaled_size(height, width, scale), top, left, side, flip)

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """The decoded image rescaled to a fixed S (once per image when the loader caches it; crops
        are then slices, no resize per epoch); with a jittered S, the decoded image as it is."""
        return image if self.scale.jittered else rescale(image, self.scale.low)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(self.prepare(image), rng)

    def augment(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The crop (and flip) of a prepared image, and its colour-shift offset."""
        crop, offset, _ = self.augment_planned(image, rng)
        return crop, offset

    def augment_planned(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, CropPlan]:
        """`augment`, and the plan it followed (where boxes go: `vgg.localisation.box_data`)."""
        plan = self.plan(image.shape[-2], image.shape[-1], rng)
        region = image[:, plan.top : plan.top + plan.side, plan.left : plan.left + plan.side]
        crop = resize(region, (self.crop, self.crop))
        if plan.flip:
            crop = crop.flip(-1)
        offset = colour_offset(rng, self.colour_shift_std) if self.colour_shift_std else np.zeros(3)
        return crop, torch.from_numpy(offset.astype(np.float32)), plan

    def __repr__(self) -> str:
        return f"TrainTransform(S={self.scale}, crop={self.crop}, flip={self.flip}, colour_shift_std={self.colour_shift_std})"


class CentreCropTransform:
    """Rescale to Q, then the central crop x crop: the batched per-epoch validation of training."""

    def __init__(self, scale: int, crop: int):
        if scale < crop:
            raise ValueError(f"the validation scale Q={scale} must be at least the crop size {crop}")
        self.scale, self.crop = scale, crop

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        return centre_crop(rescale(image, self.scale), self.crop).contiguous()

    def augment(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return image, torch.zeros(3)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(self.prepare(image), rng)

    def __repr__(self) -> str:
        return f"CentreCropTransform(Q={self.scale}, crop={self.crop})"


class TestTransform:
    """Rescale to the test scale Q; no crop, no flip, no colour shift."""

    __test__ = False  # not a pytest class

    def __init__(self, scale: int):
        self.scale = scale

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        return rescale(image, self.scale)

    def augment(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return image, torch.zeros(3)

    def __call__(self, image: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(self.prepare(image), rng)

    def __repr__(self) -> str:
        return f"TestTransform(Q={self.scale})"
