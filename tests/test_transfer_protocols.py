"""Appendix B's protocols on descriptors: C chosen on held-out training images, scores with intervals."""

from __future__ import annotations

import numpy as np

from vgg.transfer.datasets import CaltechSet, caltech_splits
from vgg.transfer.protocols import held_out_rows, multilabel_map, single_label_recall


def features(labels: np.ndarray, classes: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.eye(classes, 16)[labels] + rng.normal(0, noise, (len(labels), 16))


def test_held_out_rows_are_a_fifth_disjoint_and_fixed_by_the_seed():
    fit, held = held_out_rows(50, seed=3)
    assert len(held) == 10 and not set(fit) & set(held) and sorted([*fit, *held]) == list(range(50))
    assert np.array_equal(held_out_rows(50, seed=3)[1], held) and not np.array_equal(held_out_rows(50, seed=4)[1], held)


def test_informative_descriptors_score_high_and_noise_scores_low_with_intervals():
    rng = np.random.default_rng(0)
    present = rng.random((160, 4)) < 0.4
    present[present.sum(axis=1) == 0, 0] = True
    labels = np.where(present, 1, -1)
    informative = present.astype(float) @ np.eye(4, 12) + rng.normal(0, 0.2, (160, 12))
    noise = rng.normal(0, 1, (160, 12))
    good = multilabel_map(informative[:80], labels[:80], informative[80:], labels[80:], year=2007, resamples=200)
    bad = multilabel_map(noise[:80], labels[:80], noise[80:], labels[80:], year=2007, resamples=200)
    assert good.low <= good.value <= good.high and good.value > 90
    assert bad.high < good.low  # the margin the toy table reports: outside both intervals


def test_single_label_recall_over_three_splits(tmp_path):
    labels = np.repeat(np.arange(5), 12)
    dataset = CaltechSet(256, tmp_path, tuple(f"{k:03d}.c" for k in range(5)), tuple(tmp_path / f"{i}.jpg" for i in range(60)), labels)
    splits = caltech_splits(dataset, train_per_class=6, test_per_class=None, seed=0)
    result = single_label_recall(features(labels, 5, 0.3, 0), labels, 5, splits, resamples=200)
    assert len(result.per_split) == 3 and len(result.chosen_c) == 3
    assert result.value == np.mean(result.per_split) and result.std is not None and result.low <= result.value <= result.high
    assert result.value > 90
    chance = single_label_recall(np.random.default_rng(1).normal(0, 1, (60, 16)), labels, 5, splits, resamples=200)
    assert chance.high < result.low
