"""Appendix B's descriptors cached on disk, one file per (weights, Q set, combination, flips, images): a changed
input is another file and is computed anew, never mixed with an old one; an extraction saves its rows every
`chunk` images, so a killed one resumes where it stopped, and a second `make` reads the file.

A file holds its key and its rows so far: `<dir>/<name>__<digest of the key>.pt`, complete when it has a row
per image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vgg.data.datasets import ImageList
from vgg.runtime.checkpoint import load_checkpoint, save_checkpoint

CHUNK_IMAGES = 512
"""Images between two saves of a running extraction."""


@dataclass(frozen=True)
class FeatureKey:
    """What a descriptor file depends on: the weights (by content), the scales in pixels and how they are combined,
    the flips, and the images (by their ids, in order, and the split folder)."""

    weights_sha256: str
    scales: tuple[int, ...]
    combine: str
    flip: bool
    images: str
    split: str

    @classmethod
    def of(cls, weights_sha256: str, scales, combine: str, flip: bool, images: ImageList, boxes: np.ndarray | None = None) -> FeatureKey:
        """The key of `images` (each one's `boxes` when given: VOC actions' person boxes) under these settings."""
        ids = hashlib.sha256("\n".join(images.image_ids()).encode()).hexdigest()[:16]
        if boxes is not None:
            ids += ":boxes-" + hashlib.sha256(np.ascontiguousarray(boxes, dtype=np.float64).tobytes()).hexdigest()[:16]
        return cls(weights_sha256, tuple(scales), combine, flip, f"{images.root}:{ids}", images.split)

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def cache_path(cache_dir: Path, name: str, key: FeatureKey) -> Path:
    return Path(cache_dir) / f"{name}__{key.digest}.pt"


def _rows_so_far(path: Path, key: FeatureKey) -> list[torch.Tensor]:
    if not path.exists():
        return []
    state = load_checkpoint(path, "descriptor file", damaged=f"remove {path} to compute it again")
    if state.get("key") != asdict(key) | {"scales": list(key.scales)}:
        raise ValueError(f"{path} holds descriptors of other inputs than its name says; remove it to compute them again")
    return [state["rows"]] if len(state["rows"]) else []


def cached_descriptors(
    cache_dir: Path, name: str, key: FeatureKey, images: ImageList, compute: Callable[[ImageList, range], torch.Tensor],
    chunk: int = CHUNK_IMAGES, log: Callable[[str], None] = print,
) -> torch.Tensor:
    """The (N, D) descriptors of `images` under `key`: read from the cache, computed by `compute` (on an
    `ImageList` of consecutive images, and their rows in `images`) for the rows missing, saved every `chunk` images."""
    path = cache_path(cache_dir, name, key)
    parts = _rows_so_far(path, key)
    done = sum(len(part) for part in parts)
    if done == len(images):
        return parts[0]
    if done:
        log(f"{name}: resuming at image {done} of {len(images)} ({path})")
    path.parent.mkdir(parents=True, exist_ok=True)
    state_key = asdict(key) | {"scales": list(key.scales)}
    while done < len(images):
        end = min(done + chunk, len(images))
        part = replace(images, samples=images.samples.take(list(range(done, end))), ignored_files=0)
        parts.append(compute(part, range(done, end)).float().cpu())
        done = end
        rows = torch.cat(parts)
        parts = [rows]
        save_checkpoint({"key": state_key, "rows": rows}, path)
    return parts[0]
