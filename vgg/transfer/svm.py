"""Appendix B's classifier: linear SVMs on the L2-normalised image descriptors, one-vs-rest, from scikit-learn's
`LinearSVC`, with the regularisation constant C chosen on held-out training images.

Multi-label sets (VOC) train one binary SVM per class, leaving out that class's "difficult" images (label 0),
as the devkit ignores them; single-label sets (Caltech) one SVM per class against all others. C is chosen
from `C_GRID` (our choice: the paper names no values) by the held-out score, ties to the smaller C.

The objective is LinearSVC's (squared hinge, L2), solved in the primal (liblinear's trust-region Newton method):
deterministic, and on nearly parallel descriptors (a random net's) 0.06 s where the dual coordinate descent took 5 s
and 8,000 iterations (C = 100, 600 toy images of 1,536 dimensions).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
"""The SVM constants tried (a decade apart, around LinearSVC's default of 1)."""
MAX_ITERATIONS = 10_000


@dataclass(frozen=True)
class LinearClassifier:
    """One linear scorer per class: scores = features @ weights.T + bias."""

    weights: np.ndarray  # (classes, dimensions)
    bias: np.ndarray  # (classes,)
    c: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(N, classes) class scores of (N, dimensions) descriptors."""
        return features @ self.weights.T + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Each descriptor's highest-scoring class (single-label sets)."""
        return np.argmax(self.scores(features), axis=1)


def _binary_svm(features: np.ndarray, positive: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.svm import LinearSVC  # on use: importing scikit-learn costs every other command start-up time

    if positive.all() or not positive.any():
        raise ValueError("a class needs positive and negative training images for its SVM")
    svm = LinearSVC(C=c, dual=False, max_iter=MAX_ITERATIONS).fit(features, positive)
    return svm.coef_[0].astype(np.float64), float(svm.intercept_[0])


def _svm_without_difficult(features: np.ndarray, column: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    kept = column != 0
    return _binary_svm(features if kept.all() else features[kept], column[kept] > 0, c)


FIT_BYTES_PER_VALUE = 40
"""Memory one fit needs per feature value, about: liblinear's copy (16 bytes), a float64 copy of a class's rows,
and sklearn's work arrays."""


def fit_threads(features: np.ndarray, tasks: int) -> int:
    """How many SVMs to fit at once: torch's intra-op threads (liblinear releases the GIL while it fits, and its
    primal solver draws no random numbers: the dual one draws from a generator all threads share), at most
    `tasks`, and no more than a quarter of the machine's memory holds (each fit copies the features)."""
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    by_memory = budget // max(1, FIT_BYTES_PER_VALUE * features.size)
    return int(max(1, min(torch.get_num_threads(), tasks, by_memory)))


def _binary_svms(features: np.ndarray, tasks: list[Callable[[np.ndarray], tuple[np.ndarray, float]]], c: float) -> LinearClassifier:
    """The classes' SVMs (`tasks`, each given the float64 features), fitted side by side in `fit_threads` threads;
    each fit is seeded, so the result does not depend on the thread count."""
    features = np.ascontiguousarray(features, dtype=np.float64)  # once, not once per fit
    with ThreadPoolExecutor(fit_threads(features, len(tasks))) as pool:
        weights, bias = zip(*pool.map(lambda task: task(features), tasks))
    return LinearClassifier(np.stack(weights), np.array(bias), c)


def fit_multilabel(features: np.ndarray, labels: np.ndarray, c: float) -> LinearClassifier:
    """One binary SVM per class of a multi-label set: `labels` (N, classes) in {1, -1, 0}; an image labelled 0
    (difficult) for a class is left out of that class's SVM."""
    return _binary_svms(features, [partial(_svm_without_difficult, column=column, c=c) for column in labels.T], c)


def fit_single_label(features: np.ndarray, labels: np.ndarray, classes: int, c: float) -> LinearClassifier:
    """One-vs-rest SVMs of a single-label set (`labels` (N,) class indices, `classes` in all)."""
    return _binary_svms(features, [partial(_binary_svm, positive=labels == k, c=c) for k in range(classes)], c)


def choose_c(fit: Callable[[float], LinearClassifier], score: Callable[[LinearClassifier], float],
             grid: Sequence[float] = C_GRID) -> tuple[LinearClassifier, dict[float, float]]:
    """The classifier of the C with the best held-out `score` (higher is better; ties to the smaller C), and every C's score."""
    scored = {}
    best = None
    for c in sorted(grid):
        classifier = fit(c)
        scored[c] = score(classifier)
        if best is None or scored[c] > scored[best.c]:
            best = classifier
    return best, scored
