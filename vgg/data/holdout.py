"""A held-out split of a dataset's train images, for choosing settings (a recipe, a schedule) without
ever looking at the val images that the tables report.

`write_holdout(data, out, per_class)` writes a dataset folder in the class-folder layout whose
`val/` holds `per_class` train images of each class of `data` and whose `train/` holds the rest
of them, as symbolic links to `data`'s files (with their box annotations, where `data` has train boxes): `python -m vgg train --data OUT` then validates
on images the tables never see, and `data`'s own val split is left unread. Which images are held
out is a function of the seed alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vgg.data.dataset_folder import write_once
from vgg.data.datasets import load_split
from vgg.localisation.annotations import BoxAnnotationsError, load_boxes, solution_name, write_kaggle_solution

DESCRIPTION = "holdout.json"


def write_holdout(data: Path | str, out: Path | str, per_class: int, seed: int = 0) -> Path:
    """Write `out` (see the module's doc); an existing `out` with the same source, size and seed is
    kept, one with others is an error. Returns `out`."""
    data = Path(data).resolve()
    if per_class < 1:
        raise ValueError(f"--per-class must be at least 1, got {per_class}")
    images = load_split(data, "train")

    def fill(staging: Path) -> None:
        held_out: dict[str, list[str]] = {"train": [], "val": []}
        for index, name in enumerate(images.classes):
            members = np.flatnonzero(images.samples.labels == index)
            if len(members) <= per_class:
                raise ValueError(f"class {name} of {data} has {len(members)} train images: too few to hold out {per_class} and train on the rest")
            order = np.random.default_rng([seed, index]).permutation(members)
            for split, chosen in (("val", order[:per_class]), ("train", order[per_class:])):
                folder = staging / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for sample in sorted(chosen):
                    source, _ = images.samples[int(sample)]
                    os.symlink(source, folder / source.name)
                    held_out[split].append(source.stem)
        _write_boxes(data, staging, held_out)

    description = {"source": str(data), "per_class": per_class, "seed": seed}
    return write_once(Path(out), DESCRIPTION, description, fill, "a held-out split")


def _write_boxes(data: Path, staging: Path, held_out: dict[str, list[str]]) -> None:
    """The box annotations of each split's images (Appendix A's localisation), where the source has train boxes."""
    from vgg.localisation.box_data import ensure_boxes  # here: the data package does not load the localisation stage's loaders

    ensure_boxes(data)  # a synthetic source generated before it wrote its boxes gets them now
    try:
        boxes = load_boxes(data, "train")
    except BoxAnnotationsError:
        return
    for split, stems in held_out.items():
        write_kaggle_solution(staging / solution_name(split), {stem: boxes[stem] for stem in stems if stem in boxes})
