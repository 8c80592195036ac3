"""The paper's published errors (vgg/paper/published_results.csv), looked up for our evaluations,
fusions and the paired comparisons of the ablations."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from vgg.suite.plan import EvalSpec, FusionSpec, RunSpec
from vgg.training.starting_weights import RANDOM_SCHEMES

PAPER_DIR = Path(__file__).resolve().parent.parent / "paper"
"""vgg/paper: the paper's published numbers, and where each comes from (its README)."""
PUBLISHED = PAPER_DIR / "published_results.csv"
SINGLE_NET_TABLES = ("3", "4", "5")


@dataclass(frozen=True)
class Numbers:
    """Top-1 and top-5 error in % (None: not given, or not run yet)."""

    top1: float | None
    top5: float | None

    def get(self, metric: str) -> float | None:
        """The error named "top1" or "top5"."""
        return self.top1 if metric == "top1" else self.top5


NONE = Numbers(None, None)


@cache
def _published() -> tuple[dict[str, str], ...]:
    with open(PUBLISHED, newline="") as handle:
        return tuple(csv.DictReader(handle))


def published_rows() -> list[dict[str, str]]:
    """The rows of published_results.csv."""
    return [dict(row) for row in _published()]


def number(text: str | None) -> float | None:
    """A CSV cell as a number (None when empty or not a number)."""
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def paper_numbers_for(config: str, train_scale: str, test_scales: str, method: str, tables: tuple[str, ...] = SINGLE_NET_TABLES) -> Numbers:
    """The paper's errors for a single net, matched on config, S (e.g. 256 or 256-512), Q ("a|b|c") and method."""
    scale = train_scale.replace(":", "-")
    for row in _published():
        if row["table"] in tables and (row["config"], row["train_scale"], row["test_scales"], row["eval_method"]) == (config, scale, test_scales, method):
            return Numbers(number(row["top1_err"]), number(row["top5_err"]))
    return NONE


def paper_numbers(spec: EvalSpec, config: str, train_scale: str, tables: tuple[str, ...] = SINGLE_NET_TABLES) -> Numbers:
    """The paper's errors for a single-net evaluation of ours."""
    return paper_numbers_for(config, train_scale, spec.test_scales, spec.method, tables)


def paper_row_numbers(table: int, label: str, method: str | None) -> Numbers:
    """The paper's errors for a named row (Tables 6 and 7), optionally of one method."""
    for row in _published():
        if row["table"] == str(table) and row["config"] == label and (method is None or row["eval_method"] in ("", method)):
            return Numbers(number(row["top1_err"]), number(row["top5_err"]))
    return NONE


def entry_paper_numbers(entry: EvalSpec | FusionSpec, catalog: dict[str, RunSpec]) -> Numbers:
    """The paper's errors for an ablation entry: a single net's (Tables 3-5, as evaluated: Table 4's
    multi-scale row for dense, Table 5's for multi-crop), or a fusion's (its Table 6 row)."""
    if isinstance(entry, FusionSpec):
        return paper_row_numbers(6, entry.paper_row, entry.method) if entry.paper_row else NONE
    run = catalog[entry.run]
    # the paper's numbers belong to its own init chain (random A, B-E from A), not to the init ablation's variants
    if run.init in RANDOM_SCHEMES:
        return NONE
    return paper_numbers(entry, run.config, run.train_scale)


def paper_difference(entry: Numbers, reference: Numbers, metric: str, stated: float | None = None) -> float | None:
    """The paper's entry - reference difference in `metric` ("top1"/"top5"), to 0.1; for top-1,
    `stated` (a difference the paper states in words) where it gives no numbers."""
    mine, theirs = entry.get(metric), reference.get(metric)
    if mine is not None and theirs is not None:
        return round(mine - theirs, 1)
    return stated if metric == "top1" else None


def _note_texts(notes: str) -> dict[str, str]:
    """The `name=value` pairs of a published row's notes ("val=26.9; test=25.3"), values as printed."""
    pairs = (part.strip().partition("=") for part in notes.split(";"))
    return {name.strip(): value.strip() for name, _, value in pairs if value}


def _note_values(notes: str) -> dict[str, float | None]:
    """`_note_texts` with the values as numbers ("-": None)."""
    return {name: number(value) for name, value in _note_texts(notes).items()}


def localisation_paper_numbers(table: int, paper_row: str) -> dict[str, float | None]:
    """The paper's localisation error (%) of a row of Tables 8-10 by its `paper_row`: Table 8's
    ground-truth-class error as `value`; Tables 9 and 10's top-5 localisation error as `val` and `test`.
    Table 9's rows are named "<S>/<Q>" (e.g. "384/352|384") or "fusion"."""
    for row in _published():
        if row["table"] != str(table):
            continue
        if table == 9:
            name = "fusion" if row["config"].startswith("fusion") else f"{row['train_scale']}/{row['test_scales']}"
        else:
            name = row["config"]
        if name == paper_row:
            return _note_values(row["notes"])
    return {}


def transfer_paper_values(table: int) -> dict[tuple[str, str], str]:
    """Appendix B's published values (Tables 11, 12) as printed, by (row, column): Table 11's columns are its
    datasets ("VOC-2007 (mAP)", "Caltech-101 (mean class recall)"), Table 12's one column is "mAP"."""
    found = {}
    for row in _published():
        if row["table"] != str(table):
            continue
        parts = _note_texts(row["notes"])
        found[(row["config"], parts.get("dataset", "mAP"))] = parts.get("value", "")
    return found
