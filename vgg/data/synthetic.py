"""The embedded synthetic dataset: a deterministic, ImageNet-shaped stand-in for laptops and CI.

Each class is one (shape, texture) pair, e.g. "star with stripes": 10 shapes x 5 textures,
50 classes (the default; fewer take the first ones). One object of the class sits at a
random scale (30-85% of the shorter side; one image in ten holds a small one, 12-30%),
position and small rotation over a smooth, darker background cluttered with thin lines and smaller distractor blobs. The object is
bright, in a random hue drawn per image (so the class survives the RGB colour shift and no
colour gives it away), and its texture is a darker pattern of the same hue: the silhouette
stands out from the background as objects do in photographs, and the texture is read
inside it. (With two unrelated random colours per texture the pattern's edges were as
strong as the silhouette's, and a width-1/8 VGG-A stayed above 80% top-1 error after 10
epochs.) Images vary in size (shorter side 64-192 px) and aspect ratio (3:4 to 4:3), so
training and test scales matter as on ImageNet.

Every image is drawn from its own random stream, seeded by (seed, split, class, index), and
saved as JPEG with fixed settings: the same seed gives byte-identical files, whatever the
number of worker processes. The object's box (the tight box of its mask's pixels above 0.5) is
written beside the images in Kaggle's format, `LOC_{train,val}_solution.csv`, for Appendix A's
localisation; `ensure_synthetic_boxes` adds them to a set generated before they were.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vgg.data.dataset_folder import write_once
from vgg.data.datasets import SYNTHETIC_COMPLETE, SYNTHETIC_DESCRIPTION, require_data_folder
from vgg.localisation.annotations import BoxAnnotationsError, ObjectBox, solution_name, write_kaggle_solution
from vgg.runtime.stop_signals import die_with_parent, ignore_stop_signals

SHAPES = ("disc", "square", "triangle", "cross", "star", "hexagon", "crescent", "arrow", "ring", "bowtie")
TEXTURES = ("stripes", "checker", "dots", "solid", "grid")
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
SPLITS = ("train", "val")
JPEG_QUALITY = 90
GENERATOR_VERSION = 3
"""Bumped whenever the images a spec gives change (2: 50 classes, bright objects, log-uniform sizes, noise;
3: a share of small objects)."""
BACKGROUND_LEVELS = (20, 120)
"""Range of the background's coarse colour field (0-255): darker than the objects."""
OBJECT_VALUE = (0.7, 0.9)
"""HSV value (brightness) of an object's colour; its saturation is drawn from 0.2-1."""
NOISE_STD = 6.0
"""Gaussian noise over the whole image, as a camera's. Without it, flat (or clipped) regions give
exactly equal activations, and which of them a max-pool picks flips with float rounding."""
TEXTURE_SHADE = 0.55
"""The texture's pattern colour: the object's colour times this."""
OBJECT_SIZE = (0.3, 0.85)
"""Range of the object's size as a fraction of the image's shorter side, drawn log-uniformly."""
SMALL_OBJECT_SHARE = 0.1
SMALL_OBJECT_SIZE = (0.12, 0.3)
"""A share of the images holds a small object instead, as large as the distractor blobs: the hard
tail that keeps top-5 error off its floor. With objects of 0.3-0.85 only, nets made almost every
top-5 error on their smallest objects (toy-scale C and E: 8-17% top-5 error at 0.24-0.35, 0-1%
above 0.3), and the best nets ended at 0.3% top-5 error."""
_SUPERSAMPLE = 2

InclusiveBox = tuple[int, int, int, int]
"""(xmin, ymin, xmax, ymax): the first and last pixel columns and rows, as box files hold them."""


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of a synthetic dataset; written to `synthetic.json` beside the images."""

    classes: int = 50
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

    def describe(self) -> str:
        """The set in words, for the terminal."""
        return (f"{self.classes} classes, {self.train_per_class} train and {self.val_per_class} val images a class, "
                f"sides {self.min_side}-{self.max_side} px, seed {self.seed}")

    def per_class(self, split: str) -> int:
        return self.train_per_class if split == "train" else self.val_per_class


def class_definition(index: int) -> tuple[str, str]:
    """The (shape, texture) pair of class `index`: the first ten classes all differ in shape, and all 50 pairs occur."""
    shape = SHAPES[index % len(SHAPES)]
    texture = TEXTURES[(index + index // len(SHAPES)) % len(TEXTURES)]
    return shape, texture


def wnid(index: int) -> str:
    """An ImageNet-like folder name for class `index` (sorted order == class order)."""
    return f"n9{index:07d}"


def image_id(class_index: int, image_index: int) -> str:
    """An image's file stem, `<wnid>_<nnnnn>`: its id in the box CSVs."""
    return f"{wnid(class_index)}_{image_index:05d}"


