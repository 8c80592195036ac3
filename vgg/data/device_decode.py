"""The training data path on the device (`--decode gpu`): loader workers only read each file's
bytes; the main process decodes a batch at once on the training device (torchvision's nvJPEG
decoder on CUDA) and augments it there.

Each image goes through the same `TrainTransform` as on the CPU path, with the same generator,
seeded by (seed, epoch, index) (`vgg.data.loaders.ImageDataset`): the same S, crop box, flip and
colour shift, so a run can switch paths and keep its meaning. On the CPU the two paths give the
same bytes; on CUDA the resize runs in float and is rounded to uint8, so pixels may differ by a
grey level from the CPU kernel's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode

from vgg.data.datasets import ImageList
from vgg.data.loaders import (
    BadImageError, Batch, Transform, bytes_as_tensor, check_before_decoding, decode_image_bytes, empty_batch, read_file_bytes,
)

DECODE_CHOICES = ("cpu", "gpu", "auto")
JPEG_MAGIC = b"\xff\xd8"


KEEP_UP_MARGIN = 1.1
"""`auto` decodes on the device unless the CPU loader delivers at least 1.1x the step's images/s."""


def decode_path(choice: str, device: torch.device, measure: Callable[[], tuple[float, float]] | None = None) -> str:
    """Where to decode: "cpu" (loader workers) or "gpu" (the training device; it also runs on a CPU
    device, as the tests do). "auto": the CPU path off CUDA; on CUDA, the device path when the CPU
    loader measurably cannot keep up, `measure()` giving (CPU loader images/s, step images/s)."""
    if choice not in DECODE_CHOICES:
        raise ValueError(f"--decode must be one of {', '.join(DECODE_CHOICES)}, got {choice!r}")
    if choice != "auto":
        return choice
    if torch.device(device).type != "cuda" or measure is None:
        return "cpu"
    loader_rate, step_rate = measure()
    return "gpu" if loader_rate < KEEP_UP_MARGIN * step_rate else "cpu"


@dataclass
class EncodedBatch:
    """Undecoded files of a batch: their bytes, labels, and (epoch, index) keys. Plain bytearrays, not
    tensors, cross from the loader workers: a tensor each would cost a shared-memory file
    descriptor per file and exhaust them."""

    data: list[bytearray]
    labels: torch.Tensor
    epochs: list[int]
    indices: torch.Tensor
    paths: list[str]

    def __len__(self) -> int:
        return len(self.data)

    def pin_memory(self) -> EncodedBatch:
        return self  # decoding reads the bytes on the host


class EncodedDataset(Dataset):
    """The files of an `ImageList` as bytes, keyed like `ImageDataset` by (epoch, index)."""

    def __init__(self, images: ImageList):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path, label = self.images.samples[index]
        return read_file_bytes(Path(path)), label, epoch, index, str(path)


def collate_encoded(samples: list) -> EncodedBatch:
    data, labels, epochs, indices, paths = zip(*samples)
    return EncodedBatch(list(data), torch.tensor(labels), list(epochs), torch.tensor(indices), list(paths))


def decode_batch(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor | BadImageError]:
    """Every file of the batch as a uint8 RGB (3, H, W) tensor on `device` (JPEGs in one batched
    call), or the error that says why it cannot be decoded."""
    decoded: list[torch.Tensor | BadImageError | None] = [None] * len(batch)
    jpegs = []
    for i, data in enumerate(batch.data):
        if data[:2] == JPEG_MAGIC:
            try:
                check_before_decoding(data, batch.paths[i])
                jpegs.append(i)
            except BadImageError as error:
                decoded[i] = error
    if jpegs:
        try:
            images = torchvision.io.decode_jpeg([bytes_as_tensor(batch.data[i]) for i in jpegs], mode=ImageReadMode.RGB, device=device)
            for i, image in zip(jpegs, images):
                decoded[i] = image
        except RuntimeError:
            pass  # a bad file spoils the batched call: decode one by one below, to name it
    for i, slot in enumerate(decoded):
        if slot is None:
            try:
                decoded[i] = decode_image_bytes(batch.data[i], batch.paths[i]).to(device, non_blocking=True)
            except BadImageError as error:
                decoded[i] = error
    return decoded


class DeviceAugmenter:
    """Turns an `EncodedBatch` into a `Batch` on `device`, as `ImageDataset` + `collate` would."""

    def __init__(self, transform: Transform, seed: int, device: torch.device | str, skip_bad_images: bool = False):
        self.transform, self.seed, self.device, self.skip_bad_images = transform, seed, torch.device(device), skip_bad_images

    def __call__(self, batch: EncodedBatch) -> Batch:
        pixels, offsets, kept, skipped = [], [], [], []
        for position, image in enumerate(decode_batch(batch, self.device)):
            if isinstance(image, BadImageError):
                if not self.skip_bad_images:
                    raise image
                skipped.append(batch.paths[position])
                continue
            rng = np.random.default_rng([self.seed, batch.epochs[position], int(batch.indices[position])])
            crop, offset = self.transform(image, rng)
            pixels.append(crop)
            offsets.append(offset)
            kept.append(position)
        if not kept:
            return empty_batch(skipped)
        chosen = torch.tensor(kept)
        return Batch(
            torch.stack(pixels),
            batch.labels[chosen].to(self.device, non_blocking=True),
            torch.stack(offsets).to(self.device, non_blocking=True),
            batch.indices[chosen],
            skipped,
        )

    def batches(self, loader: Iterable[EncodedBatch]) -> Iterator[Batch]:
        """The loader's batches, decoded and augmented on the device."""
        return (self(batch) for batch in loader)
