"""Appendix B's two protocols on fixed descriptors: a linear SVM (`vgg.transfer.svm`) with C chosen on held-out
training images, refitted on all of them, scored on the test images, with a 95% bootstrap interval over them.

- Multi-label (VOC): one SVM per class; C chosen on 20% of the training images held out (seeded; our choice:
  the devkit's train / val split serves the same purpose where a set has one); mAP on the test images.
  Where several items share an image (VOC actions: the persons of one image), `groups` names each item's
  image: the held-out part and the bootstrap take whole images, so that no image is on both sides of the C
  choice (its persons share its whole-image descriptor) and the interval covers the images drawn.
- Single-label (Caltech): per random split, C chosen on the split's held-out 20%; mean class recall on its
  test images; reported as the mean over the splits +- their standard deviation, as the paper does.

Intervals are percentile bootstrap intervals shifted by the bootstrap's bias (the resamples' median minus the
value), so that they hold the value: the AP of a resample, which ranks an item's copies together, is biased
upwards, most where a ranking is nearly random (about 0.6 points at chance on 800 items).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vgg.evaluation.statistics import RESAMPLES, RESAMPLING_SEED
from vgg.transfer.datasets import CaltechSplit
from vgg.transfer.metrics import mean_average_precision, mean_class_recall
from vgg.transfer.resampling import resample_counts, resampled_mean_average_precision, resampled_mean_class_recall
from vgg.transfer.svm import LinearClassifier, choose_c, fit_multilabel, fit_single_label

HELD_OUT = 0.2


@dataclass(frozen=True)
class TransferResult:
    """A protocol's score (%), its 95% interval over the test images, the spread over splits (single-label) and the C(s) chosen."""

    value: float
    low: float
    high: float
    chosen_c: tuple[float, ...]
    std: float | None = None
    per_split: tuple[float, ...] = field(default_factory=tuple)
    outputs: Outputs | None = field(default=None, repr=False, compare=False)  # what `paired_difference` resamples


@dataclass(frozen=True)
class Outputs:
    """A protocol's test outputs: `metric(counts)` recomputes its score (%) for a chunk of bootstrap resamples, given
    for each split (one for multi-label sets) the (resamples, `sizes[k]`) counts of each test item drawn (`resample_counts`)."""

    sizes: tuple[int, ...]
    metric: Callable[[list[np.ndarray]], np.ndarray]


def _resampled(outputs: Sequence[Outputs], resamples: int) -> list[np.ndarray]:
    """Each output's score on the same bootstrap resamples of the test items; resamples where any is undefined (a
    resample without a positive of any class) are left out."""
    rng = np.random.default_rng(RESAMPLING_SEED)
    values: list[list[np.ndarray]] = [[] for _ in outputs]
    for counts in resample_counts(rng, outputs[0].sizes, resamples):
        for found, output in zip(values, outputs):
            found.append(output.metric(counts))
    joined = [np.concatenate(found) for found in values]
    defined = np.logical_and.reduce([~np.isnan(v) for v in joined])
    return [v[defined] for v in joined]


def paired_difference(entry: TransferResult, reference: TransferResult, resamples: int = RESAMPLES) -> tuple[float, float, float]:
    """entry - reference (points) and its 95% paired bootstrap interval: both scored on the same resampled test
    items (per split for single-label sets). The two must come from the same test images."""
    if entry.outputs is None or reference.outputs is None or entry.outputs.sizes != reference.outputs.sizes:
        raise ValueError("a paired difference needs two results on the same test images")
    mine, theirs = _resampled([entry.outputs, reference.outputs], resamples)
    difference = entry.value - reference.value
    return difference, *_interval(mine - theirs, difference)


def _interval(samples: np.ndarray, value: float) -> tuple[float, float]:
    """The 95% percentile interval of `samples`, shifted by their bias (median - `value`)."""
    low, middle, high = np.percentile(samples, [2.5, 50, 97.5])
    return float(low - (middle - value)), float(high - (middle - value))


def held_out_rows(count: int, seed: int = 0, share: float = HELD_OUT, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of `count` training rows into (fit, held out): `share` of them held out, at least one; with
    `groups` (each row's group, e.g. its image), `share` of the groups, each whole on one side."""
    groups = np.arange(count) if groups is None else np.asarray(groups)
    names = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    held = np.isin(groups, names[order[: max(1, round(share * len(names)))]])
    return np.flatnonzero(~held), np.flatnonzero(held)


def multilabel_map(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, year: int,
                   seed: int = 0, resamples: int = RESAMPLES, train_groups: np.ndarray | None = None,
                   test_groups: np.ndarray | None = None) -> TransferResult:
    """mAP (%) of one-vs-rest SVMs on multi-label descriptors (labels in {1, -1, 0}), with its bootstrap interval;
    `train_groups`, `test_groups`: each item's image, where several share one (0-based, consecutive)."""
    fit, held = held_out_rows(len(train), seed, groups=train_groups)
    best, _ = choose_c(lambda c: fit_multilabel(train[fit], train_labels[fit], c),
                       lambda classifier: mean_average_precision(classifier.scores(train[held]), train_labels[held], year)[0])
    classifier = fit_multilabel(train, train_labels, best.c)
    scores = classifier.scores(test)
    value, _ = mean_average_precision(scores, test_labels, year)
    groups = np.arange(len(test)) if test_groups is None else np.asarray(test_groups)
    outputs = Outputs((int(groups.max()) + 1,), lambda counts: resampled_mean_average_precision(scores, test_labels, year, counts[0][:, groups]))
    return TransferResult(value, *_interval(_resampled([outputs], resamples)[0], value), (best.c,), outputs=outputs)


def single_label_recall(features: np.ndarray, labels: np.ndarray, classes: int, splits: Sequence[CaltechSplit],
                        resamples: int = RESAMPLES) -> TransferResult:
    """Mean class recall (%) over `splits`: their mean, std, and the interval of the mean over their test images."""
    values, chosen, predictions = [], [], []
    for split in splits:
        best, _ = choose_c(lambda c: fit_single_label(features[split.fit], labels[split.fit], classes, c),
                           lambda classifier: mean_class_recall(classifier.predict(features[split.held_out]), labels[split.held_out], classes))
        final: LinearClassifier = fit_single_label(features[split.train], labels[split.train], classes, best.c)
        predicted = final.predict(features[split.test])
        values.append(mean_class_recall(predicted, labels[split.test], classes))
        chosen.append(best.c)
        predictions.append((predicted, labels[split.test]))
    value = float(np.mean(values))
    outputs = Outputs(
        tuple(len(truth) for _, truth in predictions),
        lambda counts: np.mean([resampled_mean_class_recall(p, t, classes, c) for (p, t), c in zip(predictions, counts)], axis=0),
    )
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return TransferResult(value, *_interval(_resampled([outputs], resamples)[0], value), tuple(chosen), std, tuple(values), outputs)
