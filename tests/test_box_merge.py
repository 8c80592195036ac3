"""OverFeat's greedy merge (Appendix A's full localisation protocol) on hand-built candidates."""

from __future__ import annotations


import pytest
import torch

from vgg.localisation.boxes import iou
from vgg.localisation.merge import MERGE_THRESHOLD, best_box, greedy_merge, match_distance

# Three near-identical boxes around one object, two around another far away.
FIRST = torch.tensor([[100.0, 100.0, 200.0, 200.0], [102.0, 99.0, 201.0, 203.0], [98.0, 101.0, 199.0, 198.0]])
SECOND = torch.tensor([[400.0, 50.0, 480.0, 150.0], [401.0, 52.0, 479.0, 149.0]])
FIRST_SCORES = torch.tensor([0.3, 0.2, 0.25])
SECOND_SCORES = torch.tensor([0.4, 0.1])


def two_objects() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([FIRST, SECOND]), torch.cat([FIRST_SCORES, SECOND_SCORES])


def test_match_distance_is_zero_for_identical_boxes_and_follows_the_formula():
    a = torch.tensor([0.0, 0.0, 10.0, 10.0], dtype=torch.float64)
    assert float(match_distance(a, a)) == 0.0
    shifted = a + torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    # Centre distance 1 over the diagonal 10 sqrt(2), plus 1 - IoU = 1 - 90 / 110.
    assert float(match_distance(a, shifted)) == pytest.approx(1 / (10 * 2**0.5) + 1 - 90 / 110)
    assert float(match_distance(a, shifted)) < MERGE_THRESHOLD
    assert float(match_distance(a, a + torch.tensor([5.0, 0.0, 5.0, 0.0], dtype=torch.float64))) > MERGE_THRESHOLD
    # Concentric boxes: only the IoU term, the same IoU as `boxes.iou`.
    inner = torch.tensor([2.0, 3.0, 8.0, 7.0], dtype=torch.float64)
    assert float(match_distance(a, inner)) == pytest.approx(1 - float(iou(a, inner)))


def test_match_distance_is_scale_free_symmetric_and_never_nan():
    a, b = torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[2.0, 1.0, 13.0, 12.0]])
    assert torch.allclose(match_distance(a, b), match_distance(a * 7, b * 7))
    assert torch.allclose(match_distance(a, b), match_distance(b, a))
    degenerate = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 3.0, 3.0], [6.0, 6.0, 6.0, 6.0]])
    distances = match_distance(degenerate[:, None], torch.cat([degenerate, a])[None])
    assert not distances.isnan().any()
    assert float(distances[0, 0]) == 1.0  # a point and itself: same centre, IoU 0
    assert float(distances[0, 2]) == float("inf")  # two distinct points: never merged


def test_two_objects_merge_into_two_boxes_with_mean_coordinates_and_summed_scores():
    boxes, scores = two_objects()
    merged, merged_scores = greedy_merge(boxes, scores)
    assert merged.shape == (2, 4) and merged_scores.shape == (2,)
    assert torch.allclose(merged[0], FIRST.mean(dim=0))
    assert float(merged_scores[0]) == pytest.approx(0.75)
    assert torch.allclose(merged[1], SECOND.mean(dim=0))
    assert float(merged_scores[1]) == pytest.approx(0.5)


def test_a_single_box_returns_itself():
    merged, merged_scores = greedy_merge(FIRST[:1], FIRST_SCORES[:1])
    assert torch.equal(merged, FIRST[:1]) and torch.equal(merged_scores, FIRST_SCORES[:1])
    box, score = best_box(FIRST[1:2], FIRST_SCORES[1:2])
    assert torch.equal(box, FIRST[1]) and score == pytest.approx(0.2)


def test_boxes_far_apart_are_never_merged_and_come_back_sorted_by_score():
    corners = torch.tensor([[0.0, 0.0], [200.0, 0.0], [0.0, 200.0], [200.0, 200.0], [400.0, 400.0]])
    boxes = torch.cat([corners, corners + 50], dim=1)
    scores = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.2])
    merged, merged_scores = greedy_merge(boxes, scores)
    order = scores.argsort(descending=True)
    assert torch.equal(merged, boxes[order]) and torch.equal(merged_scores, scores[order])


