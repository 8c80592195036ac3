"""Bootstrap intervals: against the closed-form binomial interval, paired vs unpaired, the
seeds (a t interval) and images (a bootstrap), determinism and memory."""

import tracemalloc

import numpy as np
import pytest

from vgg.evaluation.statistics import (
    CHUNK_BYTES,
    bootstrap_interval,
    bootstrap_intervals,
    bootstrap_means,
    chunk_resamples,
    paired_bootstrap_interval,
    seed_half_width,
    percentile_interval,
)


def errors(count: int, wrong: int, seed: int = 0) -> np.ndarray:
    """`count` per-image 0/1 errors, `wrong` of them 1, in a shuffled order."""
    values = np.zeros(count)
    values[:wrong] = 1
    return np.random.default_rng(seed).permutation(values)


def test_interval_matches_the_binomial_normal_approximation():
    low, high = bootstrap_interval(errors(2000, 500))
    half_width = 1.96 * np.sqrt(0.25 * 0.75 / 2000)  # Wald: 25% +- 1.90 points
    assert abs(100 * low - 100 * (0.25 - half_width)) < 0.3
    assert abs(100 * high - 100 * (0.25 + half_width)) < 0.3
    assert low < 0.25 < high


def test_the_interval_is_deterministic_and_narrows_with_more_images():
    values = errors(2000, 500)
    assert bootstrap_interval(values) == bootstrap_interval(values)
    assert bootstrap_interval(values, seed=1) != bootstrap_interval(values)
    low, high = bootstrap_interval(errors(8000, 2000))
    assert (high - low) < 0.6 * np.subtract(*bootstrap_interval(values)[::-1])
    ninety = bootstrap_interval(values, confidence=0.9)
    assert ninety[0] > bootstrap_interval(values)[0] and ninety[1] < bootstrap_interval(values)[1]


def test_paired_interval_is_narrower_than_unpaired_for_correlated_errors():
    first = errors(2000, 600, seed=1)
    second = first.copy()
    flipped = np.flatnonzero(first)[:40]  # the second net gets 40 of the first's errors right, nothing else changes
    second[flipped] = 0
    paired = paired_bootstrap_interval(first, second)
    unpaired = percentile_interval(bootstrap_means([first], seed=1)[0] - bootstrap_means([second], seed=2)[0])
    assert paired[0] > 0  # the paired interval sees the 2-point gain ...
    assert unpaired[0] < 0 < unpaired[1]  # ... which independent resampling drowns
    assert (paired[1] - paired[0]) < 0.5 * (unpaired[1] - unpaired[0])


def test_the_interval_widens_with_between_seed_spread():
    same = np.stack([errors(1000, 250, seed=s) for s in range(5)])
    spread = np.stack([errors(1000, wrong, seed=s) for s, wrong in enumerate((150, 200, 250, 300, 350))])
    assert same.mean() == spread.mean() == 0.25
    narrow, wide = bootstrap_interval(same), bootstrap_interval(spread)
    assert narrow[0] < 0.25 < narrow[1] and wide[0] < 0.25 < wide[1]
    assert (wide[1] - wide[0]) > 2 * (narrow[1] - narrow[0])
    one_seed = bootstrap_interval(same[0])
    assert (narrow[1] - narrow[0]) < (one_seed[1] - one_seed[0])  # five seeds' images average out more noise


def test_one_resampling_serves_several_statistics_and_shapes_must_match():
    top1, top5 = errors(500, 200), errors(500, 20)
    assert bootstrap_intervals([top1, top5]) == [bootstrap_interval(top1), bootstrap_interval(top5)]
    with pytest.raises(ValueError, match="share their seeds and images"):
        bootstrap_means([top1, errors(400, 20)])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])


def test_imagenet_size_stays_in_chunks_under_100_mb():
    images = 50_000
    assert chunk_resamples(images) * images * 16 <= CHUNK_BYTES
    values = np.random.default_rng(0).random(images) < 0.3
    tracemalloc.start()
    try:
        bootstrap_means([values], resamples=300)  # several chunks: the peak is one chunk's, whatever the resamples
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert chunk_resamples(images) < 300 and peak < 100 * 2**20


def test_the_seeds_part_is_a_t_interval_of_the_per_seed_means():
    """Three seeds: a bootstrap over them would give about 0.92 s; the t interval with 2 degrees of
    freedom gives 4.30 s / sqrt(3) = 2.48 s, s the seeds' standard deviation."""
    spread = np.stack([errors(4000, wrong, seed=s) for s, wrong in enumerate((800, 1000, 1200))])  # 20%, 25%, 30%
    per_seed = spread.mean(axis=1)
    t_part = seed_half_width(per_seed)
    assert t_part == pytest.approx(4.303 * per_seed.std(ddof=1) / np.sqrt(3), rel=1e-3)
    low, high = bootstrap_interval(spread)
    image_low, image_high = bootstrap_interval(spread.mean(axis=0))  # the images' part alone: the seeds averaged first
    assert (high - low) / 2 >= t_part and high - low > 2 * (image_high - image_low)
    assert low < 0.25 < high and seed_half_width(per_seed[:1]) == 0.0
    paired_low, paired_high = paired_bootstrap_interval(spread, spread - 0.02)
    assert paired_low == pytest.approx(0.02, abs=1e-9) and paired_high == pytest.approx(0.02, abs=1e-9)  # the same gain on every seed and image: no spread


def test_intervals_stay_within_what_the_mean_can_take():
    """Two seeds (t with 1 degree of freedom is 12.7) at 1% and 3% error: widened by the seeds' part
    alone the interval would reach about -11%; an error rate cannot, nor can a paired difference
    of two error rates leave [-100%, 100%]."""
    spread = np.stack([errors(1000, 10, seed=0), errors(1000, 30, seed=1)])
    assert seed_half_width(spread.mean(axis=1)) > 0.1  # the unclipped low end would be below -0.08
    low, high = bootstrap_interval(spread)
    assert low == 0.0 and 0.02 < high <= 1.0
    perfect = np.zeros((2, 1000))
    paired_low, paired_high = paired_bootstrap_interval(perfect, spread)
    assert -1.0 <= paired_low < -0.02 and paired_high == 0.0  # never better than perfect on every image
