"""Images with their boxes for the localisation net (Appendix A): which images train, and where each
image's boxes go through the paper's training and validation transforms.

An image takes part in box training when the annotations give it at least one box of its own class;
the others are skipped, and counted in the log. Each sample's target is one box in its crop: of the
image's boxes of its class, the one with the largest area inside the crop, whole (not clipped: the net learns
the object's extent beyond its crop, which the test protocols score; our choice, as is the box of an image
with several: the paper says neither). A crop that cuts every box away has no target (NaNs:
`vgg.localisation.regression` leaves it out of the loss).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from vgg.data.datasets import SYNTHETIC_DESCRIPTION, ImageList
from vgg.data.loaders import ImageDataset, Transform, read_image
from vgg.data.transforms import CentreCropTransform, TrainTransform, rescaled_size
from vgg.localisation.annotations import ObjectBox, boxes_for_images, find_box_source, load_boxes
from vgg.localisation.boxes import centre_crop_boxes, clip_boxes, crop_boxes, encode, flip_boxes, rescale_boxes

NO_TARGET = torch.full((4,), float("nan"))


def class_boxes(found: tuple[ObjectBox, ...] | None, wnid: str) -> np.ndarray | None:
    """An image's boxes of class `wnid` as a (k, 4) float32 array; None when it has none."""
    chosen = [item.box for item in found or () if item.wnid == wnid]
    return np.asarray(chosen, dtype=np.float32) if chosen else None


def boxed_images(images: ImageList, data_dir: Path | str, log: Callable[[str], None] = print) -> tuple[ImageList, list[np.ndarray]]:
    """The images of `images` that have a box of their class, and those boxes (original pixel
    coordinates, one (k, 4) array per image); the images without one are skipped and counted in the log."""
    ensure_boxes(Path(data_dir))
    found, _ = boxes_for_images(images.image_ids(), load_boxes(Path(data_dir), images.split))
    kept, boxes = [], []
    for index, label in enumerate(images.samples.labels.tolist()):
        chosen = class_boxes(found[index], images.classes[label])
        if chosen is not None:
            kept.append(index)
            boxes.append(chosen)
    skipped = len(images) - len(kept)
    log(f"{images.split}: {len(kept)} images with a box of their class for box training"
        + (f"; {skipped} without one skipped" if skipped else ""))
    if not kept:
        raise ValueError(f"no {images.split} image of {data_dir} has a box of its class: check that the box annotations belong to this dataset")
    return replace(images, samples=images.samples.take(kept)), boxes


def with_boxes(images: ImageList, data_dir: Path | str, boxes: bool, log: Callable[[str], None] = print) -> tuple[ImageList, list[np.ndarray] | None]:
    """For a box regressor (`boxes`), `boxed_images`; else the images as they are, and no boxes."""
    return boxed_images(images, data_dir, log) if boxes else (images, None)


def subset_with_boxes(images: ImageList, boxes: list[np.ndarray] | None, limit: int | None) -> tuple[ImageList, list[np.ndarray] | None]:
    """`images.subset(limit)`, and its images' boxes where there are any."""
    chosen = images.subset(limit)
    if boxes is None:
        return chosen, None
    position = {path: i for i, path in enumerate(images.samples.relative_paths.tolist())}
    return chosen, [boxes[position[path]] for path in chosen.samples.relative_paths.tolist()]


def image_dataset(images: ImageList, boxes: list[np.ndarray] | None, transform: Transform, crop: int, seed: int = 0,
                  skip_bad_images: bool = False, cache_decoded: bool = False) -> ImageDataset:
    """A classifier's `ImageDataset`, or with `boxes` a box regressor's `BoxDataset`."""
    if boxes is None:
        return ImageDataset(images, transform, seed=seed, skip_bad_images=skip_bad_images, cache_decoded=cache_decoded)
    return BoxDataset(images, boxes, transform, crop, seed, skip_bad_images, cache_decoded)


def ensure_boxes(data_dir: Path) -> None:
    """A synthetic set generated before it wrote boxes gets them now (its images are unchanged:
    `vgg.data.synthetic.ensure_synthetic_boxes`); other datasets are left as they are."""
    if (data_dir / SYNTHETIC_DESCRIPTION).is_file():
        from vgg.data.synthetic import ensure_synthetic_boxes

        ensure_synthetic_boxes(data_dir)


