"""Appendix B's metrics: VOC AP (11-point and area), mAP, mean class recall."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vgg.transfer.metrics import (
    mean_average_precision,
    mean_class_recall,
    voc07_average_precision,
    voc12_average_precision,
)

# Ranked by descending score: + - + - - + (3 positives). Precision / recall after each rank:
#   1: 1/1, 1/3   2: 1/2, 1/3   3: 2/3, 2/3   4: 2/4, 2/3   5: 2/5, 2/3   6: 3/6, 3/3
# 11-point: t = 0, .1, .2, .3 -> max precision at recall >= t is 1; t = .4, .5, .6 -> 2/3; t = .7 ... 1 -> 1/2,
#   so AP07 = (4 * 1 + 3 * 2/3 + 4 * 1/2) / 11 = 8/11.
# Area: the monotone envelope is 1 up to recall 1/3, 2/3 up to 2/3, 1/2 up to 1,
#   so AP12 = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 1/2 = 13/18.
RANKED_LABELS = np.array([1, -1, 1, -1, -1, 1])
RANKED_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
SHUFFLE = np.array([3, 0, 5, 1, 4, 2])  # the input order does not matter without ties
SCORES, LABELS = RANKED_SCORES[SHUFFLE], RANKED_LABELS[SHUFFLE]


def test_average_precision_by_hand() -> None:
    assert voc07_average_precision(SCORES, LABELS) == pytest.approx(8 / 11)
    assert voc12_average_precision(SCORES, LABELS) == pytest.approx(13 / 18)


@pytest.mark.parametrize("average_precision", [voc07_average_precision, voc12_average_precision])
def test_difficult_examples_are_ignored(average_precision) -> None:
    expected = average_precision(SCORES, LABELS)
    top = average_precision(np.append(SCORES, 5.0), np.append(LABELS, 0))  # a difficult image ranked first
    middle = average_precision(np.append(SCORES, 0.75), np.append(LABELS, 0))
    assert top == pytest.approx(expected) and middle == pytest.approx(expected)
    assert average_precision(np.append(SCORES, 5.0), np.append(LABELS, -1)) < expected  # unlike a negative


@pytest.mark.parametrize("average_precision", [voc07_average_precision, voc12_average_precision])
def test_perfect_ranking_and_edge_cases(average_precision) -> None:
    assert average_precision(np.array([0.1, 3.0, -2.0, 2.0]), np.array([-1, 1, -1, 1])) == 1.0
    assert average_precision(np.array([-5.0, 1.0]), np.array([1, -1])) < 1.0
    assert math.isnan(average_precision(np.array([1.0, 2.0]), np.array([-1, 0])))  # no positive: undefined
    with pytest.raises(ValueError, match="labels"):
        average_precision(np.array([1.0]), np.array([2]))


def test_ties_keep_input_order() -> None:
    scores = np.array([1.0, 1.0])
    assert voc12_average_precision(scores, np.array([1, -1])) == 1.0  # the positive comes first
    assert voc12_average_precision(scores, np.array([-1, 1])) == pytest.approx(0.5)  # it comes second: 1/2


def test_mean_average_precision() -> None:
    scores = np.stack([SCORES, SCORES, SCORES], axis=1)
    labels = np.stack([LABELS, np.where(SCORES > 0.65, 1, -1), np.where(LABELS == 1, 0, -1)], axis=1)
    mean, per_class = mean_average_precision(scores, labels, 2012)
    assert per_class[:2] == pytest.approx([100 * 13 / 18, 100.0]) and math.isnan(per_class[2])  # no positive
    assert mean == pytest.approx((100 * 13 / 18 + 100) / 2)
    mean07, per_class07 = mean_average_precision(scores, labels, 2007)
    assert per_class07[0] == pytest.approx(100 * 8 / 11) and mean07 == pytest.approx((100 * 8 / 11 + 100) / 2)
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(scores[:, 2:], labels[:, 2:], 2007)


def test_mean_class_recall_differs_from_accuracy() -> None:
    truth = np.array([0] * 8 + [1] * 2)  # class 2 has no test image: left out
    predicted = np.array([0] * 8 + [0, 1])
    accuracy = 100 * np.mean(predicted == truth)  # 90%
    assert accuracy == pytest.approx(90.0)
    assert mean_class_recall(predicted, truth, classes=3) == pytest.approx((100 + 50) / 2)
    assert mean_class_recall(truth, truth, classes=3) == 100.0
    with pytest.raises(ValueError, match="outside"):
        mean_class_recall(truth, truth, classes=1)
