"""The ILSVRC CLS-LOC box annotations: the devkit's per-image XML files and Kaggle's solution CSVs.

A box in memory is (x0, y0, x1, y1) in continuous pixel coordinates of the original image, pixel i
covering [i, i+1); the files hold inclusive pixel indices (xmin, ymin, xmax, ymax), so reading gives
(xmin, ymin, xmax + 1, ymax + 1) and writing does the inverse.
"""

from __future__ import annotations

import csv
import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

Box = tuple[float, float, float, float]
SYNTH_BOXES_COMMAND = "python -m vgg data synth-boxes --data DIR"
_FIELDS = ("ImageId", "PredictionString")
_CORNERS = ("xmin", "ymin", "xmax", "ymax")


class BoxAnnotationsError(ValueError):
    """Box annotations are missing or malformed."""


@dataclass(frozen=True)
class ObjectBox:
    """One annotated object: its class (wnid) and its box (x0, y0, x1, y1) in continuous pixel coordinates."""

    wnid: str
    box: Box


def solution_name(split: str) -> str:
    """The file name of Kaggle's box CSV for `split`: LOC_train_solution.csv, LOC_val_solution.csv."""
    return f"LOC_{split}_solution.csv"


def _box_sources(data_dir: Path, split: str) -> list[Path]:
    annotations = Path("Annotations/CLS-LOC") / split
    return [data_dir / solution_name(split), data_dir / annotations, data_dir / "ILSVRC" / annotations]


def find_box_source(data_dir: Path, split: str) -> Path:
    """Where the boxes of `split` are: Kaggle's (or the synthetic set's) CSV in `data_dir`, else the devkit's
    XML folder extracted into `data_dir`, else the one of Kaggle's full download."""
    data_dir = Path(data_dir)
    sources = _box_sources(data_dir, split)
    for source in sources:
        if source.is_file() if source.suffix == ".csv" else source.is_dir():
            return source
    raise BoxAnnotationsError(
        f"data folder {data_dir} has no {split} boxes (looked for {', '.join(map(str, sources))}): download the "
        f"ILSVRC CLS-LOC box annotations into it, or for the synthetic set run `{SYNTH_BOXES_COMMAND}`"
    )


def load_boxes(data_dir: Path, split: str) -> dict[str, tuple[ObjectBox, ...]]:
    """Image id (file stem) -> boxes of `split` in `data_dir`, from wherever `find_box_source` finds them."""
    source = find_box_source(data_dir, split)
    return read_kaggle_solution(source) if source.is_file() else read_xml_folder(source)


def boxes_for_images(
    image_ids: Sequence[str], boxes: Mapping[str, Sequence[ObjectBox]]
) -> tuple[list[tuple[ObjectBox, ...] | None], int]:
    """Each image's boxes (None for an image without any), looked up by the stem of its id (a path relative
    to the split folder, as `ImageList.image_ids` gives), and the number of images without a box."""
    found = [tuple(boxes.get(PurePath(image_id).stem, ())) or None for image_id in image_ids]
    return found, sum(entry is None for entry in found)


def _coordinate(text: str | None, where: str, name: str) -> float:
    try:
        value = float(text if text is not None else "")
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BoxAnnotationsError(f"{where}: {name} is not a number ({text!r})")
    return value


def _object_box(wnid: str, corners: Sequence[str | None], where: str) -> ObjectBox:
    """The box of inclusive file coordinates `corners` (xmin, ymin, xmax, ymax), checked."""
    xmin, ymin, xmax, ymax = (_coordinate(text, where, name) for text, name in zip(corners, _CORNERS))
    if xmax < xmin or ymax < ymin:
        raise BoxAnnotationsError(
            f"{where}: box of {wnid} has xmax < xmin or ymax < ymin ({xmin:g} {ymin:g} {xmax:g} {ymax:g})"
        )
    return ObjectBox(wnid, (xmin, ymin, xmax + 1, ymax + 1))


def _read_xml(path: Path) -> tuple[ObjectBox, ...]:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise BoxAnnotationsError(f"{path} is not valid XML ({error})") from None
    boxes = []
    for number, item in enumerate(root.iter("object"), start=1):
        where = f"{path} object {number}"
        wnid = (item.findtext("name") or "").strip()
        bndbox = item.find("bndbox")
        if not wnid or bndbox is None:
            raise BoxAnnotationsError(f"{where} lacks its {'name' if not wnid else 'bndbox'}")
        boxes.append(_object_box(wnid, [bndbox.findtext(name) for name in _CORNERS], where))
    return tuple(boxes)


def read_xml_folder(folder: Path) -> dict[str, tuple[ObjectBox, ...]]:
    """Image id (the XML file's stem) -> boxes, from the devkit's per-image XML files anywhere under `folder`
    (train: `<wnid>/<wnid>_<n>.xml`, val: flat `ILSVRC2012_val_<n>.xml`). Files without objects are left out."""
    boxes: dict[str, tuple[ObjectBox, ...]] = {}
    for path in sorted(Path(folder).rglob("*.xml")):
        if path.stem in boxes:
            raise BoxAnnotationsError(f"{path}: image {path.stem} is annotated twice under {folder}")
        found = _read_xml(path)
        if found:
            boxes[path.stem] = found
    return boxes


def _parse_prediction(text: str, where: str) -> tuple[ObjectBox, ...]:
    fields = text.split()
    if len(fields) % 5:
        raise BoxAnnotationsError(
            f"{where}: PredictionString has {len(fields)} fields, not groups of 5 (wnid xmin ymin xmax ymax)"
        )
    return tuple(_object_box(fields[i], fields[i + 1 : i + 5], where) for i in range(0, len(fields), 5))


def read_kaggle_solution(path: Path) -> dict[str, tuple[ObjectBox, ...]]:
    """Image id -> boxes, from Kaggle's `LOC_{train,val}_solution.csv` (`ImageId,PredictionString`, the
    latter groups of `wnid xmin ymin xmax ymax`). Images with an empty PredictionString are left out."""
    boxes: dict[str, tuple[ObjectBox, ...]] = {}
    seen: set[str] = set()
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(_FIELDS) <= set(reader.fieldnames):
            raise BoxAnnotationsError(f"{path} lacks the ImageId and PredictionString columns of a Kaggle solution CSV")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            image_id = (row["ImageId"] or "").strip()
            if not image_id:
                raise BoxAnnotationsError(f"{where}: no ImageId")
            if image_id in seen:
                raise BoxAnnotationsError(f"{where}: image {image_id} is listed twice")
            seen.add(image_id)
            found = _parse_prediction(row["PredictionString"] or "", where)
            if found:
                boxes[image_id] = found
    return boxes


def _prediction_string(boxes: Sequence[ObjectBox]) -> str:
    """`wnid xmin ymin xmax ymax` per box, in inclusive integer pixel indices."""
    groups = []
    for item in boxes:
        x0, y0, x1, y1 = (round(value) for value in item.box)
        groups.append(f"{item.wnid} {x0} {y0} {x1 - 1} {y1 - 1}")
    return " ".join(groups)


def write_kaggle_solution(path: Path, boxes: Mapping[str, Sequence[ObjectBox]]) -> None:
    """Write `boxes` as Kaggle's solution CSV (inclusive integer corners), sorted by image id, atomically:
    a temporary file beside `path`, then renamed over it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(_FIELDS)
            for image_id in sorted(boxes):
                writer.writerow([image_id, _prediction_string(boxes[image_id])])
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