def boxes_fingerprint(data_dir: Path | str) -> str:
    """The box annotations of a dataset in a run's identity, so that other annotations make another run:
    each split's source, a CSV by its size, an XML folder by the names in it (one listing, not a walk of
    ImageNet's 545,000 files; an XML file edited in place goes unseen). A synthetic set generated before it
    wrote its boxes gets them first (`ensure_boxes`), so that its runs' identity is the same before and after."""
    ensure_boxes(Path(data_dir))
    parts = {}
    for split in ("train", "val"):
        try:
            source = find_box_source(Path(data_dir), split)
        except ValueError:
            parts[split] = "none"
            continue
        content = source.stat().st_size if source.is_file() else hashlib.sha256("\n".join(sorted(os.listdir(source))).encode()).hexdigest()[:16]
        parts[split] = f"{source.name}:{content}"
    return json.dumps(parts, sort_keys=True)


def prepared_boxes(transform: Transform, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An image's boxes in its prepared form (`transform.prepare`): rescaled to a fixed S for training
    (a jittered S prepares nothing), rescaled to Q and centre-cropped for validation."""
    if isinstance(transform, CentreCropTransform):
        size = rescaled_size(height, width, transform.scale)
        return centre_crop_boxes(rescale_boxes(boxes, (height, width), size), *size, transform.crop)
    if isinstance(transform, TrainTransform):
        if transform.scale.jittered:
            return boxes
        return rescale_boxes(boxes, (height, width), rescaled_size(height, width, transform.scale.low))
    raise TypeError(f"boxes do not follow {transform!r}: box training takes TrainTransform or CentreCropTransform")


def crop_target(boxes: torch.Tensor, crop: int) -> torch.Tensor:
    """The regression target of a crop (`encode`d relative to it) from its image's boxes in crop coordinates:
    the one with the largest area inside the crop, whole (it may reach beyond the crop, as the object does:
    the test protocols score the object's whole box); NaNs when none reaches into the crop."""
    inside = clip_boxes(boxes, crop, crop)
    areas = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
    best = int(torch.argmax(areas))
    return encode(boxes[best], crop).float() if areas[best] > 0 else NO_TARGET


class BoxDataset(ImageDataset):
    """An `ImageDataset` whose samples also carry their crop's target box (`crop_target`)."""

    def __init__(self, images: ImageList, boxes: list[np.ndarray], transform: Transform, crop: int, seed: int = 0,
                 skip_bad_images: bool = False, cache_decoded: bool = False):
        super().__init__(images, transform, seed=seed, skip_bad_images=skip_bad_images, cache_decoded=cache_decoded)
        if len(boxes) != len(images):
            raise ValueError(f"{len(boxes)} box lists for {len(images)} images")
        self.boxes, self.crop = boxes, crop
        self._prepared_boxes: dict[int, torch.Tensor] = {}

    def _prepared(self, index: int, path: Path) -> torch.Tensor:
        """The prepared image (cached as `ImageDataset`'s), its boxes prepared alongside into `_prepared_boxes`."""
        cached = None if self._decoded is None else self._decoded.get(index)
        if cached is not None:
            return cached
        image = read_image(path)
        prepared = self.transform.prepare(image)
        self._prepared_boxes[index] = prepared_boxes(self.transform, torch.from_numpy(self.boxes[index]), *image.shape[-2:])
        if self._decoded is not None:
            self._decoded[index] = prepared
        return prepared

    def _sample(self, image: torch.Tensor, label: int, index: int, rng: np.random.Generator) -> tuple:
        boxes = self._prepared_boxes[index] if self._decoded is not None else self._prepared_boxes.pop(index)
        if isinstance(self.transform, TrainTransform):
            pixels, offset, plan = self.transform.augment_planned(image, rng)
            boxes = crop_boxes(boxes, plan.top, plan.left, plan.side, self.crop)
            if plan.flip:
                boxes = flip_boxes(boxes, self.crop)
        else:
            pixels, offset = self.transform.augment(image, rng)
        return pixels, label, offset, index, crop_target(boxes, self.crop)
