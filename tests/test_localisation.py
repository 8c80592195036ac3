"""Appendix A's localisation net: its heads and loss, the boxes that follow each training crop, the two test
protocols and their scoring, and the localisation run chain of the catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import small_net
from vgg.data.datasets import load_split
from vgg.data.transforms import CentreCropTransform, ScaleRange, TrainTransform
from vgg.localisation.annotations import ObjectBox, write_kaggle_solution
from vgg.localisation.box_data import BoxDataset, boxed_images, crop_target
from vgg.localisation.boxes import decode, encode, pairwise_iou
from vgg.localisation.protocols import (
    BoxPredictions, baseline_errors, centre_crop_boxes, centre_crop_errors, dense_candidates, dense_errors, pooled, position_windows,
)
from vgg.localisation.regression import box_sums, euclidean_loss, head_outputs, predicted_boxes
from vgg.nets.models import FEATURE_STRIDE, VGG


# ----- heads and loss -------------------------------------------------------------------
def test_scr_and_pcr_heads_have_4_and_4_x_classes_outputs_and_pcr_reads_the_true_class():
    assert head_outputs("scr", 50) == 4 and head_outputs("pcr", 50) == 200
    with pytest.raises(ValueError, match="scr, pcr"):
        head_outputs("per-class", 50)
    net = VGG("A", num_classes=head_outputs("pcr", 3), width=16, crop=32, init="glorot")
    outputs = net(torch.rand(2, 3, 32, 32))
    assert outputs.shape == (2, 12)
    picked = predicted_boxes(outputs, torch.tensor([2, 0]))
    assert torch.equal(picked[0], outputs[0, 8:12]) and torch.equal(picked[1], outputs[1, 0:4])
    single = torch.rand(2, 4)
    assert torch.equal(predicted_boxes(single, torch.tensor([1, 1])), single)  # SCR: one box whatever the class


def test_the_euclidean_loss_is_half_the_squared_distance_over_the_crops_with_a_target():
    predicted = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.2, 0.2, 0.2, 0.2]], requires_grad=True)
    targets = torch.tensor([[0.5, 0.5, 0.5, 1.0], [0.1, 0.2, 0.0, 0.2], [float("nan")] * 4])
    loss = euclidean_loss(predicted, targets)
    assert loss.item() == pytest.approx((0.5 * 0.25 + 0.5 * (0.01 + 0.04 + 0.04)) / 2)  # the NaN row is left out
    loss.backward()
    assert torch.isfinite(predicted.grad).all() and not predicted.grad[2].any()
    none = euclidean_loss(predicted, torch.full((3, 4), float("nan")))
    assert none.item() == 0.0


def test_box_sums_count_crops_with_a_target_and_boxes_right_at_iou_above_half():
    targets = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4], [float("nan")] * 4])
    predicted = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.4, 0.4]])
    sums = box_sums(torch.tensor(2.0), predicted, targets)
    assert sums.tolist() == [4.0, 1.0, 1.0, 2.0, 0.0]


# ----- boxes through the training and validation transforms -------------------------------
def rectangle_dataset(root: Path, rectangles: list[tuple[int, int, int, int, int, int]]) -> Path:
    """A class-folder dataset of black PNGs, each with one white rectangle (height, width, x0, y0, x1, y1
    exclusive), and its boxes in Kaggle's CSV format; train and val alike."""
    boxes = {}
    for split in ("train", "val"):
        folder = root / split / "n01"
        folder.mkdir(parents=True)
        for index, (height, width, x0, y0, x1, y1) in enumerate(rectangles):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[y0:y1, x0:x1] = 255
            Image.fromarray(pixels).save(folder / f"n01_{index}.png")
            boxes[f"n01_{index}"] = (ObjectBox("n01", (x0, y0, x1, y1)),)
        (root / split / "n02").mkdir()
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(root / split / "n02" / "n02_0.png")  # no box: skipped
    for split in ("train", "val"):
        write_kaggle_solution(root / f"LOC_{split}_solution.csv", boxes)
    return root


def bright_box(crop: torch.Tensor) -> torch.Tensor | None:
    """The box of a crop's bright pixels (continuous coordinates), None without any."""
    rows, columns = torch.nonzero(crop.float().mean(dim=0) > 127, as_tuple=True)
    if len(rows) == 0:
        return None
    return torch.tensor([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1], dtype=torch.float32)


