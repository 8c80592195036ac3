"""The embedded synthetic dataset: a deterministic, ImageNet-shaped stand-in for laptops and CI.

Each class is one (shape, texture) pair, e.g. "star with stripes": colours are drawn at
random per image, so the class survives the RGB colour shift. One object of the class sits
at a random scale (40-80% of the shorter side), position and small rotation over a smooth
cluttered background with smaller distractor shapes. Images vary in size (shorter side
64-192 px) and aspect ratio (3:4 to 4:3), so training and test scales matter as on ImageNet.

Every image is drawn from its own random stream, seeded by (seed, split, class, index), and
saved as JPEG with fixed settings: the same seed gives byte-identical files, whatever the
number of worker processes.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "cross", "star", "hexagon", "crescent", "arrow")
TEXTURES = ("stripes", "checker", "dots", "solid")
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
SPLITS = ("train", "val")
JPEG_QUALITY = 90
COMPLETE_MARKER = ".complete"
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of a synthetic dataset; written to `synthetic.json` beside the images."""

    classes: int = 10
    train_per_class: int = 200
    val_per_class: int = 50
    seed: int = 0
    min_side: int = 64
    max_side: int = 192

    def __post_init__(self) -> None:
        if not 2 <= self.classes <= MAX_CLASSES:
            raise ValueError(f"--classes must be between 2 and {MAX_CLASSES} (shapes x textures), got {self.classes}")
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise ValueError("--train-per-class and --val-per-class must be at least 1")
        if not 32 <= self.min_side <= self.max_side:
            raise ValueError(f"image sides must satisfy 32 <= min_side <= max_side, got {self.min_side}, {self.max_side}")

    def per_class(self, split: str) -> int:
        return self.train_per_class if split == "train" else self.val_per_class


