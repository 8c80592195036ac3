"""Box geometry of Appendix A: IoU, annotation conventions, regression targets, and the box
transforms checked against what the image transforms of `vgg.data.transforms` do to pixels."""

from __future__ import annotations

import pytest
import torch

from vgg.data.transforms import centre_crop, rescale, rescaled_size, resize
from vgg.localisation.boxes import (
    area,
    centre_crop_boxes,
    centre_half_box,
    clip_boxes,
    crop_boxes,
    decode,
    encode,
    flip_boxes,
    from_inclusive,
    iou,
    pairwise_iou,
    rescale_boxes,
    to_inclusive,
    uncrop_boxes,
)

# --- IoU -------------------------------------------------------------------------------------------


def box(*coordinates: float) -> torch.Tensor:
    return torch.tensor(coordinates, dtype=torch.float64)


def test_iou_of_identical_disjoint_and_touching_boxes():
    a = box(10, 20, 50, 60)
    assert float(iou(a, a)) == 1.0
    assert float(iou(a, box(60, 70, 80, 90))) == 0.0
    assert float(iou(a, box(50, 20, 90, 60))) == 0.0  # shares the edge x = 50, no pixel in common
    assert float(iou(a, box(10, 60, 50, 90))) == 0.0


def test_iou_of_nested_boxes_is_their_area_ratio():
    outer, inner = box(0, 0, 100, 50), box(10, 10, 30, 40)
    assert float(iou(outer, inner)) == pytest.approx(20 * 30 / (100 * 50))
    assert float(iou(inner, outer)) == pytest.approx(20 * 30 / (100 * 50))


def test_iou_of_partial_overlap_by_hand():
    # a: 10 x 10 = 100; b: 10 x 20 = 200; overlap x in [5, 10), y in [0, 10): 50; union 250.
    assert float(iou(box(0, 0, 10, 10), box(5, 0, 15, 20))) == pytest.approx(50 / 250)


@pytest.mark.parametrize(
    "degenerate",
    [box(5, 5, 5, 9), box(5, 5, 9, 5), box(9, 9, 5, 5), box(9, 5, 5, 9), box(5, 5, 5, 5)],
    ids=["zero-width", "zero-height", "inverted", "inverted-x", "point"],
)
def test_degenerate_boxes_have_no_area_and_zero_iou(degenerate):
    assert float(area(degenerate)) == 0.0
    for other in (box(0, 0, 20, 20), degenerate, box(5, 5, 5, 9), box(9, 9, 5, 5)):
        value = iou(degenerate, other)
        assert not torch.isnan(value) and float(value) == 0.0
        assert float(iou(other, degenerate)) == 0.0


def test_pairwise_iou_matches_elementwise_and_is_symmetric():
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(7, 2, generator=generator) * 50
    a = torch.cat([corners, corners + torch.rand(7, 2, generator=generator) * 40], dim=1)
    corners = torch.rand(5, 2, generator=generator) * 50
    b = torch.cat([corners, corners + torch.rand(5, 2, generator=generator) * 40], dim=1)
    b[0] = torch.tensor([3.0, 3.0, 3.0, 9.0])  # a degenerate one among them
    matrix = pairwise_iou(a, b)
    assert matrix.shape == (7, 5)
    for i in range(7):
        for j in range(5):
            assert float(matrix[i, j]) == pytest.approx(float(iou(a[i], b[j])))
    assert torch.allclose(pairwise_iou(b, a), matrix.T)
    assert (matrix[:, 0] == 0).all() and (matrix[:, 1:] > 0).any() and (matrix <= 1).all()


def test_iou_broadcasts_over_leading_dims():
    a = box(0, 0, 10, 10).expand(3, 2, 4)
    b = torch.stack([box(0, 0, 10, 10), box(5, 0, 15, 10)])
    assert torch.allclose(iou(a, b), torch.tensor([1.0, 1 / 3], dtype=torch.float64).expand(3, 2))


def test_a_prediction_equal_to_the_ground_truth_is_correct_and_one_at_iou_0_4_is_not():
    truth = box(20, 30, 120, 80)  # width 100
    assert float(iou(truth, truth)) == 1.0
    # Shifting sideways by d: IoU = (w - d) / (w + d) = 0.4  <=>  d = 0.6 w / 1.4.
    shift = 0.6 * 100 / 1.4
    shifted = truth + box(shift, 0, shift, 0)
    assert float(iou(truth, shifted)) == pytest.approx(0.4, abs=1e-12)
    assert not float(iou(truth, shifted)) > 0.5  # the paper's rule: correct only if IoU > 0.5


# --- Conventions and regression targets ----------------------------------------------------------------


def test_inclusive_annotation_round_trip():
    inclusive = torch.tensor([[0, 0, 0, 0], [3, 7, 10, 20], [12, 5, 499, 374]])
    continuous = from_inclusive(inclusive)
    assert continuous.is_floating_point()
    assert continuous.tolist() == [[0, 0, 1, 1], [3, 7, 11, 21], [12, 5, 500, 375]]
    assert float(area(continuous[0])) == 1.0  # a one-pixel annotation covers one pixel
    assert torch.equal(to_inclusive(continuous), inclusive)
    assert to_inclusive(continuous).dtype == torch.int64
    assert torch.equal(to_inclusive(continuous + 0.3), inclusive)  # rounded


def test_encode_decode_round_trip_and_the_full_window():
    assert encode(box(0, 0, 224, 224), 224).tolist() == [0.5, 0.5, 1.0, 1.0]
    assert encode(box(0, 0, 112, 56), 224).tolist() == [0.25, 0.125, 0.5, 0.25]
    boxes = torch.tensor([[10.0, 20.0, 100.0, 200.0], [-5.0, 3.0, 40.0, 230.0]])
    assert torch.allclose(decode(encode(boxes, 224), 224), boxes, atol=1e-5)
    assert torch.allclose(decode(encode(boxes, 64), 64), boxes, atol=1e-5)
    # The same box relative to a window scaled with it has the same targets at any crop size.
    assert torch.allclose(encode(boxes, 224), encode(boxes * 2, 448))


