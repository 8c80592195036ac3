"""Image datasets on disk: layout detection, class indices, labels for ImageNet's flat val/.

Accepted layouts of `--data DIR`:

- class folders: `DIR/train/<class>/*`, `DIR/val/<class>/*` (ImageNet after the usual val
  re-sorting, Imagenette, the synthetic set, any custom dataset);
- ImageNet's official layout: `DIR/train/<wnid>/*` and a flat `DIR/val/*.JPEG`, labelled by
  the devkit (`DIR/ILSVRC2012_devkit_t12.tar.gz`, or that archive extracted beside val/) or
  by Kaggle's `DIR/LOC_val_solution.csv`;
- Kaggle's ImageNet download: `DIR/ILSVRC/Data/CLS-LOC/{train,val}` with
  `DIR/LOC_val_solution.csv`.

Class index = position of the class folder name in sorted order, so ImageNet wnids get the
standard indices that torchvision's weights use.
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vgg.recipe.profiles import load_profiles

SYNTHETIC_DESCRIPTION, SYNTHETIC_COMPLETE = "synthetic.json", ".complete"
"""The files `vgg.data.synthetic.generate` writes last into a synthetic set: one without them is incomplete."""

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_FOLDER = "ILSVRC2012_devkit_t12"
KAGGLE_SOLUTION = "LOC_val_solution.csv"
KAGGLE_IMAGE_ROOT = Path("ILSVRC/Data/CLS-LOC")

ACCEPTED_LAYOUTS = f"""accepted layouts:
  class folders:     DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG
  ImageNet official: DIR/train/<wnid>/*.JPEG, flat DIR/val/*.JPEG, and {DEVKIT_ARCHIVE} (or {DEVKIT_FOLDER}/) or {KAGGLE_SOLUTION} in DIR
  Kaggle ImageNet:   DIR/{KAGGLE_IMAGE_ROOT}/train, DIR/{KAGGLE_IMAGE_ROOT}/val and DIR/{KAGGLE_SOLUTION}
  (images: .JPEG/.jpg/.jpeg/.png in any case)"""


class DatasetLayoutError(ValueError):
    """The data folder is not in an accepted layout, or part of it is missing or empty (the accepted
    layouts follow the message unless `layouts` is False: a missing folder is one line)."""

    def __init__(self, message: str, layouts: bool = True) -> None:
        super().__init__(f"{message}\n{ACCEPTED_LAYOUTS}" if layouts else message)


class Samples(Sequence[tuple[Path, int]]):
    """(path, class index) pairs kept in two numpy arrays: paths relative to `root` as bytes, labels as int64.

    A tuple of (Path, int) costs ~450 MB for ImageNet's 1.28M images, and every loader worker
    copies it page by page as reading items writes their reference counts; these arrays
    (~45 MB) hold no per-image Python objects, so the workers share them.
    """

    def __init__(self, root: Path, relative_paths: np.ndarray, labels: np.ndarray) -> None:
        self.root, self.relative_paths, self.labels = root, relative_paths, np.asarray(labels, dtype=np.int64)

    @classmethod
    def from_pairs(cls, root: Path, pairs: Sequence[tuple[Path, int]]) -> Samples:
        """From (path under `root`, class index) pairs."""
        relative = np.array([os.fsencode(path.relative_to(root)) for path, _ in pairs], dtype=np.bytes_)
        return cls(root, relative, np.array([label for _, label in pairs]))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.root / os.fsdecode(self.relative_paths[index]), int(self.labels[index])

    def take(self, indices: Sequence[int]) -> Samples:
        """The samples at `indices`, in that order."""
        chosen = np.asarray(indices, dtype=np.int64)
        return Samples(self.root, self.relative_paths[chosen], self.labels[chosen])

    def ids(self) -> list[str]:
        """Each path relative to `root`."""
        return [os.fsdecode(path) for path in self.relative_paths]


@dataclass(frozen=True)
class ImageList:
    """One split of a dataset: image paths with their class indices."""

    split: str
    layout: str
    classes: tuple[str, ...]
    samples: Samples
    ignored_files: int  # files without an image extension, left out

    @property
    def root(self) -> Path:
        """The split folder, which image paths and ids are relative to."""
        return self.samples.root

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, limit: int | None) -> ImageList:
        """A fixed pseudo-random subset of `limit` images (the same for every run), in dataset order;
        the whole list when `limit` is 0, None or at least its size."""
        if not limit or limit >= len(self.samples):
            return self
        chosen = torch.randperm(len(self.samples), generator=torch.Generator().manual_seed(0))[:limit].sort().values
        return replace(self, samples=self.samples.take(chosen.tolist()), ignored_files=0)

    def image_ids(self) -> list[str]:
        """Each image's path relative to the split folder: the ids of score files."""
        return self.samples.ids()

    def classes_without_images(self) -> list[str]:
        """The classes (of train's list) with no image in this split: a val split may lack some."""
        present = set(np.unique(self.samples.labels).tolist())
        return [name for index, name in enumerate(self.classes) if index not in present]

    def describe(self) -> str:
        """One log line naming the detected layout and the sizes."""
        extra = f", {self.ignored_files} non-image files ignored" if self.ignored_files else ""
        return (
            f"{self.split}: {len(self.samples)} images in {len(self.classes)} classes "
            f"from {self.root} (layout: {self.layout}{extra})"
        )


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _synthetic_profile(data_dir: Path):
    """The profile whose synthetic set lives in `data_dir` (experiments/profiles.toml), or None."""
    for profile in load_profiles().values():
        if profile.synthetic and profile.data and Path(profile.data).resolve() == data_dir.resolve():
            return profile
    return None


def _generate_command(profile, data_dir: Path) -> str:
    options = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in profile.synthetic.items())
    return f"`python -m vgg data synth --out {data_dir} {options}` (make table3 PROFILE={profile.name} does it too)"


def missing_data_hint(data_dir: Path) -> str:
    """How to get a data folder that does not exist: the command that generates it when it is a
    profile's synthetic set (experiments/profiles.toml), else to check the path."""
    profile = _synthetic_profile(data_dir)
    if profile is not None:
        return f"it is the {profile.name} profile's synthetic set; generate it with {_generate_command(profile, data_dir)}"
    return "check the path, or pass --data DIR (make: DATA=DIR)"


def require_data_folder(data_dir: Path | str) -> Path:
    """`data_dir`, which must be a folder, and a complete one if it is a synthetic set: else a one-line
    error saying how to get it."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetLayoutError(f"data folder {data_dir} does not exist: {missing_data_hint(data_dir)}", layouts=False)
    marks = [name for name in (SYNTHETIC_DESCRIPTION, SYNTHETIC_COMPLETE) if (data_dir / name).exists()]
    profile = None if len(marks) == 2 else _synthetic_profile(data_dir)  # a complete set needs no lookup
    if len(marks) == 1 or (profile is not None and not marks):
        missing = " and ".join(name for name in (SYNTHETIC_DESCRIPTION, SYNTHETIC_COMPLETE) if name not in marks)
        how = _generate_command(profile, data_dir) if profile is not None else "`python -m vgg data synth --out ...`"
        raise DatasetLayoutError(
            f"data folder {data_dir} is a synthetic set whose generation did not finish (no {missing}): "
            f"remove it and generate it again with {how}",
            layouts=False,
        )
    return data_dir


def missing_classes_warning(images: ImageList, listed: int = 10) -> str | None:
    """The warning line for the classes without images in `images` (None when every class has some),
    naming the first `listed`: "warning: 2 of 4 classes have no val images (n01, n02): their val
    error is not measured"."""
    missing = images.classes_without_images()
    if not missing:
        return None
    names = ", ".join(missing[:listed]) + (", ..." if len(missing) > listed else "")
    have, their = ("has", "its") if len(missing) == 1 else ("have", "their")
    return (
        f"warning: {len(missing)} of {len(images.classes)} classes {have} no {images.split} images ({names}): "
        f"{their} {images.split} error is not measured"
    )


def load_split(data_dir: Path | str, split: str) -> ImageList:
    """Find `split` ("train" or "val") of the dataset in `data_dir`, whatever its layout."""
    data_dir = require_data_folder(data_dir)
    image_root = data_dir / KAGGLE_IMAGE_ROOT if (data_dir / KAGGLE_IMAGE_ROOT).is_dir() else data_dir
    split_dir = image_root / split
    if not split_dir.is_dir():
        raise DatasetLayoutError(f"{data_dir} has no {split}/ folder (looked for {split_dir})")
    entries = sorted(split_dir.iterdir())
    if any(entry.is_dir() for entry in entries):
        classes = _class_names(image_root, split_dir)
        samples, ignored = _class_folder_samples(split_dir, classes)
        layout = "Kaggle ImageNet" if image_root != data_dir else "class folders"
        return ImageList(split, layout, classes, Samples.from_pairs(split_dir, samples), ignored)
    images = [entry for entry in entries if is_image_file(entry)]
    if not images:
        raise DatasetLayoutError(f"{split_dir} holds neither class folders nor images")
    wnid_of, label_source = _flat_val_labels(data_dir, image_root)
    classes = _class_names(image_root, None) or tuple(sorted(set(wnid_of.values())))
    index_of = {name: index for index, name in enumerate(classes)}
    samples = []
    for image in images:
        wnid = wnid_of.get(image.stem)
        if wnid is None:
            raise DatasetLayoutError(f"{label_source} has no label for {image}")
        if wnid not in index_of:
            raise DatasetLayoutError(f"{image} is labelled {wnid} by {label_source}, a class missing from {image_root / 'train'}")
        samples.append((image, index_of[wnid]))
    ignored = len(entries) - len(images)
    layout = f"ImageNet flat val, labels from {label_source.name}"
    return ImageList(split, layout, classes, Samples.from_pairs(split_dir, samples), ignored)


def _class_names(image_root: Path, split_dir: Path | None) -> tuple[str, ...]:
    """Sorted class folder names: train's when it has class folders (val must match), else the split's own."""
    train_dir = image_root / "train"
    train_classes = tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir())) if train_dir.is_dir() else ()
    if split_dir is None:
        return train_classes
    own = tuple(sorted(p.name for p in split_dir.iterdir() if p.is_dir()))
    if train_classes and split_dir != train_dir and set(own) - set(train_classes):
        unknown = sorted(set(own) - set(train_classes))
        raise DatasetLayoutError(f"{split_dir} has class folders missing from {train_dir}: {', '.join(unknown[:5])}")
    return train_classes or own


def _class_folder_samples(split_dir: Path, classes: tuple[str, ...]) -> tuple[list[tuple[Path, int]], int]:
    samples: list[tuple[Path, int]] = []
    ignored = 0
    for index, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue  # a val split may lack some classes
        files = sorted(p for p in folder.iterdir() if p.is_file())
        images = [p for p in files if is_image_file(p)]
        if not images:
            raise DatasetLayoutError(f"class folder {folder} has no images")
        ignored += len(files) - len(images)
        samples.extend((image, index) for image in images)
    return samples, ignored


def _flat_val_labels(data_dir: Path, image_root: Path) -> tuple[dict[str, str], Path]:
    """Image stem -> wnid for ImageNet's flat val folder, from Kaggle's CSV or the devkit."""
    for folder in dict.fromkeys([data_dir, image_root]):
        solution = folder / KAGGLE_SOLUTION
        if solution.is_file():
            return _read_kaggle_solution(solution), solution
        for devkit in (folder / DEVKIT_ARCHIVE, folder / DEVKIT_FOLDER):
            if devkit.exists():
                return _read_devkit(devkit), devkit
    raise DatasetLayoutError(
        f"{image_root / 'val'} is a flat folder of images but no labels were found: put {DEVKIT_ARCHIVE} "
        f"or {KAGGLE_SOLUTION} in {data_dir}, or sort val/ into class folders"
    )


def _read_kaggle_solution(path: Path) -> dict[str, str]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            raise DatasetLayoutError(f"{path} lacks the ImageId and PredictionString columns of Kaggle's {KAGGLE_SOLUTION}")
        return {row["ImageId"]: row["PredictionString"].split()[0] for row in reader}


def _read_devkit(path: Path) -> dict[str, str]:
    """Val labels from the ILSVRC2012 devkit: meta.mat (ID -> wnid) and the ground-truth IDs in file order."""
    meta_name = f"{DEVKIT_FOLDER}/data/meta.mat"
    truth_name = f"{DEVKIT_FOLDER}/data/ILSVRC2012_validation_ground_truth.txt"
    try:
        if path.is_dir():
            meta_bytes = (path / "data" / "meta.mat").read_bytes()
            truth_text = (path / "data" / "ILSVRC2012_validation_ground_truth.txt").read_text()
        else:
            with tarfile.open(path) as archive:
                meta_bytes = archive.extractfile(meta_name).read()
                truth_text = archive.extractfile(truth_name).read().decode()
    except (KeyError, FileNotFoundError, AttributeError, tarfile.TarError) as error:
        raise DatasetLayoutError(f"{path} is not a complete ILSVRC2012 devkit ({error})") from None
    from scipy.io import loadmat  # here: only the ILSVRC devkit needs scipy, which takes a second to import

    synsets = loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
    wnid_of_id = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    ids = [int(line) for line in truth_text.split()]
    return {f"ILSVRC2012_val_{number:08d}": wnid_of_id[label] for number, label in enumerate(ids, start=1)}
