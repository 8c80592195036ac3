"""Decoding, the image dataset, the epoch-aware sampler and DataLoader construction.

Augmentation randomness is seeded per image by (seed, epoch, index): a run with a fixed
seed sees the same crops, flips and colour shifts whatever the number of workers or
processes, and a resumed run continues with exactly the augmentations it would have had.
The sampler, which runs in the main process, tags every index with its epoch, so this works
with persistent workers too.
"""

from __future__ import annotations

import atexit
import io
import math
import os
import re
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset, Sampler
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode

from vgg.data.datasets import ImageList
from vgg.runtime.stop_signals import ignore_stop_signals

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec but ships them
# unchanged (libjpeg-turbo, libpng); requirements.txt caps torchvision at 0.29.x.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)
Image.MAX_IMAGE_PIXELS = None  # PIL only reads sizes here: the limit is ours (`max_image_pixels`), with its own option

Transform = Callable[[torch.Tensor, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]
"""`vgg.data.transforms`' transforms: also `prepare(image)` (the deterministic part) and `augment(prepared, rng)`."""
SKIP_OPTION = "--skip-bad-images"
MAX_IMAGE_PIXELS_OPTION = "--max-image-pixels"
MAX_IMAGE_PIXELS_VARIABLE = "VGG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""PIL's own limit (a 256 MiB RGB image); ImageNet's images are far below it."""
MAX_DEFAULT_WORKERS = 8
SMALL_CPU = 4
_LIVE_LOADERS: weakref.WeakSet[DataLoader] = weakref.WeakSet()


class BadImageError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, not an image)."""


def bad_image_error(path: Path | str, error: Exception, advice: str | None = None) -> BadImageError:
    """The error for a file the decoder refused, saying how to go on: `advice` (default: replace or
    remove the file, or pass --skip-bad-images, for the commands that take it)."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    reason = re.sub(r"^\w+, \S+:\d+, ", "", reason).rstrip(".")  # torchvision's "decode_image, /build/path.cpp:61, "
    if advice is None:
        advice = (
            f"Replace or remove the file, or pass {SKIP_OPTION} "
            f"to skip unreadable images (they are counted and listed at the end of each epoch)"
        )
    return BadImageError(f"cannot decode image {display_path(path)}: {reason}. {advice}")


def display_path(path: Path | str) -> str:
    """`path` as printable text: bytes of a file name that are not UTF-8 (which Python keeps as lone
    surrogates, and which no UTF-8 log or CSV can hold) shown as escapes, e.g. caf\\xe9.jpg."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def max_image_pixels() -> int:
    """The most pixels an image file may declare to be decoded: `image_pixel_limit`'s value, else
    `DEFAULT_MAX_IMAGE_PIXELS`. Kept in the environment, so that loader workers, torchrun's and
    the runner's processes all apply the one a command was given."""
    return int(os.environ.get(MAX_IMAGE_PIXELS_VARIABLE) or DEFAULT_MAX_IMAGE_PIXELS)


@contextmanager
def image_pixel_limit(pixels: int) -> Iterator[None]:
    """`max_image_pixels` is `pixels` inside the block, for this process and the ones it starts."""
    if pixels < 1:
        raise ValueError(f"{MAX_IMAGE_PIXELS_OPTION} must be at least 1, got {pixels}")
    previous = os.environ.get(MAX_IMAGE_PIXELS_VARIABLE)
    os.environ[MAX_IMAGE_PIXELS_VARIABLE] = str(pixels)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[MAX_IMAGE_PIXELS_VARIABLE]
        else:
            os.environ[MAX_IMAGE_PIXELS_VARIABLE] = previous


def read_file_bytes(path: Path | str) -> bytearray:
    """A file's bytes in a writable buffer, which a tensor can view without a copy (torch.frombuffer
    warns on read-only `bytes`). Any file name the OS gives works, UTF-8 or not."""
    with open(path, "rb") as handle:
        data = bytearray(os.fstat(handle.fileno()).st_size)
        read = handle.readinto(data)
    return data if read == len(data) else data[:read]


def bytes_as_tensor(data: bytearray | bytes) -> torch.Tensor:
    """A file's bytes as a uint8 tensor: a view of a bytearray (`read_file_bytes`'), a copy of bytes."""
    return torch.frombuffer(data if isinstance(data, bytearray) else bytearray(data), dtype=torch.uint8)