def test_centre_half_box_and_clip():
    assert centre_half_box(100, 200).tolist() == [50.0, 25.0, 150.0, 75.0]
    assert clip_boxes(box(-5, 10, 130, 95), 90, 130).tolist() == [0.0, 10.0, 130.0, 90.0]
    assert clip_boxes(box(-5, -10, 140, 100), 90, 130).tolist() == [0.0, 0.0, 130.0, 90.0]


# --- Transforms against pixels -----------------------------------------------------------------------

HEIGHT, WIDTH = 90, 130
RECTANGLE_INCLUSIVE = (31, 17, 96, 58)  # xmin, ymin, xmax, ymax: white pixels on black


def rectangle_image() -> torch.Tensor:
    xmin, ymin, xmax, ymax = RECTANGLE_INCLUSIVE
    image = torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8)
    image[:, ymin : ymax + 1, xmin : xmax + 1] = 255
    return image


def bright_box(image: torch.Tensor) -> torch.Tensor:
    """The continuous box of the image's bright pixels (> 127 in every channel)."""
    ys, xs = torch.nonzero((image > 127).all(dim=0), as_tuple=True)
    return from_inclusive(torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]))


def assert_close_box(predicted: torch.Tensor, image: torch.Tensor, tolerance: float = 0.75) -> None:
    """Within `tolerance` pixels of the bright pixels: a pixel is bright when the box covers more than half of it
    (up to antialiasing), so an exact box is within half a pixel."""
    error = (predicted.double() - bright_box(image).double()).abs().max()
    assert error <= tolerance, f"box {predicted.tolist()} vs pixels {bright_box(image).tolist()}"


def test_the_rectangle_box_is_read_back_from_its_pixels():
    assert bright_box(rectangle_image()).tolist() == [31.0, 17.0, 97.0, 59.0]


def test_rescale_crop_and_flip_of_boxes_follow_the_pixels():
    image, boxes = rectangle_image(), from_inclusive(torch.tensor(RECTANGLE_INCLUSIVE))
    rescaled = rescale(image, 64)
    assert tuple(rescaled.shape[-2:]) == rescaled_size(HEIGHT, WIDTH, 64) == (64, 92)
    boxes = rescale_boxes(boxes, (HEIGHT, WIDTH), (64, 92))
    assert_close_box(boxes, rescaled)

    # A training crop with a jittered S: the square region (top, left, side) resized to crop x crop.
    top, left, side, crop = 4, 14, 56, 40
    cropped = resize(rescaled[:, top : top + side, left : left + side], (crop, crop))
    boxes = crop_boxes(boxes, top, left, side, crop)
    assert_close_box(boxes, cropped)

    flipped = cropped.flip(-1)
    boxes = flip_boxes(boxes, crop)
    assert_close_box(boxes, flipped)
    assert bright_box(flipped)[0] != bright_box(cropped)[0]  # the rectangle is off-centre: the flip moves it


def test_rescale_boxes_maps_the_whole_image_onto_the_whole_rescaled_image():
    # The rounded size makes the x and y factors differ (92 / 130 vs 64 / 90): each axis has its own.
    assert rescale_boxes(box(0, 0, WIDTH, HEIGHT), (HEIGHT, WIDTH), (64, 92)).tolist() == [0.0, 0.0, 92.0, 64.0]
    image, boxes = rectangle_image(), from_inclusive(torch.tensor(RECTANGLE_INCLUSIVE))
    assert_close_box(rescale_boxes(boxes, (HEIGHT, WIDTH), (45, 200)), resize(image, (45, 200)))


def test_an_upscaling_crop_follows_the_pixels():
    image, boxes = rectangle_image(), from_inclusive(torch.tensor(RECTANGLE_INCLUSIVE))
    top, left, side, crop = 10, 25, 40, 100
    cropped = resize(image[:, top : top + side, left : left + side], (crop, crop))
    assert_close_box(clip_boxes(crop_boxes(boxes, top, left, side, crop), crop, crop), cropped)


def test_centre_crop_boxes_follow_the_pixels():
    image, boxes = rectangle_image(), from_inclusive(torch.tensor(RECTANGLE_INCLUSIVE))
    cropped = centre_crop(image, 64)
    assert torch.equal(clip_boxes(centre_crop_boxes(boxes, HEIGHT, WIDTH, 64), 64, 64), bright_box(cropped))


def test_uncrop_inverts_crop():
    boxes = torch.tensor([[10.0, 20.0, 100.0, 200.0], [-5.0, 3.0, 40.0, 230.0]], dtype=torch.float64)
    for top, left, side, out in ((0, 0, 224, 224), (13, 40, 180, 224), (7, 3, 300, 64)):
        assert torch.allclose(uncrop_boxes(crop_boxes(boxes, top, left, side, out), top, left, side, out), boxes)
        assert torch.allclose(crop_boxes(uncrop_boxes(boxes, top, left, side, out), top, left, side, out), boxes)
    # The crop's own window maps back to the region it came from.
    assert uncrop_boxes(box(0, 0, 64, 64), 7, 3, 300, 64).tolist() == [3.0, 7.0, 303.0, 307.0]


def test_flip_twice_is_the_identity_and_swaps_the_sides():
    b = box(10, 20, 30, 60)
    assert flip_boxes(b, 100).tolist() == [70.0, 20.0, 90.0, 60.0]
    assert torch.equal(flip_boxes(flip_boxes(b, 100), 100), b)