def test_threshold_zero_merges_nothing_even_identical_boxes():
    boxes, scores = two_objects()
    boxes, scores = torch.cat([boxes, boxes[:1]]), torch.cat([scores, torch.tensor([0.05])])
    merged, merged_scores = greedy_merge(boxes, scores, threshold=0.0)
    assert len(merged) == len(boxes)
    assert torch.equal(merged_scores, scores.sort(descending=True).values)
    assert len(greedy_merge(boxes, scores)[0]) == 2  # the default threshold merges them all into two


def test_the_input_order_does_not_change_the_result():
    boxes, scores = two_objects()
    expected_boxes, expected_scores = greedy_merge(boxes, scores)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        permutation = torch.randperm(len(boxes), generator=generator)
        merged, merged_scores = greedy_merge(boxes[permutation], scores[permutation])
        assert torch.allclose(merged, expected_boxes) and torch.allclose(merged_scores, expected_scores)


def test_best_box_prefers_the_supported_cluster_over_the_single_most_confident_box():
    lone = torch.tensor([[400.0, 300.0, 450.0, 350.0]])
    boxes = torch.cat([FIRST, lone])
    scores = torch.tensor([0.3, 0.3, 0.3, 0.8])
    box, score = best_box(boxes, scores)
    assert torch.allclose(box, FIRST.mean(dim=0))
    assert score == pytest.approx(0.9)
    # Without merging, the lone box would win.
    box, score = best_box(boxes, scores, threshold=0.0)
    assert torch.equal(box, lone[0]) and score == pytest.approx(0.8)


def test_empty_input():
    merged, merged_scores = greedy_merge(torch.zeros(0, 4), torch.zeros(0))
    assert merged.shape == (0, 4) and merged_scores.shape == (0,)
    with pytest.raises(ValueError, match="at least one candidate box"):
        best_box(torch.zeros(0, 4), torch.zeros(0))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        greedy_merge(torch.zeros(3, 5), torch.zeros(3))
    with pytest.raises(ValueError, match="scores"):
        greedy_merge(torch.zeros(3, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="non-negative"):
        greedy_merge(FIRST, torch.tensor([0.1, -0.2, 0.3]))


def reference_merge(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The procedure written plainly: recompute every pair's distance after each merge."""
    clusters = [([box], float(score)) for box, score in zip(boxes.double(), scores.double())]
    while len(clusters) > 1:
        means = torch.stack([torch.stack(members).mean(dim=0) for members, _ in clusters])
        distances = match_distance(means[:, None], means[None])
        distances.fill_diagonal_(float("inf"))
        flat = int(distances.argmin())
        i, j = divmod(flat, len(clusters))
        if not float(distances[i, j]) < threshold:
            break
        (members_i, score_i), (members_j, score_j) = clusters[i], clusters[j]
        clusters[i] = (members_i + members_j, score_i + score_j)
        del clusters[j]
    clusters.sort(key=lambda cluster: -cluster[1])
    means = torch.stack([torch.stack(members).mean(dim=0) for members, _ in clusters])
    return means, torch.tensor([score for _, score in clusters], dtype=torch.float64)


def jittered_candidates(count: int, objects: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates scattered around `objects` boxes, with jitter large enough that some stay apart."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(objects, 2, generator=generator, dtype=torch.float64) * 400
    sizes = 40 + torch.rand(objects, 2, generator=generator, dtype=torch.float64) * 80
    which = torch.randint(objects, (count,), generator=generator)
    centre = centres[which] + torch.randn(count, 2, generator=generator, dtype=torch.float64) * 8
    size = sizes[which] * (1 + 0.2 * torch.randn(count, 2, generator=generator, dtype=torch.float64))
    return torch.cat([centre - size / 2, centre + size / 2], dim=1), torch.rand(count, generator=generator)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_incremental_merge_matches_the_plain_procedure(seed):
    boxes, scores = jittered_candidates(40, 4, seed)
    expected_boxes, expected_scores = reference_merge(boxes, scores, MERGE_THRESHOLD)
    assert 4 <= len(expected_boxes) < 40  # a real mix of merges
    merged, merged_scores = greedy_merge(boxes, scores)
    assert torch.allclose(merged.double(), expected_boxes) and torch.allclose(merged_scores.double(), expected_scores)


def test_five_hundred_candidates_merge_into_few_boxes_keeping_the_total_score():
    boxes, scores = jittered_candidates(500, 3, seed=3)
    merged, merged_scores = greedy_merge(boxes, scores)
    assert len(merged) < 50 and float(merged_scores.sum()) == pytest.approx(float(scores.sum()))
