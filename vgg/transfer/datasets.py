"""Appendix B's datasets on disk: image paths and labels of PASCAL VOC (classification, 2012 actions) and
Caltech-101/256, plus Caltech's random train/test splits. Plain data only: no images are decoded here.

Accepted layouts (ROOT is what is passed):
  VOC:      ROOT/VOCdevkit/VOC{year}, ROOT/VOC{year} or ROOT itself being VOC{year}, holding JPEGImages/,
            ImageSets/Main/ (classification) and, for actions, ImageSets/Action/ and Annotations/
  Caltech:  ROOT/101_ObjectCategories/<class>/*.jpg or ROOT/256_ObjectCategories/<NNN.name>/*.jpg,
            or ROOT itself being that category folder
"""

from __future__ import annotations

from collections.abc import Sequence

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vgg.data.datasets import is_image_file

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 20 VOC classes in the devkit's order: the columns of `VocSplit.labels`."""
VOC_ACTIONS = (
    "jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse", "running", "takingphoto",
    "usingcomputer", "walking", "other",
)  # fmt: skip
"""The 11 VOC-2012 actions, "other" last: the columns of `VocActionSplit.labels`."""
EVALUATED_ACTIONS = VOC_ACTIONS[:10]
"""The actions the devkit evaluates (its `VOCevalaction` loop and published mAPs skip "other")."""
CALTECH_PROTOCOL = {101: (30, 50), 256: (60, None)}
"""Paper: train images per class and test images per class (None: all the rest), 3 splits each."""


class TransferLayoutError(ValueError):
    """A transfer dataset's folder is not in the expected layout, or part of it is missing (one line)."""


@dataclass(frozen=True)
class VocSplit:
    """One VOC classification split: `paths[i]` is image `ids[i]`, `labels` (N, 20) int8 in {1, -1, 0}
    (present, absent, difficult only), columns in `VOC_CLASSES` order."""

    year: int
    split: str
    root: Path  # the VOC{year} folder
    ids: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: np.ndarray


@dataclass(frozen=True)
class VocActionSplit:
    """One VOC-2012 action split, one sample per (image, person): `boxes` (N, 4) float64 x0, y0, x1, y1 in
    continuous pixel coordinates (the file's xmin - 1 and inclusive xmax), `labels` (N, 11) int8 in `VOC_ACTIONS` order."""

    split: str
    root: Path
    ids: tuple[str, ...]
    object_indices: np.ndarray  # (N,) 1-based <object> number in Annotations/{id}.xml
    paths: tuple[Path, ...]
    boxes: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class CaltechSet:
    """All images of Caltech-101 or -256: `paths[i]` of class `labels[i]` (index into the sorted `classes`)."""

    kind: int
    root: Path  # the category folder
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: np.ndarray


@dataclass(frozen=True)
class CaltechSplit:
    """One random split: sorted indices into the `CaltechSet`. The train images are `fit` + `held_out` (the
    latter for choosing the SVM's C); `test` is disjoint from both."""

    index: int
    fit: np.ndarray
    held_out: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        """All train images (fit and held out), sorted: for the final SVM once C is chosen."""
        return np.sort(np.concatenate([self.fit, self.held_out]))


def find_voc_folder(root: Path, year: int) -> Path:
    """The VOC{year} folder: root/VOCdevkit/VOC{year}, root/VOC{year}, or root itself (named VOC{year} or
    holding ImageSets/)."""
    root = Path(root)
    candidates = [root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}"]
    for folder in candidates:
        if folder.is_dir():
            return folder
    if root.is_dir() and (root.name == f"VOC{year}" or (root / "ImageSets").is_dir()):
        return root
    looked = ", ".join(map(str, candidates))
    raise TransferLayoutError(f"no VOC{year} folder found in {root} (looked for {looked} and {root}/ImageSets)")


def _read_lines(path: Path, what: str) -> list[list[str]]:
    if not path.is_file():
        raise TransferLayoutError(f"{path.parent} lacks {path.name} ({what})")
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _image_paths(voc: Path, ids: list[str]) -> tuple[Path, ...]:
    paths = tuple(voc / "JPEGImages" / f"{image_id}.jpg" for image_id in ids)
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise TransferLayoutError(f"{voc / 'JPEGImages'} lacks {missing[0].name} ({len(missing)} listed images absent)")
    return paths