def class_definition(index: int) -> tuple[str, str]:
    """The (shape, texture) pair of class `index`; the first eight classes all differ in shape."""
    shape = SHAPES[index % len(SHAPES)]
    texture = TEXTURES[(index + index // len(SHAPES)) % len(TEXTURES)]
    return shape, texture


def wnid(index: int) -> str:
    """An ImageNet-like folder name for class `index` (sorted order == class order)."""
    return f"n9{index:07d}"


def render_image(spec: SynthSpec, split: str, class_index: int, image_index: int) -> bytes:
    """The JPEG bytes of one image, a pure function of its arguments."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), class_index, image_index])
    short = int(rng.integers(spec.min_side, spec.max_side + 1))
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    height, width = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)

    canvas = _background(rng, height, width)
    for _ in range(int(rng.integers(1, 4))):  # distractors: irregular blobs, never a class shape
        _paste(canvas, rng, "blob", "solid", rng.uniform(0.1, 0.25) * short)
    shape, texture = class_definition(class_index)
    _paste(canvas, rng, shape, texture, rng.uniform(0.4, 0.8) * short)

    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buffer.getvalue()


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.uniform(40, 215, size=(3, 4, 3)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR), np.float32)
    noise = rng.normal(0, 8, size=(height, width, 3)).astype(np.float32)
    canvas = smooth + noise
    draw_layer = Image.new("RGB", (width, height))
    mask = Image.new("L", (width, height))
    draw, mask_draw = ImageDraw.Draw(draw_layer), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(2, 6))):  # clutter: thin random lines
        points = [tuple(rng.uniform(0, [width, height])) for _ in range(2)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        line_width = int(rng.integers(1, 3))
        draw.line(points, fill=colour, width=line_width)
        mask_draw.line(points, fill=255, width=line_width)
    alpha = np.asarray(mask, np.float32)[..., None] / 255
    return canvas * (1 - alpha) + np.asarray(draw_layer, np.float32) * alpha


def _shape_polygon(shape: str) -> list[tuple[float, float]] | None:
    """Outline in unit coordinates (centred, radius ~1); None for shapes drawn otherwise."""
    if shape == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if shape == "triangle":
        return [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]
    if shape == "cross":
        a, b = 0.33, 1.0
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    if shape == "star":
        return [
            ((1.0 if k % 2 == 0 else 0.42) * math.sin(k * math.pi / 5), -(1.0 if k % 2 == 0 else 0.42) * math.cos(k * math.pi / 5))
            for k in range(10)
        ]
    if shape == "hexagon":
        return [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)]
    if shape == "arrow":
        return [(-1.0, -0.3), (0.1, -0.3), (0.1, -0.8), (1.0, 0.0), (0.1, 0.8), (0.1, 0.3), (-1.0, 0.3)]
    return None


def _blob_polygon(rng: np.random.Generator) -> list[tuple[float, float]]:
    corners = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
    radii = rng.uniform(0.4, 1.0, corners)
    return [(r * math.cos(a), r * math.sin(a)) for r, a in zip(radii, angles)]


def _shape_mask(shape: str, size: int, angle: float, rng: np.random.Generator) -> np.ndarray:
    """An antialiased size x size mask in [0, 1] of `shape` rotated by `angle` radians."""
    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big))
    draw = ImageDraw.Draw(mask)
    radius = big / 2 * 0.98
    centre = big / 2
    if shape == "disc":
        draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=255)
    elif shape == "crescent":
        draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=255)
        offset_x, offset_y = 0.45 * radius * math.cos(angle), 0.45 * radius * math.sin(angle)
        inner = 0.85 * radius
        draw.ellipse(
            [centre + offset_x - inner, centre + offset_y - inner, centre + offset_x + inner, centre + offset_y + inner], fill=0
        )
    else:
        cos, sin = math.cos(angle), math.sin(angle)
        points = [
            (centre + radius * (x * cos - y * sin), centre + radius * (x * sin + y * cos))
            for x, y in (_blob_polygon(rng) if shape == "blob" else _shape_polygon(shape))
        ]
        draw.polygon(points, fill=255)
    return np.asarray(mask.resize((size, size), Image.BOX), np.float32) / 255


def _texture(rng: np.random.Generator, texture: str, size: int) -> np.ndarray:
    """A size x size x 3 texture in two random, clearly different colours."""
    first = rng.uniform(0, 255, 3)
    second = 255 - first + rng.uniform(-40, 40, 3)  # far from the first colour
    if texture == "solid":
        return np.broadcast_to(first, (size, size, 3)).astype(np.float32)
    period = size / rng.uniform(3.5, 6.0)
    theta = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    u = (xs * math.cos(theta) + ys * math.sin(theta)) / period
    v = (-xs * math.sin(theta) + ys * math.cos(theta)) / period
    if texture == "stripes":
        pattern = (np.floor(u * 2) % 2) == 0
    elif texture == "checker":
        pattern = (np.floor(u) + np.floor(v)) % 2 == 0
    else:  # dots
        pattern = (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < 0.3**2
    return np.where(pattern[..., None], first, second).astype(np.float32)


def _paste(canvas: np.ndarray, rng: np.random.Generator, shape: str, texture: str, size: float) -> None:
    height, width = canvas.shape[:2]
    size = max(8, min(int(size), height, width))
    angle = rng.uniform(-math.pi / 9, math.pi / 9)
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    mask = _shape_mask(shape, size, angle, rng)[..., None]
    region = canvas[top : top + size, left : left + size]
    region[:] = region * (1 - mask) + _texture(rng, texture, size) * mask


def _render_job(job: tuple[SynthSpec, str, int, int, str]) -> None:
    spec, split, class_index, image_index, path = job
    Path(path).write_bytes(render_image(spec, split, class_index, image_index))


def generate(out_dir: Path, spec: SynthSpec = SynthSpec(), workers: int | None = None) -> Path:
    """Write the dataset in the class-folder layout (`out_dir/{train,val}/<wnid>/*.JPEG`).

    Written into a temporary sibling folder and renamed at the end, so an interrupted run
    leaves nothing that looks complete. An existing complete dataset with the same
    parameters is kept as it is; one with other parameters is an error.
    """
    out_dir = Path(out_dir)
    if (out_dir / COMPLETE_MARKER).exists():
        existing = json.loads((out_dir / "synthetic.json").read_text())
        if existing == asdict(spec):
            return out_dir
        raise ValueError(f"{out_dir} already holds a synthetic dataset with other parameters ({existing}); remove it first")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not a complete synthetic dataset; remove it or choose another --out")
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    jobs = []
    for split in SPLITS:
        for class_index in range(spec.classes):
            folder = staging / split / wnid(class_index)
            folder.mkdir(parents=True)
            for image_index in range(spec.per_class(split)):
                name = f"{wnid(class_index)}_{image_index:05d}.JPEG"
                jobs.append((spec, split, class_index, image_index, str(folder / name)))
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_render_job, jobs, chunksize=32))
    else:
        for job in jobs:
            _render_job(job)
    (staging / "synthetic.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    descriptions = [f"{wnid(i)}\t{' with '.join(class_definition(i))}" for i in range(spec.classes)]
    (staging / "classes.txt").write_text("\n".join(descriptions) + "\n")
    (staging / COMPLETE_MARKER).write_text("")
    if out_dir.exists():
        out_dir.rmdir()
    staging.rename(out_dir)
    return out_dir
