"""The toy target sets of Appendix B (transfer): images the embedded set's nets never saw in training, drawn
like the embedded set (`vgg.data.synthetic`) but with shapes none of its classes has (`TRANSFER_SHAPES`).

- `categories/`: a single-label set in Caltech's layout (`<NNN.shape-texture>/*.jpg`), one object an image, for
  mean class recall over random splits, as Caltech-101/256;
- `multilabel/`: a multi-label set in VOC's devkit layout (`VOCdevkit/VOC2007/{JPEGImages, Annotations,
  ImageSets/Main}`, `trainval` and `test`), one to three objects of distinct classes an image, for mAP, as
  VOC-2007; its class names are in `multilabel/classes.txt`. The same images make a toy of VOC-2012's action
  set (`ImageSets/Action`): each object, with its box in `Annotations/`, is a "person" whose "action" is its
  class, so that the whole image is ambiguous where it shows several objects and the box is not.

Every image comes from its own random stream seeded by (seed, set, class or split, index): the same seed gives
byte-identical files whatever the number of processes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vgg.data.dataset_folder import write_once
from vgg.data.synthetic import NOISE_STD, OBJECT_SIZE, TEXTURES, TRANSFER_SHAPES, _paste, cluttered_canvas, encode_jpeg

DESCRIPTION = "transfer.json"
GENERATOR_VERSION = 2  # 2: object boxes in Annotations/ and the toy actions in ImageSets/Action/ (images unchanged)
MAX_TRANSFER_CLASSES = len(TRANSFER_SHAPES) * len(TEXTURES)
MULTILABEL_SPLITS = ("trainval", "test")
MULTILABEL_OBJECT_SIZE = (0.25, 0.5)
"""Each object's size as a fraction of the shorter side: several fit on one canvas."""


@dataclass(frozen=True)
class TransferSpec:
    """Sizes of the two toy target sets."""

    classes: int = 20  # single-label classes
    per_class: int = 60  # single-label images a class (30 train and up to 30 test per split)
    multilabel_classes: int = 10  # the first classes, as the multi-label set's
    trainval: int = 400
    test: int = 400
    seed: int = 0
    min_side: int = 64
    max_side: int = 192

    def __post_init__(self) -> None:
        if not 2 <= self.multilabel_classes <= self.classes <= MAX_TRANSFER_CLASSES:
            raise ValueError(f"need 2 <= multilabel_classes <= classes <= {MAX_TRANSFER_CLASSES}, got {self.multilabel_classes}, {self.classes}")


def transfer_class(index: int) -> tuple[str, str]:
    """The (shape, texture) of transfer class `index`: the first eight differ in shape."""
    return TRANSFER_SHAPES[index % len(TRANSFER_SHAPES)], TEXTURES[(index + index // len(TRANSFER_SHAPES)) % len(TEXTURES)]


def class_name(index: int) -> str:
    """A Caltech-256-like folder name: `001.pentagon-stripes`."""
    return f"{index + 1:03d}.{'-'.join(transfer_class(index))}"


def _jpeg(rng: np.random.Generator, canvas: np.ndarray) -> bytes:
    canvas += rng.normal(0, NOISE_STD, size=canvas.shape).astype(np.float32)  # sensor noise, as the embedded set's
    return encode_jpeg(canvas)


def render_single(spec: TransferSpec, class_index: int, image_index: int) -> bytes:
    """One single-label image: one object of the class, sized as the embedded set's."""
    rng = np.random.default_rng([spec.seed, 0, class_index, image_index])
    canvas, short = cluttered_canvas(rng, spec.min_side, spec.max_side)
    _paste(canvas, rng, *transfer_class(class_index), math.exp(rng.uniform(*np.log(OBJECT_SIZE))) * short)
    return _jpeg(rng, canvas)


def render_multi(spec: TransferSpec, split: str, image_index: int) -> tuple[bytes, list[int], list[tuple[int, int, int, int]]]:
    """One multi-label image, the classes it shows (one to three objects of distinct classes, drawn in that
    order: a later one may hide part of an earlier one) and each object's box (inclusive pixels)."""
    rng = np.random.default_rng([spec.seed, 1, MULTILABEL_SPLITS.index(split), image_index])
    canvas, short = cluttered_canvas(rng, spec.min_side, spec.max_side)
    objects = int(rng.integers(1, min(3, spec.multilabel_classes) + 1))  # 1-3 (the same draws as before for 3+ classes)
    shown = sorted(int(c) for c in rng.choice(spec.multilabel_classes, size=objects, replace=False))
    boxes = [
        _paste(canvas, rng, *transfer_class(class_index), math.exp(rng.uniform(*np.log(MULTILABEL_OBJECT_SIZE))) * short) for class_index in shown
    ]
    return _jpeg(rng, canvas), shown, boxes


def _annotation(image_id: str, names: list[str], boxes: list[tuple[int, int, int, int]]) -> str:
    """VOC's XML for one image: each object's name and box (the devkit's 1-based inclusive corners)."""
    objects = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
        f"<xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax></bndbox></object>"
        for name, (x0, y0, x1, y1) in zip(names, boxes)
    )
    return f"<annotation><filename>{image_id}.jpg</filename>{objects}</annotation>\n"


def _write_single(root: Path, spec: TransferSpec) -> None:
    for class_index in range(spec.classes):
        folder = root / "categories" / class_name(class_index)
        folder.mkdir(parents=True)
        for image_index in range(spec.per_class):
            (folder / f"{class_index + 1:03d}_{image_index:04d}.jpg").write_bytes(render_single(spec, class_index, image_index))


def _write_multi(root: Path, spec: TransferSpec) -> None:
    names = [class_name(k).split(".", 1)[1] for k in range(spec.multilabel_classes)]
    devkit = root / "multilabel" / "VOCdevkit" / "VOC2007"
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Action"):
        (devkit / folder).mkdir(parents=True)
    for split in MULTILABEL_SPLITS:
        count = spec.trainval if split == "trainval" else spec.test
        ids, present = [], []
        for image_index in range(count):
            image_id = f"{split}_{image_index:06d}"
            jpeg, shown, boxes = render_multi(spec, split, image_index)
            (devkit / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
            (devkit / "Annotations" / f"{image_id}.xml").write_text(_annotation(image_id, [names[k] for k in shown], boxes))
            ids.append(image_id)
            present.append(shown)
        for folder in ("Main", "Action"):
            (devkit / "ImageSets" / folder / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for k, name in enumerate(names):
            lines = "".join(f"{i} {1 if k in shown else -1:2d}\n" for i, shown in zip(ids, present))
            (devkit / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text(lines)
            # the toy actions: every object is a "person" whose action is its class (VOC's `id object label` lines)
            objects = "".join(f"{i} {n + 1} {1 if shown[n] == k else -1:2d}\n" for i, shown in zip(ids, present) for n in range(len(shown)))
            (devkit / "ImageSets" / "Action" / f"{name}_{split}.txt").write_text(objects)
    (root / "multilabel" / "classes.txt").write_text("".join(f"{name}\n" for name in names))


def generate_transfer(out_dir: Path, spec: TransferSpec = TransferSpec()) -> Path:
    """Write both sets into `out_dir` once and atomically; an existing complete folder with the same parameters is
    kept, one with others is an error (`vgg.data.dataset_folder.write_once`)."""

    def fill(staging: Path) -> None:
        _write_single(staging, spec)
        _write_multi(staging, spec)

    return write_once(Path(out_dir), DESCRIPTION, {**asdict(spec), "generator": GENERATOR_VERSION}, fill, "a transfer set")