def read_voc_classification(root: Path, year: int, split: str, classes: Sequence[str] = VOC_CLASSES) -> VocSplit:
    """VOC classification `split` (train, val, trainval, test): ids from ImageSets/Main/{split}.txt, labels from
    the ImageSets/Main/{class}_{split}.txt files of `classes` (VOC's 20; the toy multi-label set's own,
    `vgg.data.synthetic_transfer`), which must list exactly those ids."""
    voc = find_voc_folder(root, year)
    main = voc / "ImageSets" / "Main"
    ids = [fields[0] for fields in _read_lines(main / f"{split}.txt", f"the image ids of {split}")]
    if not ids:
        raise TransferLayoutError(f"{main / f'{split}.txt'} lists no images")
    row = {image_id: i for i, image_id in enumerate(ids)}
    labels = np.zeros((len(ids), len(classes)), dtype=np.int8)
    for c, name in enumerate(classes):
        path = main / f"{name}_{split}.txt"
        lines = _read_lines(path, f"the {name} labels of {split}")
        listed = [fields[0] for fields in lines]
        if len(lines) != len(ids) or set(listed) != set(ids):
            unknown = sorted(set(listed) - set(ids)) or sorted(set(ids) - set(listed)) or ["duplicates"]
            raise TransferLayoutError(f"{path} does not list the images of {split}.txt (differs at {unknown[0]})")
        for fields in lines:
            if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
                raise TransferLayoutError(f"{path}: line {' '.join(fields)!r} is not 'image_id 1|-1|0'")
            labels[row[fields[0]], c] = int(fields[1])
    return VocSplit(year, split, voc, tuple(ids), _image_paths(voc, ids), labels)


def _object_box(annotation: Path, number: int) -> tuple[float, float, float, float]:
    """The box of the `number`-th (1-based) <object> of `annotation` in continuous 0-based pixel coordinates: the
    devkit's corners are 1-based inclusive pixels, so (xmin - 1, ymin - 1, xmax, ymax)."""
    if not annotation.is_file():
        raise TransferLayoutError(f"{annotation.parent} lacks {annotation.name} (the person boxes)")
    try:
        objects = ElementTree.parse(annotation).getroot().findall("object")
    except ElementTree.ParseError as error:
        raise TransferLayoutError(f"{annotation} is not valid XML ({error})") from None
    if not 1 <= number <= len(objects):
        raise TransferLayoutError(f"{annotation} has {len(objects)} objects, no object {number}")
    box = objects[number - 1].find("bndbox")
    corners = [box.findtext(name) if box is not None else None for name in ("xmin", "ymin", "xmax", "ymax")]
    try:
        x0, y0, x1, y1 = (float(text) for text in corners)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TransferLayoutError(f"{annotation} object {number} lacks a numeric bndbox ({corners})") from None
    return x0 - 1.0, y0 - 1.0, x1, y1


def read_voc_action(root: Path, split: str, year: int = 2012, actions: Sequence[str] = VOC_ACTIONS) -> VocActionSplit:
    """VOC-2012 action `split`: the (image, person) pairs of ImageSets/Action/{action}_{split}.txt (lines
    `image_id object_index label`, labels 1 / -1, a 0 kept as is), which must all list the same pairs in one
    order, each image listed in ImageSets/Action/{split}.txt, the box from Annotations/{id}.xml. "other" is read
    from other_{split}.txt where present; the VOC-2012 release has no such file, and then a person is "other"
    when none of the 10 actions is positive. `year` and `actions` name another devkit folder and action list
    (the toy set's, `vgg.data.synthetic_transfer`)."""
    voc = find_voc_folder(root, year)
    action_dir = voc / "ImageSets" / "Action"
    split_ids = {fields[0] for fields in _read_lines(action_dir / f"{split}.txt", f"the image ids of {split}")}
    pairs: list[tuple[str, int]] | None = None
    columns = []
    for name in actions:
        path = action_dir / f"{name}_{split}.txt"
        if name == "other" and not path.is_file():
            columns.append(np.where((np.stack(columns, axis=1) > 0).any(axis=1), -1, 1))
            break
        lines = _read_lines(path, f"the {name} labels of {split}")
        for f in lines:
            if len(f) != 3 or not f[1].isdigit() or f[2] not in ("1", "-1", "0"):
                raise TransferLayoutError(f"{path}: line {' '.join(f)!r} is not 'image_id object_index 1|-1'")
        these = [(f[0], int(f[1])) for f in lines]
        if pairs is None:
            pairs = these
            outside = [image_id for image_id, _ in pairs if image_id not in split_ids]
            if not pairs:
                raise TransferLayoutError(f"{path} lists no persons")
            if outside:
                raise TransferLayoutError(f"{path} lists {outside[0]}, not an image of {split}.txt")
        elif these != pairs:
            differ = [i for i, (a, b) in enumerate(zip(these, pairs)) if a != b] + [min(len(these), len(pairs))]
            raise TransferLayoutError(
                f"{path} does not list the persons of {VOC_ACTIONS[0]}_{split}.txt in order (line {differ[0] + 1})"
            )
        columns.append(np.array([int(f[2]) for f in lines]))
    assert pairs is not None
    ids = [image_id for image_id, _ in pairs]
    paths = _image_paths(voc, ids)
    boxes = np.array([_object_box(voc / "Annotations" / f"{i}.xml", n) for i, n in pairs], dtype=np.float64)
    objects = np.array([n for _, n in pairs], dtype=np.int64)
    labels = np.stack(columns, axis=1).astype(np.int8)
    return VocActionSplit(split, voc, tuple(ids), objects, paths, boxes.reshape(-1, 4), labels)


