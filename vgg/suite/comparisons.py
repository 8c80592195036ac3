"""Per-image errors from score files, and what they give beyond one row's error: the aggregate
of several seeds' rows (mean, std across seeds, interval over seeds and images) and the paired
comparisons of the ablations (difference, paired bootstrap interval), written to
results/comparisons.csv so that reports need no score files, with the paper's differences and
the verdicts (agrees, opposite, inconclusive). A verdict from one seed is provisional: its
interval covers the val images, not the noise of training; with several seeds the "mean" row's
interval covers both, and its verdict is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vgg.evaluation.metrics import per_image_errors
from vgg.evaluation.scores import fuse, load_scores
from vgg.evaluation.statistics import error_interval_fields, paired_bootstrap_interval
from vgg.runtime.checkpoint import git_commit, utc_timestamp
from vgg.suite.plan import AblationSpec, ComparisonPair, Entry, EvalSpec, Experiment, FusionSpec, RunSpec, entry_name
from vgg.suite.published import NONE, entry_paper_numbers, paper_difference
from vgg.suite.results_csv import MEAN_SEED, upsert_rows

COMPARISONS_FILE = "comparisons.csv"
COMPARISON_KEY = ("profile", "dataset", "comparison", "pair", "seed")
COMPARISON_FIELDS = (
    "profile",
    "dataset",
    "images",
    "comparison",
    "pair",
    "entry",
    "reference",
    "seed",
    "seeds",
    "top1_diff",
    "top1_diff_lo",
    "top1_diff_hi",
    "top5_diff",
    "top5_diff_lo",
    "top5_diff_hi",
    "paper_top1_diff",
    "paper_top5_diff",
    "top1_verdict",
    "top5_verdict",
    "provisional",
    "entry_top1_err",
    "reference_top1_err",
    "entry_top5_err",
    "reference_top5_err",
    "git_commit",
    "date",
)
"""Columns of results/comparisons.csv: differences (entry - reference) and their 95% paired intervals in %,
the paper's differences, the verdicts, and whether they are provisional (one seed)."""
METRIC_NAMES = ("top1", "top5")

AGREES = "agrees with the paper"
OPPOSITE = "opposite to the paper"
INCONCLUSIVE = "inconclusive at this size"
NO_PAPER = "no paper figure"


def upsert_comparisons(results_dir: Path, rows: list[dict]) -> Path:
    """Upsert comparison rows into RESULTS/comparisons.csv (keyed by profile, dataset, comparison, pair, seed)."""
    path = Path(results_dir) / COMPARISONS_FILE
    upsert_rows(path, rows, key=COMPARISON_KEY, fields=COMPARISON_FIELDS)
    return path


def is_provisional(seeds: int) -> bool:
    """Whether a verdict over `seeds` seeds is provisional: one seed's interval does not cover training noise."""
    return seeds < 2


def paper_differences(ablation: AblationSpec, pair: ComparisonPair, reference: Entry | None, catalog: dict[str, RunSpec]) -> dict[str, float | None]:
    """The paper's entry - reference difference of a pair, top-1 and top-5 (None where it gives none)."""
    mine = entry_paper_numbers(pair.entry, catalog)
    theirs = entry_paper_numbers(reference, catalog) if reference is not None else NONE
    return {metric: paper_difference(mine, theirs, metric, ablation.paper_top1_difference) for metric in METRIC_NAMES}


def verdict(low: float, high: float, paper: float | None) -> str:
    """Our paired interval of a difference against the paper's difference: agrees (excludes 0, the
    paper's sign), opposite (excludes 0, the other sign), inconclusive (contains 0); no paper
    figure where the paper gives none or a difference of exactly 0 (no direction to agree with)."""
    if paper is None or paper == 0:
        return NO_PAPER
    if low <= 0 <= high:
        return INCONCLUSIVE
    return AGREES if (low > 0) == (paper > 0) else OPPOSITE


@dataclass(frozen=True)
class SeedErrors:
    """Per-image 0/1 errors of one evaluation or fusion: top-1 and top-5, each (seeds, images)."""

    top1: np.ndarray
    top5: np.ndarray
    image_ids: list[str]

    @property
    def top1_err(self) -> float:
        return float(100 * self.top1.mean())


def load_errors(paths_by_seed: list[list[Path]]) -> SeedErrors:
    """The per-image errors of each seed's score file (one path), or of the fusion of several."""
    top1, top5, ids = [], [], None
    for paths in paths_by_seed:
        if len(paths) == 1:
            scores = load_scores(paths[0])
            posteriors = scores["posteriors"]
        else:
            posteriors, (scores, *_) = fuse(paths)
        if ids is not None and scores["image_ids"] != ids:
            raise ValueError(f"{paths[0]} scores other images than the first seed's: evaluate every seed on the same images")
        ids = scores["image_ids"]
        errors = per_image_errors(posteriors, scores["labels"])
        top1.append(errors[0])
        top5.append(errors[1])
    return SeedErrors(np.stack(top1), np.stack(top5), ids)


