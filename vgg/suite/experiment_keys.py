"""What each key of the experiment files may hold: a run of runs.toml, and an experiment file's
keys, evaluations, fusions and ablations (checked by `vgg.runtime.toml_tables.check_table`)."""

from __future__ import annotations

from vgg.evaluation.protocols import METHODS
from vgg.localisation.regression import REGRESSIONS
from vgg.nets.models import FREEZE_CHOICES
from vgg.runtime.toml_tables import Key, number, positive_int, text
from vgg.training.starting_weights import init_words

PAIRS = ("baseline", "successive", "all", "best-member")
"""How an ablation pairs its groups' entries (see experiments/ablations.toml)."""

RUN_TABLE_KEYS: dict[str, Key] = {
    "config": text(required=True, expected="a string: a configuration of Table 1 (A, A-LRN, B, C, D, E, B-5x5)"),
    "train_scale": Key((str, int), 'S in paper units: 256, 384, or a jitter range "256:512"', required=True),
    "init": text(expected=f"a string: {init_words('<run id>')}"),
    "freeze": text(expected=f"a string: {' or '.join(FREEZE_CHOICES)}"),
    "lrn_alpha": number("a positive number", lambda v: v > 0),
    "regression": Key((str,), f"a string: {' or '.join(REGRESSIONS)} (Appendix A's box regression)", lambda v: v in REGRESSIONS),
}
"""What each key of a run in runs.toml may hold."""


def _tables(expected: str) -> Key:
    return Key((list,), expected, lambda v: all(isinstance(item, dict) for item in v))


def _strings(expected: str, required: bool = False) -> Key:
    return Key((list,), expected, lambda v: all(isinstance(item, str) for item in v), required)


HOW_EVALUATED: dict[str, Key] = {
    "method": text(expected=f"a string: {', '.join(METHODS)}"),
    "scales": Key((str, list), '"single", "multi" or a list of integers'),
    "flip": Key((bool,), "true or false"),
}
LABELS: dict[str, Key] = {"label": text(), "paper_row": text(expected="a string: a row of the paper's table")}
EXPERIMENT_KEYS: dict[str, Key] = {
    "title": text(),
    "description": text(),
    "paper_table": positive_int(),
    "defaults": Key((dict,), "a table of method, scales, flip"),
    "evaluation": _tables("a list of tables ([[evaluation]])"),
    "fusion": _tables("a list of tables ([[fusion]])"),
    "ablation": _tables("a list of tables ([[ablation]])"),
    "localisation": _tables("a list of tables ([[localisation]], Appendix A)"),
    "comparison": _tables("a list of tables ([[comparison]]: paired comparisons of [[localisation]] entries)"),
    "classes": Key((dict,), "a table: the classification whose top-5 classes are localised (run = ... or runs = [...], method, scales)"),
    "transfer_net": _tables("a list of tables ([[transfer_net]], Appendix B: the feature extractors)"),
    "transfer_set": _tables("a list of tables ([[transfer_set]], Appendix B: the target datasets)"),
    "transfer_comparison": _tables("a list of tables ([[transfer_comparison]], Appendix B: paired comparisons of scale settings)"),
}
"""What each key of an experiment file may hold; its entries' keys follow."""
EVALUATION_KEYS = {"run": text(required=True, expected="a string: a run of runs.toml"), **HOW_EVALUATED, **LABELS}
CLASSES_KEYS = {"run": text(expected="a string: a run of runs.toml"), "runs": _strings("a list of runs of runs.toml"), **HOW_EVALUATED}
FUSION_KEYS = {"runs": _strings("a list of runs of runs.toml", required=True), **HOW_EVALUATED, **LABELS}
ABLATION_FUSION_KEYS = {"fusion": _strings("a list of runs of runs.toml", required=True), **HOW_EVALUATED, **LABELS}
ABLATION_KEYS: dict[str, Key] = {
    "name": text(required=True),
    "question": text(),
    "paper": text(),
    "paper_top1_difference": number("a number (points of top-1 error)", lambda v: True),
    "pairs": text(expected=f"a string: {', '.join(PAIRS)}"),
    "evaluation": _tables("a list of entries ({ run = ... } or { fusion = [...] })"),
    "groups": Key((list,), "a list of lists of entries", lambda v: all(isinstance(g, list) and all(isinstance(i, dict) for i in g) for g in v)),
}