def read_caltech(root: Path, kind: int) -> CaltechSet:
    """Caltech-`kind` (101: 102 class folders with BACKGROUND_Google; 256: 257 `NNN.name` folders with
    257.clutter): the images directly inside each class folder, classes in sorted order."""
    if kind not in CALTECH_PROTOCOL:
        raise ValueError(f"Caltech kind must be 101 or 256, not {kind}")
    root, name = Path(root), f"{kind}_ObjectCategories"
    folder = root / name
    if not folder.is_dir():
        if not root.is_dir() or any(root.glob("*_ObjectCategories")):
            raise TransferLayoutError(f"{root} holds no {name} folder (and is not the category folder itself)")
        folder = root
    classes = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir()))
    if not classes:
        raise TransferLayoutError(f"{folder} holds no class folders")
    if kind == 256 and (wrong := [c for c in classes if not re.fullmatch(r"\d{3}\..+", c)]):
        raise TransferLayoutError(f"{folder / wrong[0]} is not a Caltech-256 class folder (NNN.name)")
    paths, labels = [], []
    for index, name in enumerate(classes):
        images = sorted(p for p in (folder / name).iterdir() if p.is_file() and is_image_file(p))
        if not images:
            raise TransferLayoutError(f"class folder {folder / name} has no images")
        paths += images
        labels += [index] * len(images)
    return CaltechSet(kind, folder, classes, tuple(paths), np.array(labels, dtype=np.int64))


def caltech_splits(
    dataset: CaltechSet,
    train_per_class: int,
    test_per_class: int | None,
    seed: int,
    splits: int = 3,
    held_out: float = 0.2,
) -> list[CaltechSplit]:
    """`splits` random splits, split s drawn by numpy's generator seeded with (seed, s): per class, a random
    `train_per_class` images to train and up to `test_per_class` of the rest (None: all the rest) to test;
    of the train images, round(held_out * train_per_class) (half up, at least 1) are held out for choosing C
    and the others fit. A class with fewer than train_per_class + 1 images (none left to test) is an error."""
    held = max(1, int(held_out * train_per_class + 0.5))
    if train_per_class <= held:
        raise ValueError(f"{train_per_class} train images per class leave none to fit once {held} are held out")
    members = [np.flatnonzero(dataset.labels == c) for c in range(len(dataset.classes))]
    for name, images in zip(dataset.classes, members):
        if len(images) < train_per_class + 1:
            raise ValueError(
                f"class {name} of Caltech-{dataset.kind} has {len(images)} images, fewer than the "
                f"{train_per_class + 1} needed ({train_per_class} to train and at least 1 to test)"
            )
    result = []
    for s in range(splits):
        generator = np.random.default_rng([seed, s])
        fit, held_back, test = [], [], []
        for images in members:
            order = generator.permutation(images)
            held_back.append(order[:held])
            fit.append(order[held:train_per_class])
            test.append(order[train_per_class:][:test_per_class])
        result.append(CaltechSplit(s, *(np.sort(np.concatenate(part)) for part in (fit, held_back, test))))
    return result