@pytest.mark.parametrize("scale", ["96", "80:120"])
def test_each_training_crop_carries_the_box_of_the_object_it_shows(tmp_path, scale):
    rectangles = [(90, 130, 40, 20, 90, 70), (120, 100, 10, 50, 60, 110), (70, 70, 20, 20, 50, 45)]
    root = rectangle_dataset(tmp_path / "data", rectangles)
    images, boxes = boxed_images(load_split(root, "train"), root, log=lambda message: None)
    assert len(images) == 3  # the image without a box is skipped
    crop = 64
    dataset = BoxDataset(images, boxes, TrainTransform(ScaleRange.parse(scale), crop, colour_shift_std=0.0), crop, seed=1, cache_decoded=True)
    checked = 0
    for epoch in range(6):
        for index in range(len(images)):
            pixels, _, _, _, target = dataset[(epoch, index)]
            drawn = bright_box(pixels)
            if drawn is None:
                assert not torch.isfinite(target).all()
                continue
            box = decode(target, crop)
            inside = box.clamp(0, crop)  # the target is the whole object's box; the crop shows its part inside
            assert torch.allclose(inside, drawn, atol=1.5), (epoch, index, inside, drawn)
            checked += 1
    assert checked >= 12


def test_a_validation_crop_carries_the_box_of_its_centre_crop(tmp_path):
    root = rectangle_dataset(tmp_path / "data", [(90, 130, 50, 30, 80, 60)])
    images, boxes = boxed_images(load_split(root, "val"), root, log=lambda message: None)
    dataset = BoxDataset(images, boxes, CentreCropTransform(96, 64), 64)
    pixels, _, _, _, target = dataset[0]
    assert torch.allclose(decode(target, 64), bright_box(pixels), atol=1.5)


def test_the_crop_target_is_the_box_most_inside_the_crop_whole_and_none_when_all_are_cut_away():
    boxes = torch.tensor([[-20.0, 10.0, 10.0, 30.0], [30.0, 30.0, 90.0, 50.0]])  # the second has more area inside 64 x 64
    assert torch.allclose(crop_target(boxes, 64), encode(boxes[1], 64))
    assert not torch.isfinite(crop_target(torch.tensor([[70.0, 70.0, 90.0, 90.0]]), 64)).any()


# ----- the protocols and their scoring ----------------------------------------------------
def predictions(boxes: torch.Tensor, labels: list[int]) -> BoxPredictions:
    return BoxPredictions("centre-crop", [f"i{k}" for k in range(len(labels))], torch.tensor(labels), torch.tensor([[100, 100]] * len(labels)), boxes)


def shifted_to_iou(box: torch.Tensor, target: float) -> torch.Tensor:
    """`box` moved right until its IoU with itself is `target`: overlap w - d over union w + d."""
    width = float(box[2] - box[0])
    shift = width * (1 - target) / (1 + target)
    return box + torch.tensor([shift, 0.0, shift, 0.0])


def test_a_regressor_that_predicts_the_ground_truth_scores_0_and_one_at_iou_04_scores_100_percent():
    truth = [np.array([[10.0, 20.0, 50.0, 60.0]], np.float32), np.array([[0.0, 0.0, 30.0, 30.0], [40.0, 40.0, 90.0, 80.0]], np.float32)]
    exact = torch.stack([torch.from_numpy(truth[0][0]), torch.from_numpy(truth[1][1])])
    assert centre_crop_errors(predictions(exact, [0, 0]), truth).tolist() == [False, False]
    shifted = torch.stack([shifted_to_iou(box, 0.4) for box in exact])
    assert pairwise_iou(shifted[:1], exact[:1]).item() == pytest.approx(0.4)
    assert centre_crop_errors(predictions(shifted, [0, 0]), truth).tolist() == [True, True]


def test_the_centre_half_baseline_is_right_only_for_centred_half_size_objects():
    truth = [np.array([[25.0, 25.0, 75.0, 75.0]], np.float32), np.array([[0.0, 0.0, 20.0, 20.0]], np.float32)]
    assert baseline_errors(torch.tensor([[100, 100], [100, 100]]), truth).tolist() == [False, True]


def dense(boxes: list[list[float]], scores: list[float], owner: list[int], classes: list[list[int]], labels: list[int]) -> BoxPredictions:
    count = len(labels)
    return BoxPredictions("dense", [f"i{k}" for k in range(count)], torch.tensor(labels), torch.tensor([[100, 100]] * count),
                          torch.tensor(boxes), torch.tensor(classes), torch.tensor(scores), torch.tensor(owner))


def test_dense_scoring_merges_each_class_candidates_and_needs_the_true_class_and_its_box():
    truth = [np.array([[10.0, 10.0, 50.0, 50.0]], np.float32)] * 3
    near, far = [10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 95.0, 95.0]
    classes = [[3, 1, 2, 4, 0]] * 3
    # image 0: its class (1) is ranked second, and its two candidates near the object outweigh one far one;
    # image 1: the far candidate scores more than the near ones together; image 2: its class (7) is not in its top 5
    found = dense(
        [near, [11.0, 10.0, 51.0, 50.0], far, near, [10.0, 11.0, 50.0, 51.0], far, near],
        [0.4, 0.4, 0.6, 0.3, 0.3, 0.9, 1.0],
        [0 * 5 + 1, 0 * 5 + 1, 0 * 5 + 1, 1 * 5 + 1, 1 * 5 + 1, 1 * 5 + 1, 2 * 5 + 0],
        classes, [1, 1, 7],
    )
    top1, top5 = dense_errors(found, truth)
    assert top5.tolist() == [False, True, True]
    assert top1.tolist() == [True, True, True]  # right at top-5 only: the true class ranks second
    first = dense([near], [0.5], [0], [[1, 2, 3, 4, 5]], [1])
    assert dense_errors(first, truth[:1])[0].tolist() == [False]