def render(spec: SynthSpec, split: str, class_index: int, image_index: int) -> tuple[bytes, InclusiveBox]:
    """The JPEG bytes of one image and its object's box (inclusive pixel indices), a pure function of its arguments."""
    canvas, box = _draw(spec, split, class_index, image_index)
    return encode_jpeg(canvas), box


def encode_jpeg(canvas: np.ndarray) -> bytes:
    """Float pixels as the set's JPEG bytes (clipped to 0-255, fixed settings: the same pixels, the same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buffer.getvalue()


def object_box(spec: SynthSpec, split: str, class_index: int, image_index: int) -> ObjectBox:
    """The box of one image's object in continuous pixel coordinates (x1 = last column + 1), without encoding it."""
    return _object_box(class_index, _draw(spec, split, class_index, image_index)[1])


def _object_box(class_index: int, box: InclusiveBox) -> ObjectBox:
    xmin, ymin, xmax, ymax = box
    return ObjectBox(wnid(class_index), (float(xmin), float(ymin), float(xmax + 1), float(ymax + 1)))


def _draw(spec: SynthSpec, split: str, class_index: int, image_index: int) -> tuple[np.ndarray, InclusiveBox]:
    """The image as float pixels (before clipping) and its object's box."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), class_index, image_index])
    canvas, short = cluttered_canvas(rng, spec.min_side, spec.max_side)
    shape, texture = class_definition(class_index)
    sizes = SMALL_OBJECT_SIZE if rng.uniform() < SMALL_OBJECT_SHARE else OBJECT_SIZE
    box = _paste(canvas, rng, shape, texture, math.exp(rng.uniform(*np.log(sizes))) * short)
    canvas += rng.normal(0, NOISE_STD, size=canvas.shape).astype(np.float32)  # sensor noise, over the object too
    return canvas, box


def cluttered_canvas(rng: np.random.Generator, min_side: int, max_side: int) -> tuple[np.ndarray, int]:
    """A canvas of random size (shorter side min_side-max_side, aspect 3:4-4:3), background and distractors; its shorter side."""
    short = int(rng.integers(min_side, max_side + 1))
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    height, width = (short, round(short * aspect)) if aspect >= 1 else (round(short / aspect), short)
    canvas = _background(rng, height, width)
    for _ in range(int(rng.integers(1, 4))):  # distractors: irregular blobs, never a class shape
        _paste(canvas, rng, "blob", "solid", rng.uniform(0.1, 0.25) * short)
    return canvas, short


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    coarse = rng.uniform(*BACKGROUND_LEVELS, size=(3, 4, 3)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR), np.float32)
    canvas = smooth.copy()
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


_A, _B = 0.33, 1.0
POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
    "triangle": [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)],
    "cross": [(-_A, -_B), (_A, -_B), (_A, -_A), (_B, -_A), (_B, _A), (_A, _A), (_A, _B), (-_A, _B), (-_A, _A), (-_B, _A), (-_B, -_A), (-_A, -_A)],
    "star": [((1.0 if k % 2 == 0 else 0.42) * math.sin(k * math.pi / 5), -(1.0 if k % 2 == 0 else 0.42) * math.cos(k * math.pi / 5)) for k in range(10)],
    "hexagon": [(math.cos(k * math.pi / 3), math.sin(k * math.pi / 3)) for k in range(6)],
    "bowtie": [(-1.0, -0.85), (0.0, -0.2), (1.0, -0.85), (1.0, 0.85), (0.0, 0.2), (-1.0, 0.85)],
    "arrow": [(-1.0, -0.3), (0.1, -0.3), (0.1, -0.8), (1.0, 0.0), (0.1, 0.8), (0.1, 0.3), (-1.0, 0.3)],
    # the transfer sets' shapes (`TRANSFER_SHAPES`), which no class of the embedded set has
    "pentagon": [(math.sin(k * 2 * math.pi / 5), -math.cos(k * 2 * math.pi / 5)) for k in range(5)],
    "diamond": [(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)],
    "trapezoid": [(-0.45, -0.6), (0.45, -0.6), (1.0, 0.6), (-1.0, 0.6)],
    "chevron": [(-1.0, -0.6), (0.0, 0.2), (1.0, -0.6), (1.0, 0.0), (0.0, 0.8), (-1.0, 0.0)],
    "tee": [(-1.0, -0.9), (1.0, -0.9), (1.0, -0.4), (0.25, -0.4), (0.25, 1.0), (-0.25, 1.0), (-0.25, -0.4), (-1.0, -0.4)],
    "ell": [(-0.8, -1.0), (-0.3, -1.0), (-0.3, 0.5), (0.8, 0.5), (0.8, 1.0), (-0.8, 1.0)],
    "octagon": [(math.cos((k + 0.5) * math.pi / 4), math.sin((k + 0.5) * math.pi / 4)) for k in range(8)],
    "kite": [(0.0, -1.0), (0.55, -0.3), (0.0, 1.0), (-0.55, -0.3)],
}
"""Outlines in unit coordinates (centred, radius ~1) of the polygon shapes; disc, ring, crescent and blob are drawn otherwise."""
TRANSFER_SHAPES = ("pentagon", "diamond", "trapezoid", "chevron", "tee", "ell", "octagon", "kite")
"""Shapes no class of the embedded set has: the classes of the transfer sets (`vgg.data.synthetic_transfer`)."""


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
    if shape in ("disc", "ring"):
        draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=255)
        if shape == "ring":
            inner = 0.5 * radius
            draw.ellipse([centre - inner, centre - inner, centre + inner, centre + inner], fill=0)
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
            for x, y in (_blob_polygon(rng) if shape == "blob" else POLYGONS[shape])
        ]
        draw.polygon(points, fill=255)
    return np.asarray(mask.resize((size, size), Image.BOX), np.float32) / 255


def _texture(rng: np.random.Generator, texture: str, size: int) -> np.ndarray:
    """A size x size x 3 texture: a bright colour of random hue, patterned with a darker shade of it."""
    first = 255 * np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.2, 1), rng.uniform(*OBJECT_VALUE)))
    second = first * TEXTURE_SHADE
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
    elif texture == "grid":
        pattern = ((u - np.floor(u)) < 0.3) | ((v - np.floor(v)) < 0.3)
    else:  # dots
        pattern = (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < 0.3**2
    return np.where(pattern[..., None], first, second).astype(np.float32)


def _place(canvas: np.ndarray, rng: np.random.Generator, shape: str, size: float) -> tuple[int, int, np.ndarray]:
    """Where a pasted object goes: its square's top row and left column, and its size x size mask."""
    height, width = canvas.shape[:2]
    size = max(8, min(int(size), height, width))
    angle = rng.uniform(-math.pi / 9, math.pi / 9)
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return top, left, _shape_mask(shape, size, angle, rng)


