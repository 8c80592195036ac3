"""Appendix A's two test protocols for the localisation net, as per-image boxes (`BoxPredictions`), and
their scoring against the ground truth.

- Centre crop (Table 8): the val image rescaled to Q, its central crop, the box predicted for the
  ground-truth class (PCR) or the single box (SCR), mapped back into the image.
- Dense (Tables 9, 10): the net applied densely over the image rescaled to each Q (FC layers as
  convolutions: one box per position and class), every position's box for each of the image's top-5
  classes kept as a candidate, scored by the classification net's class posterior at that position
  (the localisation net's parent, applied densely at the same Q: the same positions). The candidates of
  several scales, or of several nets (the fusion), are pooled, then merged by OverFeat's greedy merge
  (`vgg.localisation.merge`) class by class; each class's best merged box is its prediction. No flips
  and no pooling offsets (the paper uses none).

A prediction is correct when its class is the ground truth's and its box has IoU > 0.5 with one of the
image's boxes of that class. The per-image boxes are saved (`vgg.suite.localisation_runs`), so fusions and
intervals are computed again without the nets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vgg.data.datasets import ImageList
from vgg.data.loaders import read_image
from vgg.data.transforms import centre_crop, rescale
from vgg.localisation.boxes import centre_half_box, decode, pairwise_iou, rescale_boxes, uncrop_boxes
from vgg.localisation.merge import best_box
from vgg.localisation.regression import BOX_OUTPUTS, IOU_CORRECT, predicted_boxes
from vgg.nets.models import FEATURE_STRIDE
from vgg.nets.trained import Net
from vgg.runtime.precision import FullFP32
from vgg.runtime.stop_signals import ignore_stop_signals

PROTOCOLS = ("centre-crop", "dense")
TOP_CLASSES = 5


@dataclass
class BoxPredictions:
    """A protocol's boxes for every val image, in original pixel coordinates.

    Centre crop: `boxes` (N, 4), one per image, for its ground-truth class. Dense: `classes` (N, 5), the
    classes localised in each image, and flat candidate lists: `boxes` (M, 4), `scores` (M,), and `owner`
    (M,), the candidate's image index x 5 + the class's rank.
    """

    protocol: str
    image_ids: list[str]
    labels: torch.Tensor
    sizes: torch.Tensor  # (N, 2): each image's original height and width
    boxes: torch.Tensor
    classes: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    owner: torch.Tensor | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in vars(self).items()}


class _ScaledImages(Dataset):
    """Each val image decoded once and rescaled to every Q (loader workers), with its original size."""

    def __init__(self, images: ImageList, pixels: Sequence[int]):
        self.images, self.pixels = images, list(pixels)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        path, label = self.images.samples[index]
        image = read_image(path)
        return index, label, tuple(image.shape[-2:]), [rescale(image, q) for q in self.pixels]


def _loader(images: ImageList, pixels: Sequence[int], workers: int) -> DataLoader:
    return DataLoader(
        _ScaledImages(images, pixels), batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None,
        worker_init_fn=ignore_stop_signals,
    )


def _normalised(net: Net, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    return net.normalization(image[None].to(device)).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
@FullFP32()
def centre_crop_boxes(net: Net, images: ImageList, scale: int, device: torch.device | str = "cpu", workers: int = 0) -> BoxPredictions:
    """Table 8's protocol: each image's box for its ground-truth class from the central crop at Q = `scale` (paper
    units), in fp32 (TF32 off on CUDA, as classification's evaluation)."""
    device, crop = torch.device(device), net.model.spec.crop
    model = net.model.to(device, memory_format=torch.channels_last).eval()
    boxes, sizes = torch.zeros(len(images), BOX_OUTPUTS), torch.zeros(len(images), 2, dtype=torch.long)
    for index, label, size, (scaled,) in _loader(images, [net.profile.size(scale)], workers):
        sizes[index] = torch.tensor(size)
        height, width = scaled.shape[-2:]
        outputs = model(_normalised(net, centre_crop(scaled, crop), device)).float().cpu()
        in_crop = decode(predicted_boxes(outputs, torch.tensor([label]))[0], crop)
        in_scaled = uncrop_boxes(in_crop, (height - crop) // 2, (width - crop) // 2, crop, crop)
        boxes[index] = rescale_boxes(in_scaled, (height, width), size)
    return BoxPredictions("centre-crop", images.image_ids(), torch.from_numpy(images.samples.labels.copy()), sizes, boxes)


def position_windows(height: int, width: int, rows: int, columns: int, crop: int) -> torch.Tensor:
    """The (rows, columns, 2) top-left corners (x, y) of the crop x crop windows that the dense net's
    positions see in a height x width input: the input's central `pooled_region`, stride 32."""
    top, left = height % FEATURE_STRIDE // 2, width % FEATURE_STRIDE // 2
    ys = top + FEATURE_STRIDE * torch.arange(rows, dtype=torch.float32)
    xs = left + FEATURE_STRIDE * torch.arange(columns, dtype=torch.float32)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


@torch.no_grad()
def dense_candidates(
    net: Net, scorer: Net, image: torch.Tensor, size: tuple[int, int], classes: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image rescaled to one Q: for each of `classes` (5,), every position's box (in the original
    image of `size`) and its score (the `scorer`'s posterior of that class there). Returns boxes (5 x P, 4),
    scores (5 x P,), and the rank of each candidate's class (5 x P,). The nets are applied as they are (put
    them in eval mode: `dense_boxes` does)."""
    inputs = _normalised(net, image, device)
    outputs = net.model.score_map(inputs).float()[0].cpu()  # (4 x classes, or 4, rows, columns)
    posteriors = F.softmax(scorer.model.score_map(inputs).float()[0], dim=0).cpu()  # (classes, rows, columns)
    crop = net.model.spec.crop
    rows, columns = outputs.shape[-2:]
    corners = position_windows(*image.shape[-2:], rows, columns, crop).reshape(-1, 2)
    per_class = outputs.reshape(-1, BOX_OUTPUTS, rows * columns).permute(0, 2, 1)  # (classes or 1, positions, 4)
    picked = per_class[classes] if per_class.shape[0] > 1 else per_class.expand(len(classes), -1, -1)
    boxes = decode(picked, crop) + corners.repeat(1, 2)
    boxes = rescale_boxes(boxes, tuple(image.shape[-2:]), size)
    scores = posteriors.reshape(posteriors.shape[0], -1)[classes]
    ranks = torch.arange(len(classes)).repeat_interleave(rows * columns)
    return boxes.reshape(-1, 4), scores.reshape(-1), ranks


@FullFP32()
def dense_boxes(
    net: Net, scorer: Net, images: ImageList, scales: Sequence[int], top_classes: torch.Tensor, device: torch.device | str = "cpu",
    workers: int = 0,
) -> BoxPredictions:
    """Tables 9-10's candidates: `net` densely at every Q of `scales` (paper units) over each image, for its
    `top_classes` row (N, 5), scored by `scorer` (the classification net of the same configuration); in fp32."""
    device = torch.device(device)
    for model in (net.model, scorer.model):
        model.to(device, memory_format=torch.channels_last).eval()
    boxes, scores, owners, sizes = [], [], [], torch.zeros(len(images), 2, dtype=torch.long)
    for index, _, size, scaled in _loader(images, [net.profile.size(q) for q in scales], workers):
        sizes[index] = torch.tensor(size)
        for image in scaled:
            found, score, ranks = dense_candidates(net, scorer, image, size, top_classes[index], device)
            boxes.append(found)
            scores.append(score)
            owners.append(index * TOP_CLASSES + ranks)
    return BoxPredictions(
        "dense", images.image_ids(), torch.from_numpy(images.samples.labels.copy()), sizes, torch.cat(boxes), top_classes.clone(),
        torch.cat(scores), torch.cat(owners),
    )


def best_overlaps(predicted: torch.Tensor, truth: Sequence[np.ndarray]) -> torch.Tensor:
    """Each image's largest IoU between its predicted box (N, 4) and its ground-truth boxes."""
    return torch.stack([pairwise_iou(box[None], torch.from_numpy(gt)).max() for box, gt in zip(predicted, truth)])


def centre_crop_errors(predictions: BoxPredictions, truth: Sequence[np.ndarray]) -> np.ndarray:
    """Table 8's per-image error (0/1): the box for the ground-truth class misses (IoU <= 0.5) every ground-truth box."""
    return (best_overlaps(predictions.boxes, truth) <= IOU_CORRECT).numpy()


def baseline_errors(sizes: torch.Tensor, truth: Sequence[np.ndarray]) -> np.ndarray:
    """The per-image error of a box that always covers the centre half of each side of the image ((N, 2) heights, widths)."""
    boxes = torch.stack([centre_half_box(height, width) for height, width in sizes.tolist()])
    return (best_overlaps(boxes, truth) <= IOU_CORRECT).numpy()


def pooled(parts: Sequence[BoxPredictions]) -> BoxPredictions:
    """The union of several dense predictions' candidates for the same images and classes (a fusion)."""
    first = parts[0]
    for part in parts[1:]:
        if part.image_ids != first.image_ids or not torch.equal(part.classes, first.classes):
            raise ValueError("a localisation fusion pools candidates of the same images and classes only")
    return BoxPredictions(
        "dense", first.image_ids, first.labels, first.sizes, torch.cat([p.boxes for p in parts]), first.classes,
        torch.cat([p.scores for p in parts]), torch.cat([p.owner for p in parts]),
    )


def dense_errors(predictions: BoxPredictions, truth: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Tables 9-10's per-image top-1 and top-5 localisation errors (0/1): a class's prediction is its best
    merged box; an image is right at top-k when one of its first k classes is the true one and that class's
    box has IoU > 0.5 with one of the ground-truth boxes."""
    order = torch.argsort(predictions.owner, stable=True)
    owners = predictions.owner[order]
    starts = torch.searchsorted(owners, torch.arange(len(predictions.image_ids) * TOP_CLASSES + 1))
    top1 = np.ones(len(predictions.image_ids), dtype=bool)
    top5 = np.ones(len(predictions.image_ids), dtype=bool)
    for image, (classes, label) in enumerate(zip(predictions.classes.tolist(), predictions.labels.tolist())):
        if label not in classes:
            continue
        rank = classes.index(label)
        chosen = order[starts[image * TOP_CLASSES + rank] : starts[image * TOP_CLASSES + rank + 1]]
        if len(chosen) == 0:
            continue
        box, _ = best_box(predictions.boxes[chosen], predictions.scores[chosen])
        hit = bool(pairwise_iou(box[None], torch.from_numpy(truth[image])).max() > IOU_CORRECT)
        top5[image] = not hit
        top1[image] = not (hit and rank == 0)
    return top1, top5
