"""Fashion-MNIST (Xiao et al., 2017) written in the class-folder layout: a second small dataset, made
of real photographs that no one here generated, on which the toy-scale recipe is checked.

The raw IDX files (`train-images-idx3-ubyte.gz` ..., as Zalando publishes them and Debian's
`dataset-fashion-mnist` package installs them in /usr/share/datasets/fashion-mnist) are read
as they are; the first `train_per_class` images of each class of the training file go to
`train/`, the first `val_per_class` of each class of the test file to `val/`, as 28x28
grayscale PNGs (lossless). The loader reads them as RGB and rescales them to S like any image.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from vgg.data.dataset_folder import write_once

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
DESCRIPTION = "fashion-mnist.json"


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The array of a (gzipped) IDX file: (n, rows, cols) uint8 images or (n,) uint8 labels."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    found, count = struct.unpack(">II", data[:8])
    if found != magic:
        raise ValueError(f"{path} is not an IDX {'image' if magic == IMAGES_MAGIC else 'label'} file (magic {found}, expected {magic})")
    if magic == IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return np.frombuffer(data, dtype=np.uint8, offset=8)[:count]


def folder_name(index: int) -> str:
    """Class `index`'s folder: its number first, so that sorted folders give Fashion-MNIST's label order."""
    return f"{index}-{CLASSES[index]}"


def write_fashion_mnist(source: Path | str, out: Path | str, train_per_class: int, val_per_class: int) -> Path:
    """Write `out` (see the module's doc) from the IDX files in `source`; an existing `out` of the same
    sizes is kept, one of others is an error. Returns `out`."""
    source = Path(source)
    missing = [name for pair in FILES.values() for name in pair if not (source / name).is_file()]
    if missing:
        raise ValueError(
            f"{source} lacks the Fashion-MNIST file(s) {', '.join(missing)}; on Debian `apt install dataset-fashion-mnist` "
            f"puts them in {DEBIAN_FOLDER}, or download them from github.com/zalandoresearch/fashion-mnist"
        )

    def fill(staging: Path) -> None:
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            images_file, labels_file = FILES[split]
            images, labels = read_idx(source / images_file, IMAGES_MAGIC), read_idx(source / labels_file, LABELS_MAGIC)
            for index in range(len(CLASSES)):
                members = np.flatnonzero(labels == index)
                if len(members) < per_class:
                    raise ValueError(f"{source / images_file} has {len(members)} images of class {CLASSES[index]}, fewer than the {per_class} asked for")
                folder = staging / split / folder_name(index)
                folder.mkdir(parents=True)
                for number in members[:per_class]:
                    Image.fromarray(images[number]).save(folder / f"{split}-{number:05d}.png", optimize=False)

    description = {"train_per_class": train_per_class, "val_per_class": val_per_class}
    return write_once(Path(out), DESCRIPTION, description, fill, "a Fashion-MNIST export")
