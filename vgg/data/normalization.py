"""Input normalisation, applied on the model's device to uint8 batches.

The paper's only preprocessing is subtracting the training set's mean RGB value (no std
scaling, pixels in 0-255). torchvision's weights expect its mean/std normalisation instead.
The normalisation a net was trained with is stored in its checkpoint, so evaluation always
matches training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Normalization:
    """Per-channel RGB mean and std in 0-255 units: x = (pixel + colour offset - mean) / std."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> Normalization:
        return cls(fields["name"], tuple(fields["mean"]), tuple(fields["std"]))

    def __call__(self, images: torch.Tensor, offsets: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Normalise a uint8 (N, 3, H, W) batch; `offsets` (N, 3) are per-image RGB colour shifts."""
        mean = torch.tensor(self.mean, device=images.device, dtype=dtype).view(1, 3, 1, 1)
        shift = -mean if offsets is None else offsets.to(dtype).view(-1, 3, 1, 1) - mean
        std = torch.tensor(self.std, device=images.device, dtype=dtype).view(1, 3, 1, 1)
        return (images.to(dtype) + shift) / std


# The mean pixel of the authors' released Caffe models (BGR 103.939, 116.779, 123.68), in RGB.
PAPER_MEAN_RGB = Normalization("mean-rgb", (123.68, 116.779, 103.939))
TORCHVISION = Normalization("torchvision", (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255))
NORMALIZATIONS = {n.name: n for n in (PAPER_MEAN_RGB, TORCHVISION)}


def get_normalization(name: str) -> Normalization:
    """A named preset: `mean-rgb` (the paper's) or `torchvision` (for its weights)."""
    if name not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {name!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]
