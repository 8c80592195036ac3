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


def assert_drawn_figure(path: Path, min_size: tuple[int, int] = (300, 200), min_colours: int = 20) -> None:
    """`path` is a PNG of at least `min_size` pixels with something drawn on it (anti-aliased lines,
    bars and text give many colours; a blank or failed figure has one or two)."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_size[0] and image.height >= min_size[1], (image.format, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) >= min_colours, f"{path}: {len(colours)} colours"
