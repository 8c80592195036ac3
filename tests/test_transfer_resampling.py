"""The vectorised bootstrap of the transfer metrics equals the metrics recomputed on each resampled list."""

from __future__ import annotations

import numpy as np
import pytest

from vgg.transfer.metrics import mean_average_precision, mean_class_recall
from vgg.transfer.resampling import resample_counts, resampled_mean_average_precision, resampled_mean_class_recall


def _expanded(counts: np.ndarray) -> np.ndarray:
    """The resampled rows a count vector stands for, each item's copies together (as a stable sort ranks them)."""
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize("year", [2007, 2012])
def test_resampled_map_equals_the_devkit_ap_of_each_resampled_list(year):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(40, 4))  # distinct scores: no ties between items
    labels = rng.choice([1, -1, -1, 0], size=(40, 4))
    labels[:, 3] = -1  # a class without positives is left out of the mean
    (counts,) = next(resample_counts(np.random.default_rng(2), [40], 30))
    vectorised = resampled_mean_average_precision(scores, labels, year, counts)
    for row, value in zip(counts, vectorised):
        rows = _expanded(row)
        if (labels[rows, :3] > 0).any():
            assert value == pytest.approx(mean_average_precision(scores[rows], labels[rows], year)[0], abs=1e-9)
        else:
            assert np.isnan(value)


def test_resampled_mean_class_recall_equals_the_metric_of_each_resampled_list():
    rng = np.random.default_rng(3)
    truth, predicted = rng.integers(0, 5, 60), rng.integers(0, 5, 60)
    (counts,) = next(resample_counts(np.random.default_rng(4), [60], 20))
    vectorised = resampled_mean_class_recall(predicted, truth, 5, counts)
    for row, value in zip(counts, vectorised):
        rows = _expanded(row)
        assert value == pytest.approx(mean_class_recall(predicted[rows], truth[rows], 5), abs=1e-9)


def test_resample_counts_draw_each_group_with_replacement():
    chunks = list(resample_counts(np.random.default_rng(0), [7, 3], 600, chunk=250))
    assert [c[0].shape for c in chunks] == [(250, 7), (250, 7), (100, 7)] and chunks[0][1].shape == (250, 3)
    assert all((c[0].sum(axis=1) == 7).all() and (c[1].sum(axis=1) == 3).all() for c in chunks)