def test_a_fusion_pools_the_candidates_of_its_members():
    truth = [np.array([[10.0, 10.0, 50.0, 50.0]], np.float32)]
    one = dense([[60.0, 60.0, 95.0, 95.0]], [0.6], [0], [[0, 1, 2, 3, 4]], [0])
    other = dense([[10.0, 10.0, 50.0, 50.0], [11.0, 10.0, 51.0, 50.0]], [0.4, 0.4], [0, 0], [[0, 1, 2, 3, 4]], [0])
    assert dense_errors(one, truth)[1].tolist() == [True]
    assert dense_errors(pooled([one, other]), truth)[1].tolist() == [False]  # 0.8 of support near the object beats 0.6


def test_dense_boxes_are_each_position_outputs_placed_on_the_window_it_sees():
    classes = 3
    net = small_net(classes=head_outputs("pcr", classes), crop=64)
    scorer = small_net(classes=classes, crop=64)
    net.model.eval(), scorer.model.eval()  # as dense_boxes puts them (no dropout)
    image = torch.randint(0, 256, (3, 100, 140), dtype=torch.uint8)
    chosen = torch.tensor([2, 0, 1, 2, 0])
    boxes, scores, ranks = dense_candidates(net, scorer, image, (50, 70), chosen, torch.device("cpu"))
    # 100 x 140 is read in its central 96 x 128 (pooled_region): windows of 64 from (x, y) = (6, 2), stride 32
    corners = position_windows(100, 140, 2, 3, 64)
    assert corners[0, 0].tolist() == [6.0, 2.0] and corners[1, 2].tolist() == [70.0, 34.0]
    positions = 2 * 3
    assert boxes.shape == (5 * positions, 4) and ranks.tolist() == [k for k in range(5) for _ in range(positions)]
    with torch.no_grad():
        inputs = net.normalization(image[None])
        outputs, posteriors = net.model.score_map(inputs)[0], torch.softmax(scorer.model.score_map(inputs)[0], dim=0)
    for rank, cls in enumerate(chosen.tolist()):
        for row in range(2):
            for column in range(3):
                x, y = corners[row, column].tolist()
                in_window = decode(outputs[4 * cls : 4 * cls + 4, row, column], 64) + torch.tensor([x, y, x, y])
                expected = in_window * 0.5  # the image was rescaled from 50 x 70: boxes go back to its pixels
                index = rank * positions + row * 3 + column
                assert torch.allclose(boxes[index], expected, atol=1e-3)
                assert scores[index].item() == pytest.approx(posteriors[cls, row, column].item(), abs=1e-5)


def test_a_crop_size_image_has_one_position_whose_box_is_the_crop_prediction():
    net, scorer = small_net(classes=head_outputs("scr", 2), crop=64), small_net(classes=2, crop=64)
    net.model.eval(), scorer.model.eval()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    boxes, _, _ = dense_candidates(net, scorer, image, (64, 64), torch.tensor([1, 0, 0, 0, 0]), torch.device("cpu"))
    with torch.no_grad():
        expected = decode(net.model(net.normalization(image[None]))[0], 64)
    assert boxes.shape == (5, 4) and torch.allclose(boxes, expected.expand(5, 4), atol=1e-4)  # SCR: one box for every class


def test_centre_crop_boxes_map_the_crop_prediction_back_into_the_image(tmp_path):
    root = rectangle_dataset(tmp_path / "data", [(90, 130, 50, 30, 80, 60)])
    images, _ = boxed_images(load_split(root, "val"), root, log=lambda message: None)
    net = small_net(classes=head_outputs("scr", 2), crop=64)
    with torch.no_grad():  # an SCR head that always predicts the whole crop
        net.model.head.weight.zero_()
        net.model.head.bias.copy_(torch.tensor([0.5, 0.5, 1.0, 1.0]))
    found = centre_crop_boxes(net, images, 96)
    # 90 x 130 rescaled to 96 x 139 (shorter side 96): the central 64 crop is x 37.5-101.5, y 16-80 there
    scale = 90 / 96
    expected = torch.tensor([(139 - 64) // 2 * (130 / 139), 16 * scale, ((139 - 64) // 2 + 64) * (130 / 139), 80 * scale])
    assert torch.allclose(found.boxes[0], expected, atol=1e-3)
    assert found.sizes[0].tolist() == [90, 130]