def _paste(canvas: np.ndarray, rng: np.random.Generator, shape: str, texture: str, size: float) -> InclusiveBox:
    """Blend an object into `canvas` in place; returns the box of its mask's pixels above 0.5."""
    top, left, mask = _place(canvas, rng, shape, size)
    region = canvas[top : top + mask.shape[0], left : left + mask.shape[1]]
    region[:] = region * (1 - mask[..., None]) + _texture(rng, texture, mask.shape[0]) * mask[..., None]
    rows, columns = np.nonzero(mask > 0.5)
    if not len(rows):  # never seen (objects are at least 8 px); the whole square then
        return left, top, left + mask.shape[1] - 1, top + mask.shape[0] - 1
    return left + int(columns.min()), top + int(rows.min()), left + int(columns.max()), top + int(rows.max())


Job = tuple[SynthSpec, str, int, int, str]
"""One image to draw: spec, split, class index, image index, and the path of its JPEG."""


def _jobs(spec: SynthSpec, root: Path, splits: Sequence[str] = SPLITS) -> list[Job]:
    return [
        (spec, split, index, number, str(root / split / wnid(index) / f"{image_id(index, number)}.JPEG"))
        for split in splits
        for index in range(spec.classes)
        for number in range(spec.per_class(split))
    ]


def _render_job(job: Job) -> ObjectBox:
    spec, split, class_index, image_index, path = job
    jpeg, box = render(spec, split, class_index, image_index)
    Path(path).write_bytes(jpeg)
    return _object_box(class_index, box)


def _box_job(job: Job) -> ObjectBox:
    spec, split, class_index, image_index, _ = job
    return object_box(spec, split, class_index, image_index)


def _run_jobs(function: Callable[[Job], ObjectBox], jobs: list[Job], workers: int | None) -> list[ObjectBox]:
    """`function` of each job, in order, in `workers` processes (default: one a core)."""
    count = workers or min(len(jobs), os.cpu_count() or 1)
    if count <= 1:
        return [function(job) for job in jobs]
    pool = ProcessPoolExecutor(count, initializer=_render_worker_init, initargs=(os.getpid(),))
    try:
        return list(pool.map(function, jobs, chunksize=32))
    finally:  # on a stop signal too: the images not begun are not waited for
        pool.shutdown(cancel_futures=True)


