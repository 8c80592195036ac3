"""The datasets the recipe is chosen and checked on: a held-out split of train images (`vgg data
holdout`) and Fashion-MNIST written in the class-folder layout (`vgg data fashion-mnist`)."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vgg.data.datasets import load_split
from vgg.data.fashion_mnist import CLASSES, IMAGES_MAGIC, LABELS_MAGIC, folder_name, write_fashion_mnist
from vgg.data.holdout import write_holdout

ROOT = Path(__file__).resolve().parent.parent


def test_a_holdout_splits_train_images_only_and_never_reads_val(ci_data, tmp_path):
    out = write_holdout(ci_data, tmp_path / "tune", per_class=5, seed=1)
    train, val = load_split(out, "train"), load_split(out, "val")
    source = load_split(ci_data, "train")
    assert train.classes == val.classes == source.classes
    assert len(val) == 5 * len(source.classes) and len(train) + len(val) == len(source)
    resolved = lambda images: {path.resolve() for path, _ in images.samples}
    assert resolved(train) | resolved(val) == resolved(source) and not resolved(train) & resolved(val)
    labels = {path.resolve(): label for path, label in source.samples}
    assert all(labels[path.resolve()] == label for path, label in val.samples)  # every image keeps its class
    assert write_holdout(ci_data, tmp_path / "tune", per_class=5, seed=1) == out  # the same split: kept
    other = write_holdout(ci_data, tmp_path / "other", per_class=5, seed=2)
    assert resolved(load_split(other, "val")) != resolved(val)  # the seed chooses which
    with pytest.raises(ValueError, match="other parameters"):
        write_holdout(ci_data, tmp_path / "tune", per_class=4, seed=1)
    with pytest.raises(ValueError, match="too few to hold out 24"):
        write_holdout(ci_data, tmp_path / "all", per_class=24)


def write_idx(folder: Path, prefix: str, labels: list[int]) -> None:
    """A tiny Fashion-MNIST file pair: image k is filled with the value k."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.stack([np.full((28, 28), k, dtype=np.uint8) for k in range(len(labels))])
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">IIII", IMAGES_MAGIC, len(labels), 28, 28) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(struct.pack(">II", LABELS_MAGIC, len(labels)) + bytes(labels))


def test_fashion_mnist_is_written_in_the_class_folder_layout(tmp_path):
    source = tmp_path / "raw"
    write_idx(source, "train", [k % 10 for k in range(40)])  # four of each class, in turn
    write_idx(source, "t10k", [9 - k % 10 for k in range(20)])
    out = write_fashion_mnist(source, tmp_path / "fmnist", train_per_class=3, val_per_class=2)
    train, val = load_split(out, "train"), load_split(out, "val")
    assert train.classes == val.classes == tuple(folder_name(k) for k in range(10)) and folder_name(9) == f"9-{CLASSES[9]}"
    assert (len(train), len(val)) == (30, 20)
    for path, label in train.samples:  # the first three of each class: images label, label + 10, label + 20
        with Image.open(path) as image:
            assert image.size == (28, 28) and image.mode == "L"
            assert int(np.asarray(image)[0, 0]) in (label, label + 10, label + 20)
    result = subprocess.run([sys.executable, "-m", "vgg", "data", "fashion-mnist", "--source", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "lacks the Fashion-MNIST file(s)" in result.stderr and "dataset-fashion-mnist" in result.stderr
