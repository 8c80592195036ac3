"""Score files: an evaluation's per-image posteriors (`EvalResult`), saved (`evaluate --save-scores`) and loaded
again, and the fusion of several nets' score files into one results row (Table 6).
"""

from __future__ import annotations

from pathlib import Path
from dataclasses import dataclass

import torch

from vgg.data.datasets import ImageList
from vgg.evaluation.metrics import error_percent, interval_fields, topk_correct
from vgg.runtime.checkpoint import DAMAGED, git_commit, load_checkpoint, save_checkpoint, utc_timestamp

SCORES_FORMAT = 1


@dataclass
class EvalResult:
    """An evaluation's per-image posteriors (what a score file holds) and its errors."""

    posteriors: torch.Tensor  # (N, K) in dataset order
    labels: torch.Tensor
    image_ids: list[str]
    top1_err: float
    top5_err: float
    wall_s: float
    skipped: list[str]
    device: str
    precision: str = "fp32"  # what the protocol computed in (bf16 only under CUDA autocast)


def save_scores(path: Path | str, result: EvalResult, images: ImageList, provenance: dict) -> None:
    """Per-image posteriors with the dataset, classes, image ids and labels, for fusion and paired
    comparisons. Kept in float32 (200 MB for ImageNet's 50,000 x 1,000): rounding to float16 broke
    near-ties and gave errors other than the results row's, which is computed from these posteriors."""
    state = {
        "format": SCORES_FORMAT,
        "dataset": str(images.root),
        "classes": list(images.classes),
        "image_ids": result.image_ids,
        "labels": result.labels,
        "posteriors": result.posteriors.to(torch.float32),
        "provenance": {key: str(value) for key, value in provenance.items()},
    }
    save_checkpoint(state, Path(path))


def computed_in_bf16(provenance: dict) -> bool:
    """Whether a score file's posteriors came (even in part: an average's precision reads "fp32+bf16")
    from bf16 autocast: as recorded, or for files from before the precision was recorded, whether they
    were computed on CUDA (always in bf16 then)."""
    recorded = provenance.get("precision") or ("bf16" if provenance.get("device", "").startswith("cuda") else "fp32")
    return "bf16" in recorded.split("+")


def scores_result(state: dict) -> EvalResult:
    """The evaluation a loaded score file holds (its errors computed again from its posteriors)."""
    provenance = state["provenance"]
    posteriors, labels = state["posteriors"], state["labels"]
    top1, top5 = topk_correct(posteriors, labels)
    return EvalResult(
        posteriors=posteriors, labels=labels, image_ids=list(state["image_ids"]), top1_err=error_percent(top1, len(labels)),
        top5_err=error_percent(top5, len(labels)), wall_s=float(provenance.get("wall_s") or 0.0), skipped=[],
        device=provenance.get("device", ""), precision=provenance.get("precision") or ("bf16" if computed_in_bf16(provenance) else "fp32"),
    )


def load_scores(path: Path | str) -> dict:
    """A score file written by `save_scores`."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"score file {path} {problem} (python -m vgg evaluate --save-scores FILE writes them)")
    state = load_checkpoint(path, "score file", damaged=f"it was {DAMAGED}: write it again with python -m vgg evaluate --save-scores FILE")
    if state.get("format") != SCORES_FORMAT or "posteriors" not in state:
        raise ValueError(f"{path} is not a score file (python -m vgg evaluate --save-scores writes them)")
    return state


def check_distinct_files(paths: list[Path | str]) -> None:
    """Refuse a score file given twice, by the same path or by two paths to one file: fusion averages
    distinct members, and a repeat would count one net twice."""
    seen: dict[Path, Path | str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            first = seen[resolved]
            if str(first) == str(path):
                named = f"score file {path} is given twice"
            else:
                named = f"score files {first} and {path} are the same file"
            raise ValueError(f"{named}: a fusion averages distinct nets, so give each score file once")
        seen[resolved] = path


def fuse(paths: list[Path | str]) -> tuple[torch.Tensor, list[dict]]:
    """Average the posteriors of several score files over the same images: (posteriors, the files
    loaded, each once)."""
    if len(paths) < 2:
        raise ValueError("fusion needs at least two score files")
    check_distinct_files(paths)
    members = [load_scores(path) for path in paths]
    first = members[0]
    for path, member in zip(paths[1:], members[1:]):
        if member["classes"] != first["classes"]:
            raise ValueError(f"{path} scores other classes than {paths[0]}")
        if member["image_ids"] != first["image_ids"] or not torch.equal(member["labels"], first["labels"]):
            raise ValueError(
                f"{path} scores other images than {paths[0]} ({len(member['image_ids'])} vs {len(first['image_ids'])}, "
                f"datasets {member['dataset']} and {first['dataset']}): evaluate every member on the same images"
            )
    for i, member in enumerate(members):
        for j in range(i):
            if torch.equal(member["posteriors"], members[j]["posteriors"]):
                raise ValueError(
                    f"score files {paths[j]} and {paths[i]} hold identical posteriors (one net evaluated the same way, or a copy): "
                    "a fusion averages distinct evaluations, so give each once"
                )
    posteriors = torch.stack([member["posteriors"].float() for member in members]).mean(dim=0)
    return posteriors, members


def fusion_row(paths: list[Path | str]) -> dict:
    """The results row of a fusion of saved score files."""
    posteriors, loaded = fuse(paths)
    first, members = loaded[0], [member["provenance"] for member in loaded]
    top1, top5 = topk_correct(posteriors, first["labels"])

    def joined(name: str, unique: bool = False) -> str:
        values = [m.get(name, "?") for m in members]
        return "+".join(dict.fromkeys(values) if unique else values)

    return {
        "profile": joined("profile", unique=True),
        "dataset": joined("dataset", unique=True),
        "dataset_images": joined("dataset_images", unique=True),
        "classes": len(first["classes"]),
        "run": joined("run"),
        "seed": "+".join(dict.fromkeys(m.get("seed") or "0" for m in members)),
        "config": joined("config"),
        "train_scale": joined("train_scale"),
        "method": joined("method", unique=True),
        "precision": joined("precision", unique=True),
        "test_scales": joined("test_scales", unique=True),
        "flip": joined("flip", unique=True),
        "dense_softmax": joined("dense_softmax", unique=True),
        "top1_err": round(error_percent(top1, len(first["labels"])), 3),
        "top5_err": round(error_percent(top5, len(first["labels"])), 3),
        **interval_fields(posteriors, first["labels"]),
        "images": len(first["labels"]),
        "checkpoint": " ".join(m.get("checkpoint", "?") for m in members),
        "checkpoint_sha256": joined("checkpoint_sha256"),
        "git_commit": git_commit(),
        "date": utc_timestamp(),
        "fusion": "yes",
    }
