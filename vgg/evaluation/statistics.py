"""Intervals of a mean per-image statistic (the mean of per-image 0/1 errors is the error rate), over
the val images and, with several seeds, over the seeds too.

Values are (images,) or (seeds, images), every seed evaluated on the same images. The val images
are resampled by a percentile bootstrap: each resample draws the images with replacement (the
same image indices for every seed) and takes the mean over the seeds and the drawn images. With
several seeds, the seeds are a small sample of the training noise (seed, thread count, the order
of floating-point sums): their part of the interval is a t interval of the mean of the per-seed
values (n - 1 degrees of freedom; resampling 3 seeds by a bootstrap would make it 2.7 times too
narrow), added to the images' part in quadrature, on each side. A paired interval resamples two
arrays (same seeds, same images) with the same indices and takes the difference of their means,
seed by seed: what the two share (hard images, a good seed) cancels. Resampling uses a fixed seed,
so the same values always give the same interval. An interval never leaves the range its mean can
take (a mean lies between the smallest and the largest value): widened by the seeds' t half-width,
an error rate near 0% would otherwise reach below 0.

Resamples are drawn in chunks of at most `CHUNK_BYTES` of indices and gathered values, so
50,000 ImageNet val images x 2,000 resamples never holds more than ~100 MB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import t as t_distribution

RESAMPLES = 2000
CONFIDENCE = 0.95
RESAMPLING_SEED = 0
CHUNK_BYTES = 64 * 2**20
"""Working memory of one chunk of resamples: its int64 image indices and one seed's gathered float64 values."""


def _seeds_by_images(values: np.ndarray | Sequence) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"bootstrap values must be (images,) or (seeds, images) and non-empty, got shape {np.shape(values)}")
    return array


def chunk_resamples(images: int, budget: int = CHUNK_BYTES) -> int:
    """How many resamples are drawn at once: each holds `images` indices and gathered values (16 bytes each)."""
    return max(1, budget // (16 * images))


def bootstrap_means(arrays: Sequence[np.ndarray | Sequence], resamples: int = RESAMPLES, seed: int = RESAMPLING_SEED) -> np.ndarray:
    """The mean of each array (over its seeds and images) in each resample of the images, the same
    resampled images for all arrays: (len(arrays), resamples). Every array is (images,) or
    (seeds, images), all of one shape."""
    stacked = [_seeds_by_images(array).mean(axis=0) for array in _same_shape(arrays)]
    images = stacked[0].shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((len(stacked), resamples))
    step = chunk_resamples(images)
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        drawn = rng.integers(0, images, size=(count, images))
        for k, values in enumerate(stacked):
            means[k, start : start + count] = values[drawn].mean(axis=1)
    return means


def _same_shape(arrays: Sequence[np.ndarray | Sequence]) -> list[np.ndarray]:
    stacked = [_seeds_by_images(array) for array in arrays]
    if len({array.shape for array in stacked}) != 1:
        raise ValueError(f"bootstrapped arrays must share their seeds and images, got shapes {[a.shape for a in stacked]}")
    return stacked


def seed_half_width(per_seed: np.ndarray, confidence: float = CONFIDENCE) -> float:
    """The half-width of the t interval of the mean of per-seed values (0 for one seed: no estimate of training noise)."""
    per_seed = np.asarray(per_seed, dtype=np.float64)
    if per_seed.size < 2:
        return 0.0
    return float(t_distribution.ppf(0.5 + confidence / 2, per_seed.size - 1) * per_seed.std(ddof=1) / np.sqrt(per_seed.size))


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap samples (the percentile method)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _interval(per_seed: np.ndarray, resampled: np.ndarray, confidence: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """The interval of a mean over seeds and images: the images' percentile interval around the mean,
    widened on each side by the seeds' t half-width (in quadrature), kept within `bounds` (the
    values the mean can take)."""
    mean = float(per_seed.mean())
    low, high = percentile_interval(resampled, confidence)
    seeds = seed_half_width(per_seed, confidence)
    low, high = mean - float(np.hypot(mean - low, seeds)), mean + float(np.hypot(high - mean, seeds))
    return max(low, bounds[0]), min(high, bounds[1])


def bootstrap_interval(
    values: np.ndarray | Sequence, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = RESAMPLING_SEED
) -> tuple[float, float]:
    """The interval of the mean of `values`: (images,) over the images, (seeds, images) over both."""
    return bootstrap_intervals([values], confidence, resamples, seed)[0]


def bootstrap_intervals(
    arrays: Sequence[np.ndarray | Sequence], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = RESAMPLING_SEED
) -> list[tuple[float, float]]:
    """`bootstrap_interval` of several arrays of one shape (top-1 and top-5 errors) from one set of resamples."""
    arrays = _same_shape(arrays)
    resampled = bootstrap_means(arrays, resamples, seed)
    return [_interval(array.mean(axis=1), means, confidence, (array.min(), array.max())) for array, means in zip(arrays, resampled)]


def paired_bootstrap_interval(
    first: np.ndarray | Sequence,
    second: np.ndarray | Sequence,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = RESAMPLING_SEED,
) -> tuple[float, float]:
    """The interval of mean(first) - mean(second), both resampled with the same images, and the
    seeds' part from the per-seed differences."""
    first, second = _same_shape([first, second])
    means = bootstrap_means([first, second], resamples, seed)
    bounds = (first.min() - second.max(), first.max() - second.min())
    return _interval(first.mean(axis=1) - second.mean(axis=1), means[0] - means[1], confidence, bounds)


def error_interval_fields(top1_errors: np.ndarray, top5_errors: np.ndarray) -> dict[str, float]:
    """A results row's interval columns (in %) from per-image 0/1 errors, (images,) or (seeds, images)."""
    (low1, high1), (low5, high5) = bootstrap_intervals([top1_errors, top5_errors])
    return {
        "top1_err_lo": round(100 * low1, 3),
        "top1_err_hi": round(100 * high1, 3),
        "top5_err_lo": round(100 * low5, 3),
        "top5_err_hi": round(100 * high5, 3),
    }


def binomial_interval(error_percent: float, images: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval (in %) of an error rate measured on `images` images, from the rate alone:
    for the per-epoch validation, which keeps counts, not per-image errors."""
    from scipy.stats import norm

    if images <= 0:
        return 0.0, 100.0
    z, p = norm.ppf(0.5 + confidence / 2), error_percent / 100.0
    centre = (p + z * z / (2 * images)) / (1 + z * z / images)
    half = z * np.sqrt(p * (1 - p) / images + z * z / (4 * images * images)) / (1 + z * z / images)
    low = 0.0 if p == 0 else max(0.0, centre - half)  # exact at the ends, where rounding would leave 1e-15
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return 100.0 * low, 100.0 * high
