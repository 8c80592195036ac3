"""OverFeat's greedy merge of candidate boxes (Sermanet et al. 2014, Sect. 4.3), for one class.

The VGG paper's full localisation protocol (Appendix A) merges the boxes predicted at every
position and scale with OverFeat's procedure: repeatedly take the closest pair of boxes and
replace it by one merged box, until no pair is closer than a threshold. OverFeat's match score is
"the sum of the distance between centres of the two boxes and the intersection area"; we use a
scale-free version of it (`match_distance`). A merged box is the mean of all its member candidates
(we keep the coordinate sum and member count, so a cluster's box does not depend on the order its
members joined) and its score the sum of its members' scores: a box that many positions agree on
scores higher than one predicted by a single confident position.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

MERGE_THRESHOLD = 0.5
"""Pairs with a `match_distance` below this are merged. Our choice: neither the VGG paper nor
OverFeat gives a number. 0.5 merges, e.g., two equal squares shifted sideways by a tenth of their
side (distance ~0.25) but not by a third (~0.74), nor two overlapping by half (~1.0)."""


def match_distance(a: Tensor, b: Tensor) -> Tensor:
    """Scale-free OverFeat match distance, elementwise with broadcasting (0 for identical boxes):
    |centre(a) - centre(b)| / mean(diagonal(a), diagonal(b)) + (1 - IoU(a, b))."""
    return _tensor(_match_distance(_numpy(a), _numpy(b)), like=a)


def _numpy(boxes: Tensor) -> np.ndarray:
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    return boxes.detach().cpu().to(torch.float64).numpy()


def _tensor(array: np.ndarray, like: Tensor) -> Tensor:
    """A float64 result back as a tensor of `like`'s float dtype (the default one for integer boxes) and device."""
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype=dtype, device=like.device)


def _match_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`match_distance` on float64 arrays (..., 4). NumPy rather than torch: the merge loop calls it
    once per merge on a few hundred boxes, where torch's per-operation overhead dominates."""
    size_a = np.maximum(a[..., 2:] - a[..., :2], 0)
    size_b = np.maximum(b[..., 2:] - b[..., :2], 0)
    centre_distance = np.linalg.norm((a[..., :2] + a[..., 2:] - b[..., :2] - b[..., 2:]) / 2, axis=-1)
    mean_diagonal = (np.linalg.norm(size_a, axis=-1) + np.linalg.norm(size_b, axis=-1)) / 2
    overlap = np.maximum(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0)
    inter = overlap[..., 0] * overlap[..., 1]
    union = size_a[..., 0] * size_a[..., 1] + size_b[..., 0] * size_b[..., 1] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    # Two degenerate (point-like) boxes have no diagonal: only coincident centres count as close.
    centre_term = np.divide(
        centre_distance, mean_diagonal, out=np.where(centre_distance > 0, np.inf, 0.0), where=mean_diagonal > 0
    )
    return centre_term + (1 - iou)


def _check_inputs(boxes: Tensor, scores: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must have shape (N,) = ({boxes.shape[0]},), got {tuple(scores.shape)}")
    if bool((scores < 0).any()):
        raise ValueError("scores must be non-negative (class scores of the positions that predicted the boxes)")


def greedy_merge(boxes: Tensor, scores: Tensor, threshold: float = MERGE_THRESHOLD) -> tuple[Tensor, Tensor]:
    """Merge candidate boxes (N, 4) with scores (N,) greedily, closest pair first, while the pair's
    `match_distance` is below `threshold`. Returns the merged boxes (K, 4) (each the mean of its
    members) and scores (K,) (each the sum of its members'), sorted by score, highest first."""
    _check_inputs(boxes, scores)
    clusters = _Clusters(_numpy(boxes), scores.detach().cpu().to(torch.float64).numpy())
    while (pair := clusters.closest_pair()) is not None and pair[2] < threshold:
        clusters.merge(pair[0], pair[1])
    merged, merged_scores = clusters.result()
    order = np.argsort(-merged_scores, kind="stable")
    return _tensor(merged[order], like=boxes), _tensor(merged_scores[order], like=scores)


class _Clusters:
    """The merge state: per cluster its coordinate sum, member count and score sum, the (N, N)
    distances between the clusters' mean boxes (inf on the diagonal and for retired clusters), and
    each row's minimum and its column, so that finding the closest pair costs O(N), not O(N^2)."""

    def __init__(self, boxes: np.ndarray, scores: np.ndarray):
        self.sums, self.totals, self.means = boxes.copy(), scores.copy(), boxes.copy()
        self.counts = np.ones(len(boxes))
        self.active = np.ones(len(boxes), dtype=bool)
        self.distances = _match_distance(boxes[:, None, :], boxes[None, :, :])
        np.fill_diagonal(self.distances, np.inf)
        self.row_arg = self.distances.argmin(axis=1) if len(boxes) else np.zeros(0, dtype=np.int64)
        self.row_min = self.distances[np.arange(len(boxes)), self.row_arg]

    def closest_pair(self) -> tuple[int, int, float] | None:
        """(i, j, distance) of the closest pair of active clusters; None if there is none."""
        if len(self.row_min) == 0:
            return None
        i = int(self.row_min.argmin())
        distance = float(self.row_min[i])
        return None if math.isinf(distance) else (i, int(self.row_arg[i]), distance)

    def merge(self, i: int, j: int) -> None:
        """Fold cluster j into cluster i and retire j; recompute only i's distances."""
        self.sums[i] += self.sums[j]
        self.counts[i] += self.counts[j]
        self.totals[i] += self.totals[j]
        self.active[j] = False
        self.means[i] = self.sums[i] / self.counts[i]
        row = _match_distance(self.means[i], self.means)
        row[~self.active] = np.inf
        row[i] = np.inf
        self.distances[j, :] = self.distances[:, j] = np.inf
        self.distances[i, :] = self.distances[:, i] = row
        self.row_min[j] = np.inf
        # Rows whose minimum was at i or j must be rescanned; the others can only have got closer to i.
        stale = (self.row_arg == i) | (self.row_arg == j)
        stale[i] = True
        closer = ~stale & (row < self.row_min)
        self.row_min[closer], self.row_arg[closer] = row[closer], i
        stale_rows = np.flatnonzero(stale)
        self.row_arg[stale_rows] = self.distances[stale_rows].argmin(axis=1)
        self.row_min[stale_rows] = self.distances[stale_rows, self.row_arg[stale_rows]]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean boxes and summed scores of the active clusters, in input order."""
        return self.means[self.active], self.totals[self.active]


def best_box(boxes: Tensor, scores: Tensor, threshold: float = MERGE_THRESHOLD) -> tuple[Tensor, float]:
    """The highest-scoring box after `greedy_merge`, and its summed score."""
    if len(boxes) == 0:
        raise ValueError("best_box needs at least one candidate box; got none (no position predicted a box)")
    merged, merged_scores = greedy_merge(boxes, scores, threshold)
    return merged[0], float(merged_scores[0])
