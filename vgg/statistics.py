"""Percentile bootstrap intervals of a mean per-image statistic (the mean of per-image 0/1
errors is the error rate), over the val images and, with several seeds, over the seeds too.

Values are (images,) or (seeds, images). With one seed, each resample draws the images with
replacement. With several (a two-level, hierarchical bootstrap), each resample draws the
seeds with replacement, then the images with replacement, the same image indices for every
seed drawn (all seeds are evaluated on the same images); its statistic is the mean over the
drawn seeds of each one's mean over the drawn images. Resampling uses a fixed seed, so the
same values always give the same interval. A paired interval resamples two arrays (same
seeds, same images) with the same indices and takes the percentiles of the difference of
their means: what the two share (hard images, a good seed) cancels.

Resamples are drawn in chunks of at most `CHUNK_BYTES` of indices and gathered values, so
50,000 ImageNet val images x 2,000 resamples never holds more than ~100 MB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def bootstrap_means(
    arrays: Sequence[np.ndarray | Sequence], resamples: int = RESAMPLES, seed: int = RESAMPLING_SEED
) -> np.ndarray:
    """The mean of each array in each resample, the same resampled seeds and images for all arrays:
    (len(arrays), resamples). Every array is (images,) or (seeds, images), all of one shape."""
    stacked = [_seeds_by_images(array) for array in arrays]
    if len({array.shape for array in stacked}) != 1:
        raise ValueError(f"bootstrapped arrays must share their seeds and images, got shapes {[a.shape for a in stacked]}")
    seeds, images = stacked[0].shape
    rng = np.random.default_rng(seed)
    means = np.empty((len(stacked), resamples))
    step = chunk_resamples(images)
    for start in range(0, resamples, step):
        count = min(step, resamples - start)
        drawn_seeds = rng.integers(0, seeds, size=(count, seeds)) if seeds > 1 else None
        drawn_images = rng.integers(0, images, size=(count, images))
        for k, values in enumerate(stacked):
            per_seed = np.stack([row[drawn_images].mean(axis=1) for row in values])  # (seeds, count)
            if drawn_seeds is None:
                means[k, start : start + count] = per_seed[0]
            else:
                means[k, start : start + count] = per_seed[drawn_seeds, np.arange(count)[:, None]].mean(axis=1)
    return means


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap samples (the percentile method)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(
    values: np.ndarray | Sequence, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = RESAMPLING_SEED
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` ((images,), or (seeds, images): two-level)."""
    return percentile_interval(bootstrap_means([values], resamples, seed)[0], confidence)


def bootstrap_intervals(
    arrays: Sequence[np.ndarray | Sequence], confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = RESAMPLING_SEED
) -> list[tuple[float, float]]:
    """`bootstrap_interval` of several arrays of one shape (top-1 and top-5 errors) from one set of resamples."""
    return [percentile_interval(means, confidence) for means in bootstrap_means(arrays, resamples, seed)]


def paired_bootstrap_interval(
    first: np.ndarray | Sequence,
    second: np.ndarray | Sequence,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = RESAMPLING_SEED,
) -> tuple[float, float]:
    """The interval of mean(first) - mean(second), both resampled with the same seeds and images."""
    means = bootstrap_means([first, second], resamples, seed)
    return percentile_interval(means[0] - means[1], confidence)


def error_interval_fields(top1_errors: np.ndarray, top5_errors: np.ndarray) -> dict[str, float]:
    """A results row's interval columns (in %) from per-image 0/1 errors, (images,) or (seeds, images)."""
    (low1, high1), (low5, high5) = bootstrap_intervals([top1_errors, top5_errors])
    return {
        "top1_err_lo": round(100 * low1, 3),
        "top1_err_hi": round(100 * high1, 3),
        "top5_err_lo": round(100 * low5, 3),
        "top5_err_hi": round(100 * high5, 3),
    }