def aggregate_row(rows: list[dict], errors: SeedErrors) -> dict:
    """The seed = "mean" row of one evaluation or fusion from its seeds' rows (in seed order) and
    per-image errors: the mean errors, their standard deviation across seeds (ddof 1), and the
    interval over the seeds and the images (`vgg.evaluation.statistics`)."""
    if len(rows) < 2 or errors.top1.shape[0] != len(rows):
        raise ValueError(f"an aggregate over seeds needs two or more seeds' rows and errors, got {len(rows)} and {errors.top1.shape[0]}")
    row = {**rows[0], "seed": MEAN_SEED, "seeds": len(rows), "date": utc_timestamp()}
    for name, per_image in (("top1_err", errors.top1), ("top5_err", errors.top5)):
        per_seed = 100 * per_image.mean(axis=1)
        row[name] = round(float(per_seed.mean()), 3)
        row[f"{name}_std"] = round(float(per_seed.std(ddof=1)), 3)
    row.update(error_interval_fields(errors.top1, errors.top5))
    row["checkpoint"] = " ".join(str(r.get("checkpoint", "")) for r in rows)
    row["checkpoint_sha256"] = "+".join(str(r.get("checkpoint_sha256", "")) for r in rows)
    if all(r.get("wall_s") not in (None, "") for r in rows):
        row["wall_s"] = round(sum(float(r["wall_s"]) for r in rows), 2)
    return row


def best_member(fusion: FusionSpec, errors_of: Callable[[Entry], SeedErrors]) -> EvalSpec:
    """The fusion's member with the lowest top-1 error in our results (mean over seeds; the first on ties)."""
    return min(fusion.members, key=lambda member: errors_of(member).top1_err)


def pair_rows(pair: ComparisonPair, reference: Entry, entry: SeedErrors, other: SeedErrors, context: dict, paper: dict[str, float | None]) -> list[dict]:
    """The rows of one comparison: one per seed, and with several seeds one more (seed = "mean") from the
    paired interval over the seeds and the images; differences and intervals in %, entry - reference, with the paper's
    differences (`paper`) and the verdicts."""
    if entry.image_ids != other.image_ids:
        raise ValueError(f"{pair.label}: the two sides scored other images; evaluate both on the same val images")
    seeds = entry.top1.shape[0]
    names = {
        "pair": pair.label,
        "entry": entry_name(pair.entry, reference),
        "reference": reference.run if pair.reference is None else entry_name(reference, pair.entry),
    }
    selections = [(str(k), slice(k, k + 1)) for k in range(seeds)] + ([(MEAN_SEED, slice(None))] if seeds > 1 else [])
    rows = []
    for seed, chosen in selections:
        count = entry.top1[chosen].shape[0]
        row = {**context, "images": len(entry.image_ids), "comparison": pair.comparison, **names, "seed": seed, "seeds": count}
        row["provisional"] = is_provisional(count)
        for name in METRIC_NAMES:
            mine, theirs = getattr(entry, name)[chosen], getattr(other, name)[chosen]
            low, high = paired_bootstrap_interval(mine, theirs)
            row[f"{name}_diff"] = round(100 * (mine.mean() - theirs.mean()), 3)
            row[f"{name}_diff_lo"], row[f"{name}_diff_hi"] = round(100 * low, 3), round(100 * high, 3)
            row[f"paper_{name}_diff"] = paper[name]
            row[f"{name}_verdict"] = verdict(row[f"{name}_diff_lo"], row[f"{name}_diff_hi"], paper[name])
            row[f"entry_{name}_err"] = round(100 * mine.mean(), 3)
            row[f"reference_{name}_err"] = round(100 * theirs.mean(), 3)
        rows.append(row)
    return rows


def comparison_rows(experiment: Experiment, errors_of: Callable[[Entry], SeedErrors], context: dict, catalog: dict[str, RunSpec]) -> list[dict]:
    """Every paired comparison of the experiment's ablations; `errors_of` gives an entry's per-image
    errors over the seeds, `context` the rows' profile, dataset and provenance."""
    context = {**context, "git_commit": git_commit(), "date": utc_timestamp()}
    rows = []
    for ablation in experiment.ablations:
        for pair in ablation.pairs():
            reference = pair.reference if pair.reference is not None else best_member(pair.entry, errors_of)
            paper = paper_differences(ablation, pair, reference, catalog)
            rows += pair_rows(pair, reference, errors_of(pair.entry), errors_of(reference), context, paper)
    return rows
