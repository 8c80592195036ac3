"""Small image files for the data tests, written on the fly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(mode: str = "RGB", fmt: str = "JPEG", size: tuple[int, int] = (24, 18), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L")).astype(np.uint16) * 257))
    else:
        image = rgb.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path: Path, mode: str = "RGB", fmt: str = "JPEG", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(mode, fmt, seed=seed))
    return path


def class_folder_tree(root: Path, classes: tuple[str, ...] = ("n02", "n01", "n03"), per_class: int = 3) -> Path:
    for split in ("train", "val"):
        for index, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / split / name / f"{name}_{i}.JPEG", seed=index * 10 + i)
    return root
