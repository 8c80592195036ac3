"""Appendix B's descriptors cached on disk, one file per (weights, Q set, combination, flips, images): a changed
input is another file and is computed anew, never mixed with an old one; an extraction saves its rows every
`chunk` images, so a killed one resumes where it stopped, and a second `make` reads the file.

A file holds its key and its rows: `<dir>/<name>__<digest of the key>.pt`, written when every image has its row;
until then each chunk of rows waits in `<name>__<digest>.from<first row>.pt`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vgg.data.datasets import ImageList
from vgg.runtime.checkpoint import load_checkpoint, save_checkpoint
from vgg.training.identity import digest

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
        return digest(asdict(self))


def cache_path(cache_dir: Path, name: str, key: FeatureKey) -> Path:
    return Path(cache_dir) / f"{name}__{key.digest}.pt"


def _part_path(path: Path, start: int) -> Path:
    """Where the rows from `start` on of an unfinished extraction are kept until it completes."""
    return path.with_name(f"{path.stem}.from{start:09d}.pt")


def _read(path: Path, key: FeatureKey) -> torch.Tensor:
    state = load_checkpoint(path, "descriptor file", damaged=f"remove {path} to compute it again")
    if state.get("key") != _state_key(key):
        raise ValueError(f"{path} holds descriptors of other inputs than its name says; remove it to compute them again")
    return state["rows"]


def _state_key(key: FeatureKey) -> dict:
    return asdict(key) | {"scales": list(key.scales)}


def cached_descriptors(
    cache_dir: Path, name: str, key: FeatureKey, images: ImageList, compute: Callable[[ImageList, range], torch.Tensor],
    chunk: int = CHUNK_IMAGES, log: Callable[[str], None] = print,
) -> torch.Tensor:
    """The (N, D) descriptors of `images` under `key`: read from the cache, else computed by `compute` (on an
    `ImageList` of consecutive images, and their rows in `images`) `chunk` images at a time, each chunk saved in a
    file of its own (a killed extraction resumes after its last whole chunk), joined into one file at the end."""
    path = cache_path(cache_dir, name, key)
    if path.exists():
        rows = _read(path, key)
        if len(rows) == len(images):
            return rows
        raise ValueError(f"{path} holds {len(rows)} descriptors for {len(images)} images; remove it to compute them again")
    parts: list[torch.Tensor] = []
    while _part_path(path, sum(map(len, parts))).exists() and sum(map(len, parts)) < len(images):
        parts.append(_read(_part_path(path, sum(map(len, parts))), key))
    done = sum(map(len, parts))
    if done:
        log(f"{name}: resuming at image {done} of {len(images)} ({path.parent})")
    path.parent.mkdir(parents=True, exist_ok=True)
    while done < len(images):
        end = min(done + chunk, len(images))
        part = replace(images, samples=images.samples.take(list(range(done, end))), ignored_files=0)
        parts.append(compute(part, range(done, end)).float().cpu())
        save_checkpoint({"key": _state_key(key), "rows": parts[-1]}, _part_path(path, done))
        done = end
    rows = torch.cat(parts) if parts else torch.empty(0)
    save_checkpoint({"key": _state_key(key), "rows": rows}, path)
    for stale in path.parent.glob(f"{path.stem}.from*.pt"):
        stale.unlink()
    return rows
