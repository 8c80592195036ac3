"""Appendix B's metrics: VOC average precision (the devkit's two versions) and Caltech's mean class recall.

Average precision follows the VOC devkit's `VOCevalcls.m` / `VOCevalaction.m`: the images are ranked by
descending score, each positive (label 1) is a true positive, each negative (-1) a false positive, and
"difficult" images (0) count as neither, which is the same as removing them from the ranking (done here).
Recall is over the positives; precision at each rank is tp / (tp + fp).

- VOC-2007 (`voc07_average_precision`): 11-point interpolated AP, the mean over t = 0, 0.1, ..., 1 of the
  highest precision at a recall >= t (0 where no rank reaches recall t).
- VOC-2010 and later (`voc12_average_precision`, the devkit's `VOCap`): the area under the precision-recall
  curve after making precision monotone (each point takes the highest precision at any higher recall).

Ties: the ranking is a stable sort by descending score, so images of equal score keep their input order,
as MATLAB's `sort(-confidence)` in the devkit does; with ties the AP therefore depends on the input order.
"""

from __future__ import annotations

import numpy as np

VOC07_RECALL_POINTS = np.linspace(0.0, 1.0, 11)
"""The 11 recall levels of the VOC-2007 AP: 0, 0.1, ..., 1."""


def _precision_recall(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Precision and recall at each rank of the non-difficult images (None when there is no positive)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be two vectors of one length")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if not np.isin(labels, (-1, 0, 1)).all():
        raise ValueError(f"labels must be 1 (present), -1 (absent) or 0 (difficult), got {np.unique(labels)}")
    kept = labels != 0
    scores, labels = scores[kept], labels[kept]
    positives = int((labels > 0).sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    true_positives = np.cumsum(labels[order] > 0)
    ranks = np.arange(1, len(order) + 1)
    return true_positives / ranks, true_positives / positives


def voc07_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC-2007's 11-point interpolated AP (a fraction in [0, 1]) of one class: `scores` (N,) ranked against
    `labels` (N,) in {1, -1, 0}, 0 (difficult) ignored. NaN when no image is positive (AP is undefined)."""
    curve = _precision_recall(scores, labels)
    if curve is None:
        return float("nan")
    precision, recall = curve
    points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in VOC07_RECALL_POINTS]
    return float(np.mean(points))


def voc12_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """VOC-2010+ AP (a fraction in [0, 1]) of one class: the area under the precision-recall curve with
    monotone precision (the devkit's `VOCap`); same inputs and NaN rule as `voc07_average_precision`."""
    curve = _precision_recall(scores, labels)
    if curve is None:
        return float("nan")
    precision, recall = curve
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope: max over higher recalls
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def average_precision(scores: np.ndarray, labels: np.ndarray, year: int) -> float:
    """The AP of the VOC devkit of `year`: 11-point before 2010, area from 2010 on (the devkit's switch)."""
    return voc07_average_precision(scores, labels) if year < 2010 else voc12_average_precision(scores, labels)


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, year: int) -> tuple[float, np.ndarray]:
    """mAP in % over the classes of (N, C) `scores` and `labels` ({1, -1, 0}), and each class's AP in % (C,).

    A class without a positive image has AP NaN and is left out of the mean (as `mean_class_recall` leaves out
    classes without test images); with no positive in any class this is an error.
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be two (N, C) arrays of one shape")
    per_class = 100.0 * np.array([average_precision(scores[:, c], labels[:, c], year) for c in range(scores.shape[1])])
    if np.isnan(per_class).all():
        raise ValueError("no class has a positive image: the mean average precision is undefined")
    return float(np.nanmean(per_class)), per_class


def mean_class_recall(predicted: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """Caltech's metric in %: the mean over classes of the fraction of that class's test images predicted as
    it (`predicted`, `truth`: (N,) class indices in [0, classes)); classes without test images are left out."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.ndim != 1 or predicted.shape != truth.shape:
        raise ValueError(f"predicted {predicted.shape} and truth {truth.shape} must be two vectors of one length")
    if len(truth) == 0:
        raise ValueError("no test images: the mean class recall is undefined")
    if truth.min() < 0 or truth.max() >= classes:
        raise ValueError(f"truth holds class indices outside [0, {classes})")
    images = np.bincount(truth, minlength=classes)
    correct = np.bincount(truth[predicted == truth], minlength=classes)
    present = images > 0
    return float(100.0 * np.mean(correct[present] / images[present]))