def check_before_decoding(data: bytearray | bytes, path: Path | str, advice: str | None = None) -> None:
    """Refuse, as a bad image, a file that declares more than `max_image_pixels` (an image bomb: a
    633-byte JPEG declaring 30000 x 30000 pixels decoded in 18 s at a 3.3 GB peak), and a PNG that PIL cannot
    decode (libpng, under torchvision's decoder, crashed the process on one with too little image
    data). Files PIL does not know are left to torchvision's decoder."""
    limit = max_image_pixels()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.format == "PNG" and width * height <= limit:
                image.load()
    except UnidentifiedImageError:
        return
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise bad_image_error(path, error, advice) from None
    if width * height > limit:
        declared = f"it declares {width} x {height} pixels, above the limit of {limit:,} ({MAX_IMAGE_PIXELS_OPTION} N raises it)"
        raise bad_image_error(path, ValueError(declared), advice)


def decode_image_bytes(data: bytearray | bytes, path: Path | str, advice: str | None = None) -> torch.Tensor:
    """A JPEG or PNG file's bytes (whatever its extension) as a uint8 RGB (3, H, W) tensor, checked first
    (`check_before_decoding`); an undecodable file raises `bad_image_error(path, reason, advice)`.

    Grayscale, CMYK, palette and RGBA images are converted to RGB; 16-bit PNGs to 8 bits.
    """
    check_before_decoding(data, path, advice)
    try:
        image = torchvision.io.decode_image(bytes_as_tensor(data), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise bad_image_error(path, error, advice) from None
    if image.dtype != torch.uint8:
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def read_image(path: Path | str, advice: str | None = None) -> torch.Tensor:
    """Read and decode an image file (`decode_image_bytes`)."""
    return decode_image_bytes(read_file_bytes(path), path, advice)


@dataclass
class Batch:
    """A collated batch: uint8 images, labels, colour offsets, dataset indices, skipped files, and for
    box regression (Appendix A) each crop's target box (`vgg.localisation.box_data`; None otherwise)."""

    images: torch.Tensor
    labels: torch.Tensor
    offsets: torch.Tensor
    indices: torch.Tensor
    skipped: list[str] = field(default_factory=list)
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def pin_memory(self) -> Batch:
        targets = None if self.targets is None else self.targets.pin_memory()
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.offsets.pin_memory(), self.indices, self.skipped, targets)

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> Batch:
        """The batch on `device` (non-blocking from pinned memory), images in `memory_format`."""
        images = self.images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        targets = None if self.targets is None else self.targets.to(device, non_blocking=True)
        return Batch(
            images, self.labels.to(device, non_blocking=True), self.offsets.to(device, non_blocking=True), self.indices, self.skipped, targets
        )


def empty_batch(skipped: list[str]) -> Batch:
    """A batch whose every image was skipped."""
    return Batch(torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), torch.empty(0, 3), torch.empty(0, dtype=torch.long), skipped)


@dataclass(frozen=True)
class SkippedImage:
    path: str


class ImageDataset(Dataset):
    """Images of an `ImageList` through a transform; keys are indices or (epoch, index) pairs.

    With `cache_decoded`, each image is decoded and prepared (`transform.prepare`: for validation,
    rescaled to Q and centre-cropped) once and kept (uint8) for later epochs: for small datasets
    (the synthetic set: 0.7 GB decoded), where decoding is a sixth of a CPU training step. Each
    loader worker keeps its own cache.
    """

    def __init__(self, images: ImageList, transform: Transform, seed: int = 0, skip_bad_images: bool = False, cache_decoded: bool = False):
        self.images, self.transform, self.seed, self.skip_bad_images = images, transform, seed, skip_bad_images
        self._decoded: dict[int, torch.Tensor] | None = {} if cache_decoded else None

    def __len__(self) -> int:
        return len(self.images)

    def _prepared(self, index: int, path: Path) -> torch.Tensor:
        if self._decoded is None:
            return self.transform.prepare(read_image(path))
        image = self._decoded.get(index)
        if image is None:
            image = self._decoded[index] = self.transform.prepare(read_image(path))
        return image

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path, label = self.images.samples[index]
        try:
            image = self._prepared(index, path)
        except BadImageError:
            if self.skip_bad_images:
                return SkippedImage(display_path(path))
            raise
        return self._sample(image, label, index, np.random.default_rng([self.seed, epoch, index]))

    def _sample(self, image: torch.Tensor, label: int, index: int, rng: np.random.Generator) -> tuple:
        """A prepared image's sample: its augmented pixels, label, colour offset and index."""
        pixels, offset = self.transform.augment(image, rng)
        return pixels, label, offset, index


