"""Appendix B's linear SVMs: one per class, difficult images left out, C chosen on held-out images."""

from __future__ import annotations

import numpy as np
import pytest

from vgg.transfer.svm import choose_c, fit_multilabel, fit_single_label


def blobs(per_class: int, classes: int, dimensions: int = 8, spread: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(classes, dimensions) * 3
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + rng.normal(0, spread, (len(labels), dimensions)), labels


def test_one_vs_rest_svms_separate_separable_classes():
    features, labels = blobs(20, 4)
    classifier = fit_single_label(features, labels, 4, c=1.0)
    assert classifier.weights.shape == (4, 8) and (classifier.predict(features) == labels).all()
    test, truth = blobs(10, 4, seed=1)
    assert (classifier.predict(test) == truth).all()


def test_a_difficult_image_is_left_out_of_its_class_svm_only():
    features, labels = blobs(15, 3)
    multi = np.where(np.eye(3)[labels] > 0, 1, -1)
    base = fit_multilabel(features, multi, c=1.0)
    odd = np.vstack([features, [[-50.0] * 8]])  # an outlier marked difficult for class 0, a negative for the others
    marked = np.vstack([multi, [[0, -1, -1]]])
    with_difficult = fit_multilabel(odd, marked, c=1.0)
    assert np.allclose(with_difficult.weights[0], base.weights[0]) and with_difficult.bias[0] == pytest.approx(base.bias[0])
    assert not np.allclose(with_difficult.weights[1], base.weights[1])  # a negative for class 1: it counts there


def test_c_is_chosen_by_the_held_out_score_ties_to_the_smaller():
    features, labels = blobs(10, 2)
    scores = {0.01: 0.5, 0.1: 0.9, 1.0: 0.9, 10.0: 0.7}
    best, scored = choose_c(lambda c: fit_single_label(features, labels, 2, c), lambda classifier: scores[classifier.c], grid=scores)
    assert best.c == 0.1 and scored == scores


def test_a_class_without_negatives_is_a_clear_error():
    features, _ = blobs(5, 2)
    with pytest.raises(ValueError, match="positive and negative"):
        fit_multilabel(features, np.ones((10, 1), dtype=int), c=1.0)


def test_the_classes_fitted_in_threads_give_the_serial_fit():
    import torch

    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(60, 8)), rng.integers(0, 4, 60)
    multilabel = np.where(rng.random((60, 3)) > 0.5, 1, -1)
    multilabel[:5, 0] = 0  # difficult for class 0: left out of its SVM
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = fit_single_label(features, labels, 4, 1.0), fit_multilabel(features, multilabel, 1.0)
        torch.set_num_threads(3)
        threaded = fit_single_label(features, labels, 4, 1.0), fit_multilabel(features, multilabel, 1.0)
    finally:
        torch.set_num_threads(threads)
    for one, other in zip(serial, threaded):
        assert np.array_equal(one.weights, other.weights) and np.array_equal(one.bias, other.bias)