def _write_boxes(root: Path, jobs: list[Job], boxes: list[ObjectBox], splits: Sequence[str]) -> None:
    """`LOC_<split>_solution.csv` in `root` for each of `splits`: one box per image, keyed by its file stem."""
    for split in splits:
        chosen = {image_id(job[2], job[3]): (box,) for job, box in zip(jobs, boxes) if job[1] == split}
        write_kaggle_solution(root / solution_name(split), chosen)


def _description(spec: SynthSpec) -> dict:
    """What `synthetic.json` records: the parameters and the generator's version."""
    return {**asdict(spec), "generator": GENERATOR_VERSION}


def generate(out_dir: Path, spec: SynthSpec = SynthSpec(), workers: int | None = None) -> Path:
    """Write the dataset in the class-folder layout (`out_dir/{train,val}/<wnid>/*.JPEG`) with its boxes
    (`out_dir/LOC_{train,val}_solution.csv`), once and atomically (`vgg.data.dataset_folder.write_once`):
    an existing complete dataset with the same parameters is kept as it is; one with other parameters,
    from another version of the generator, or whose generation did not finish, is an error."""
    if Path(out_dir).is_dir():
        require_data_folder(out_dir)

    def fill(staging: Path) -> None:
        jobs = _jobs(spec, staging)
        for split in SPLITS:
            for class_index in range(spec.classes):
                (staging / split / wnid(class_index)).mkdir(parents=True)
        _write_boxes(staging, jobs, _run_jobs(_render_job, jobs, workers), SPLITS)
        descriptions = [f"{wnid(i)}\t{' with '.join(class_definition(i))}" for i in range(spec.classes)]
        (staging / "classes.txt").write_text("\n".join(descriptions) + "\n")
        (staging / SYNTHETIC_COMPLETE).write_text("")

    return write_once(Path(out_dir), SYNTHETIC_DESCRIPTION, _description(spec), fill, "a synthetic dataset")


def _generated_spec(data_dir: Path) -> SynthSpec:
    """The spec of the complete synthetic set in `data_dir`, drawn by this version of the generator."""
    description_file = data_dir / SYNTHETIC_DESCRIPTION
    if not (description_file.is_file() and (data_dir / SYNTHETIC_COMPLETE).exists()):
        raise BoxAnnotationsError(
            f"{data_dir} is not a complete synthetic set (no {SYNTHETIC_DESCRIPTION} and {SYNTHETIC_COMPLETE}): "
            "only the synthetic set's boxes can be computed; generate one with `python -m vgg data synth --out DIR`"
        )
    try:
        description = json.loads(description_file.read_text())
        spec = SynthSpec(**{field.name: description[field.name] for field in fields(SynthSpec)})
    except (ValueError, KeyError, TypeError) as error:
        raise BoxAnnotationsError(f"{description_file} is not a synthetic set's description ({error!r})") from None
    if description.get("generator") != GENERATOR_VERSION:
        raise BoxAnnotationsError(
            f"{data_dir} was drawn by version {description.get('generator')} of the synthetic generator, not "
            f"{GENERATOR_VERSION}: its objects are not where this one draws them; remove it and generate it again"
        )
    return spec


def ensure_synthetic_boxes(data_dir: Path, workers: int | None = None) -> Path:
    """Write the box CSVs (`LOC_{train,val}_solution.csv`) that a synthetic set generated before they
    existed lacks, computing each image's box by drawing it again (its files are not read or touched),
    in `workers` processes; a set that has them is left as it is. Returns `data_dir`. A folder that is
    not a complete synthetic set of this generator version is a `BoxAnnotationsError`."""
    data_dir = Path(data_dir)
    spec = _generated_spec(data_dir)
    missing = [split for split in SPLITS if not (data_dir / solution_name(split)).is_file()]
    if missing:
        jobs = _jobs(spec, data_dir, missing)
        absent = next((job[4] for job in jobs if not Path(job[4]).is_file()), None)
        if absent is not None:
            raise BoxAnnotationsError(
                f"{data_dir} lacks {absent}: it is not the synthetic set its {SYNTHETIC_DESCRIPTION} describes"
            )
        _write_boxes(data_dir, jobs, _run_jobs(_box_job, jobs, workers), missing)
    return data_dir


def _render_worker_init(parent: int) -> None:
    """A generation worker leaves stop signals to its parent, and ends with it, killed or not."""
    ignore_stop_signals()
    die_with_parent(parent=parent)