def collate(samples: list) -> Batch:
    """Stack samples into a `Batch`, setting aside the skipped ones."""
    skipped = [s.path for s in samples if isinstance(s, SkippedImage)]
    kept = [s for s in samples if not isinstance(s, SkippedImage)]
    if not kept:
        return empty_batch(skipped)
    pixels, labels, offsets, indices, *targets = zip(*kept)  # a box dataset's samples carry a fifth item, the target
    stacked_targets = torch.stack(targets[0]) if targets else None
    return Batch(torch.stack(pixels), torch.tensor(labels), torch.stack(offsets), torch.tensor(indices), skipped, stacked_targets)


class EpochSampler(Sampler):
    """Yields (epoch, index) pairs: this rank's share of a (shuffled) epoch.

    Like torch's DistributedSampler: the same permutation on every rank (seeded by seed +
    epoch), ranks take every world_size-th index, and with `pad` the order is padded by
    repeating its start so that every rank gets the same number (training needs this; an
    evaluation that must count each image once does not pad). `set_epoch(epoch, start)`
    moves to an epoch and skips this rank's first `start` samples (resuming mid-epoch).
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1, pad: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.size, self.shuffle, self.seed, self.rank, self.world_size, self.pad = size, shuffle, seed, rank, world_size, pad
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def rank_indices(self) -> list[int]:
        """This rank's indices for the current epoch, before skipping `start`."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.size:
            total = math.ceil(self.size / self.world_size) * self.world_size
            order = (order * math.ceil(total / self.size))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, index) for index in self.rank_indices()[self.start :]])

    def __len__(self) -> int:
        return max(0, len(self.rank_indices()) - self.start)


def available_cpus() -> int:
    """The CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(processes_per_node: int = 1, device: torch.device | str | None = None) -> int:
    """Loader workers per process: the CPUs this process may use, shared among the node's processes.

    Training on a CPU of up to `SMALL_CPU` cores gets one: more take cores from the network's
    own threads (measured on 2 cores, VGG-A at smoke scale with decoded images cached: 655
    img/s with no worker, 745 with one; decoding every epoch: 638, 587, and 525 with two).
    """
    cpus = available_cpus()
    if device is not None and torch.device(device).type == "cpu" and cpus <= SMALL_CPU:
        return 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // max(1, processes_per_node)))


def make_loader(
    dataset: ImageDataset,
    sampler: EpochSampler,
    batch_size: int,
    workers: int | None = None,
    device: torch.device | str = "cpu",
    collate_fn: Callable[[list], object] = collate,
) -> DataLoader:
    """A DataLoader with worker processes (persistent), pinned memory on CUDA, our collate."""
    workers = default_workers() if workers is None else workers
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=ignore_stop_signals,
    )
    if workers > 0:
        _LIVE_LOADERS.add(loader)
    return loader


def shut_down_live_workers() -> None:
    """Stop the workers of every persistent loader still alive. Registered to run at interpreter exit
    before multiprocessing's own exit hook (atexit runs hooks last-registered first): that hook
    terminates daemonic children with SIGTERM, which our workers ignore (`ignore_stop_signals`), and
    then joins them forever, so a process ending with a loader alive (a module-level one, or one in a
    reference cycle not yet collected) would hang at exit instead of ending."""
    for loader in list(_LIVE_LOADERS):
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


atexit.register(shut_down_live_workers)  # after `import torch` has registered multiprocessing's hook


def iterate_epoch(loader: DataLoader, skipped: list[str] | None = None, log: Callable[[str], None] = print) -> Iterator[Batch]:
    """The non-empty batches of one epoch. Unreadable images skipped go to `skipped` when the caller
    keeps the list (it lists them itself: training stops pulling batches mid-loader, so a listing
    here would never run); otherwise they are listed through `log` once the epoch is through."""
    own = skipped is None
    skipped = [] if own else skipped
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch):
            yield batch
    if own and skipped:
        log(skipped_listing(skipped, "this epoch"))


def skipped_listing(skipped: list[str], when: str) -> str:
    """The log lines listing unreadable images skipped (`when`: "this epoch", "in epoch 3", ...)."""
    listing = "\n  ".join(skipped)
    return f"skipped {len(skipped)} unreadable image(s) {when} ({SKIP_OPTION}):\n  {listing}"


def worker_error_message(error: BaseException) -> str | None:
    """The message an exception had in a DataLoader worker, or None if it was not raised in one: the
    DataLoader re-raises it as "Caught BadImageError in DataLoader worker process 0. Original
    Traceback ...", and the user must see the worker's one line (file, reason, fix)."""
    text = str(error)
    if not text.startswith("Caught ") or " in DataLoader worker process " not in text.split("\n", 1)[0]:
        return None
    last = text.rstrip().splitlines()[-1]  # "vgg.data.loaders.BadImageError: cannot decode image ..."
    prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
    return last[len(prefix):] if last.startswith(prefix) else last
