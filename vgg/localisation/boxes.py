"""Box geometry for Appendix A (localisation), on float torch tensors of shape (..., 4).

Conventions:

- A box is (x0, y0, x1, y1) in continuous pixel coordinates: pixel i covers [i, i + 1), so a box
  covering pixels 3..7 of a row spans x in [3, 8) and has width 5. Every function broadcasts over
  the leading dims.
- Annotation files (ILSVRC XML, Kaggle CSV) give inclusive pixel indices xmin..xmax:
  `from_inclusive` maps them to (xmin, ymin, xmax + 1, ymax + 1), `to_inclusive` back (rounded to
  ints, for writing files).
- A degenerate box (zero or negative width or height) has area 0 and IoU 0 with any box, itself
  and other degenerate boxes included: never NaN.
- The transforms follow `vgg.data.transforms` exactly: `rescale` (x scaled by to_w / from_w, y by
  to_h / from_h: the two factors differ slightly because the sizes are rounded), a training crop
  (`CropPlan`: the square region top/left/side of the prepared image resized to crop x crop, then
  an optional horizontal flip) and `centre_crop` (a crop x crop slice, no resize).
- Regression targets (`encode`, `decode`) are (cx, cy, w, h) in the window's coordinates divided
  by the window's side, so a box filling the window is (0.5, 0.5, 1, 1). The paper does not say
  how its targets are parametrised; we normalise by the crop so that the Euclidean loss does not
  depend on the profile's crop size.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _float(boxes: Tensor) -> Tensor:
    return boxes if boxes.is_floating_point() else boxes.to(torch.get_default_dtype())


def _check(boxes: Tensor) -> None:
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")


def from_inclusive(boxes: Tensor) -> Tensor:
    """Inclusive pixel indices (xmin, ymin, xmax, ymax) -> continuous (xmin, ymin, xmax + 1, ymax + 1)."""
    _check(boxes)
    boxes = _float(boxes)
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def to_inclusive(boxes: Tensor) -> Tensor:
    """Continuous boxes -> inclusive int64 pixel indices (xmin, ymin, xmax, ymax): `from_inclusive`'s inverse."""
    _check(boxes)
    boxes = _float(boxes)
    return (boxes - boxes.new_tensor([0.0, 0.0, 1.0, 1.0])).round().long()


def widths_heights(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Width and height of each box, clamped at 0 (degenerate boxes have none)."""
    _check(boxes)
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0), (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def area(boxes: Tensor) -> Tensor:
    """Area of each box (shape (...)); 0 for a degenerate box."""
    width, height = widths_heights(boxes)
    return width * height


def centres(boxes: Tensor) -> Tensor:
    """Centre (cx, cy) of each box, shape (..., 2)."""
    _check(boxes)
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def intersection(a: Tensor, b: Tensor) -> Tensor:
    """Area of the intersection of a and b, elementwise with broadcasting."""
    _check(a)
    _check(b)
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    sides = (bottom_right - top_left).clamp(min=0)
    return sides[..., 0] * sides[..., 1]


def iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of a and b, elementwise with broadcasting; 0 where the union is empty."""
    a, b = _float(a), _float(b)
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    # A degenerate box has no intersection with anything, so union > 0 unless both are degenerate.
    safe_union = torch.where(union > 0, union, torch.ones_like(union))
    return torch.where(union > 0, inter / safe_union, torch.zeros_like(union))


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box of a (N, 4) with every box of b (M, 4): shape (N, M)."""
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"pairwise_iou takes (N, 4) and (M, 4) boxes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return iou(a[:, None, :], b[None, :, :])


def rescale_boxes(boxes: Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Tensor:
    """Boxes of an image of size from_hw in the same image resized to to_hw (`vgg.data.transforms.rescale`)."""
    _check(boxes)
    boxes = _float(boxes)
    (from_h, from_w), (to_h, to_w) = from_hw, to_hw
    sx, sy = to_w / from_w, to_h / from_h
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def crop_boxes(boxes: Tensor, top: int, left: int, side: int, out: int) -> Tensor:
    """Boxes in the coordinates of the square region [left, left + side) x [top, top + side) resized
    to out x out (a `CropPlan`'s region and crop; `centre_crop` is side = out = crop). Not clipped."""
    _check(boxes)
    boxes = _float(boxes)
    return (boxes - boxes.new_tensor([left, top, left, top])) * (out / side)


def uncrop_boxes(boxes: Tensor, top: int, left: int, side: int, out: int) -> Tensor:
    """Inverse of `crop_boxes`: boxes predicted on the out x out crop, back in the image that region came from."""
    _check(boxes)
    boxes = _float(boxes)
    return boxes * (side / out) + boxes.new_tensor([left, top, left, top])


def centre_crop_boxes(boxes: Tensor, height: int, width: int, crop: int) -> Tensor:
    """Boxes of a height x width image in its `vgg.data.transforms.centre_crop` (same rounding of the offsets)."""
    top, left = (height - crop) // 2, (width - crop) // 2
    return crop_boxes(boxes, top, left, crop, crop)


def flip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Boxes in the horizontally flipped image of the given width (`image.flip(-1)`): x -> width - x."""
    _check(boxes)
    boxes = _float(boxes)
    return torch.stack([width - boxes[..., 2], boxes[..., 1], width - boxes[..., 0], boxes[..., 3]], dim=-1)


def clip_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """Boxes clipped to the image [0, width] x [0, height]."""
    _check(boxes)
    boxes = _float(boxes)
    return torch.stack(
        [
            boxes[..., 0].clamp(0, width),
            boxes[..., 1].clamp(0, height),
            boxes[..., 2].clamp(0, width),
            boxes[..., 3].clamp(0, height),
        ],
        dim=-1,
    )


def encode(boxes: Tensor, side: int | float) -> Tensor:
    """Regression targets of boxes in a side x side window: (cx, cy, w, h) / side (a full box is (0.5, 0.5, 1, 1))."""
    _check(boxes)
    boxes = _float(boxes)
    size = boxes[..., 2:] - boxes[..., :2]
    return torch.cat([centres(boxes), size], dim=-1) / side


def decode(targets: Tensor, side: int | float) -> Tensor:
    """Inverse of `encode`: (cx, cy, w, h) / side -> (x0, y0, x1, y1) in the side x side window."""
    _check(targets)
    targets = _float(targets) * side
    centre, half = targets[..., :2], targets[..., 2:] / 2
    return torch.cat([centre - half, centre + half], dim=-1)


def centre_half_box(height: int, width: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The baseline box covering the centre half of each side: x in [W/4, 3W/4], y in [H/4, 3H/4]."""
    return torch.tensor([width / 4, height / 4, 3 * width / 4, 3 * height / 4], dtype=dtype)
