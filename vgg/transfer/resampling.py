"""The bootstrap of Appendix B's metrics, vectorised over the resamples: each resample is a row of counts (how many
times each test item was drawn), and the metrics (`vgg.transfer.metrics`) are computed for all rows at once.

VOC's AP of a resample equals the devkit's AP of the resampled list (duplicates ranked next to each other, as a
stable sort by score puts them): within a run of duplicates of a positive item, precision rises and so does recall,
so the curve's envelope and the 11 interpolation points only need the precision at the end of each run, which is
the cumulative count's; a run of negatives changes no recall and lowers precision. Ties between different items of
equal score are ranked in input order, as in `vgg.transfer.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from vgg.transfer.metrics import VOC07_RECALL_POINTS

CHUNK = 250
"""Resamples computed together (memory: a few (CHUNK, items) float arrays)."""


def resample_counts(rng: np.random.Generator, sizes: Sequence[int], resamples: int, chunk: int = CHUNK) -> Iterator[list[np.ndarray]]:
    """Chunks of bootstrap resamples: per chunk, for each group of `sizes` (Caltech's splits; one group for VOC) a
    (rows, size) int array of how often each item was drawn, `size` draws with replacement per row."""
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        counts = []
        for size in sizes:
            drawn = rng.integers(0, size, (rows, size)) + size * np.arange(rows)[:, None]
            counts.append(np.bincount(drawn.ravel(), minlength=rows * size).reshape(rows, size))
        yield counts


def resampled_average_precisions(scores: np.ndarray, labels: np.ndarray, year: int, counts: np.ndarray) -> np.ndarray:
    """(R, C) AP in % of each resample (`counts` (R, N)) and class of (N, C) `scores`, `labels` ({1, -1, 0}); NaN where a
    resample has no positive of the class."""
    result = np.full((counts.shape[0], scores.shape[1]), np.nan)
    for c in range(scores.shape[1]):
        kept = labels[:, c] != 0
        order = np.argsort(-scores[kept, c].astype(np.float64), kind="stable")
        positive = (labels[kept, c] > 0)[order]
        weights = counts[:, kept][:, order].astype(np.float64)
        true_positives = np.cumsum(weights * positive, axis=1)
        ranks = np.cumsum(weights, axis=1)
        positives = true_positives[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(ranks > 0, true_positives / ranks, 0.0)
            recall = true_positives / positives[:, None]
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # the highest precision at this or a later rank
        if year < 2010:
            points = []
            for t in VOC07_RECALL_POINTS:
                reached = recall >= t
                first = reached.argmax(axis=1)
                points.append(np.where(reached.any(axis=1), envelope[np.arange(len(first)), first], 0.0))
            ap = np.mean(points, axis=0)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                ap = np.sum(weights * positive * envelope, axis=1) / positives
        result[:, c] = np.where(positives > 0, 100.0 * ap, np.nan)
    return result


def resampled_mean_average_precision(scores: np.ndarray, labels: np.ndarray, year: int, counts: np.ndarray) -> np.ndarray:
    """(R,) mAP in % of each resample over the classes with a positive in it (NaN where none has)."""
    per_class = resampled_average_precisions(scores, labels, year, counts)
    defined = ~np.isnan(per_class)
    with np.errstate(invalid="ignore"):
        return np.where(defined.any(axis=1), np.nansum(per_class, axis=1) / defined.sum(axis=1), np.nan)


def resampled_mean_class_recall(predicted: np.ndarray, truth: np.ndarray, classes: int, counts: np.ndarray) -> np.ndarray:
    """(R,) mean class recall in % of each resample over the classes drawn in it."""
    one_hot = np.eye(classes)[truth]  # (N, classes)
    drawn = counts @ one_hot
    correct = (counts * (predicted == truth)) @ one_hot
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(drawn > 0, correct / drawn, 0.0)
        return 100.0 * recall.sum(axis=1) / (drawn > 0).sum(axis=1)
