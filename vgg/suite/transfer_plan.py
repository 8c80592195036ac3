"""Appendix B's experiment entries (experiments/table11.toml, table12.toml) -> specs.

- `[[transfer_net]]`: a feature extractor. `weights` (torchvision's vgg16, vgg19) at the paper profile, `run` (a
  run of runs.toml, trained when missing) at the others; or `stack`, nets fused by stacking their descriptors;
  or `random`, another net's architecture randomly initialised (seed 0), the floor that shows what training gave.
- `[[transfer_set]]`: a dataset of `vgg.transfer.tasks.DATASETS` with its test scales Q (paper units), how they
  combine (stack or average) and which descriptors (`image`, `image+box` for actions).
- `[[transfer_comparison]]`: a paired comparison of two scale settings of one net on the datasets named.
"""

from __future__ import annotations

from dataclasses import dataclass

from vgg.runtime.toml_tables import Key, check_table, text, toml_value
from vgg.transfer.features import COMBINE
from vgg.transfer.tasks import DATASETS

FEATURES = ("image", "image+box")
"""What describes an item: its whole image, or (actions) its whole image and its person box stacked."""
PUBLISHED_WEIGHTS = ("vgg16", "vgg19")
"""torchvision's weights of the paper's Net-D and Net-E."""
TRANSFER_COMPARISONS_FILE = "transfer_comparisons.csv"
"""The paired comparisons of Appendix B's scale settings, in the results folder (`vgg.suite.transfer_runs`)."""
WEIGHTS_PROFILE = "paper"
"""The profile at which nets with `weights` use them (the nets' own scale: 224 crops, full widths)."""


def _scales(required: bool = False) -> Key:
    return Key((list,), "a list of test scales Q in paper units", lambda v: len(v) > 0 and all(isinstance(q, int) and q > 0 for q in v), required)


def _names(expected: str) -> Key:
    return Key((list,), expected, lambda v: len(v) > 0 and all(isinstance(item, str) for item in v))


NET_KEYS: dict[str, Key] = {
    "name": text(required=True),
    "paper_row": text(expected="a string: the row of published_results.csv"),
    "weights": text(expected=f"a string: {' or '.join(PUBLISHED_WEIGHTS)} (torchvision's weights, at the paper profile)"),
    "run": text(expected="a string: a run of runs.toml (the other profiles)"),
    "stack": _names("a list of the names of other [[transfer_net]] entries"),
    "random": text(expected="a string: the name of another [[transfer_net]] entry, whose architecture is randomly initialised"),
    "row": Key((bool,), "true or false (false: a member of a stack only, with no row of its own)"),
}
SET_KEYS: dict[str, Key] = {
    "dataset": text(required=True, expected=f"a string: {', '.join(DATASETS)}"),
    "scales": _scales(required=True),
    "combine": text(required=True, expected=f"a string: {' or '.join(COMBINE)}"),
    "features": _names(f"a list of {' and '.join(FEATURES)}"),
}
SETTING_KEYS: dict[str, Key] = {"scales": _scales(required=True), "combine": text(required=True, expected=f"a string: {' or '.join(COMBINE)}")}
COMPARISON_KEYS: dict[str, Key] = {
    "name": text(required=True),
    "net": text(required=True, expected="a string: the name of a [[transfer_net]] entry"),
    "datasets": _names("a list of dataset names"),
    "entry": Key((dict,), "a table { scales = [...], combine = ... }", required=True),
    "reference": Key((dict,), "a table { scales = [...], combine = ... }", required=True),
    "paper": text(),
    "paper_difference": Key((int, float), "a number (points)"),
    "paper_direction": Key((int,), "1 (the entry is better in the paper) or -1", lambda v: v in (1, -1)),
}


@dataclass(frozen=True)
class TransferNet:
    """A feature extractor (exactly one of weights/run, stack, random)."""

    name: str
    paper_row: str = ""
    weights: str = ""
    run: str = ""
    stack: tuple[str, ...] = ()
    random: str = ""
    row: bool = True  # false: only a member of a stack, no results row of its own


@dataclass(frozen=True)
class Setting:
    """Test scales (paper units) and how their descriptors combine."""

    scales: tuple[int, ...]
    combine: str

    @property
    def text(self) -> str:
        return f"{self.combine} over Q = {{{', '.join(map(str, self.scales))}}}"


@dataclass(frozen=True)
class TransferSet:
    """A dataset with the setting its rows use, and the descriptors compared (Table 12: image, image+box)."""

    dataset: str
    setting: Setting
    features: tuple[str, ...] = ("image",)


@dataclass(frozen=True)
class TransferComparison:
    """entry - reference, two settings of one net, on each of `datasets` that the experiment evaluates."""

    name: str
    net: str
    datasets: tuple[str, ...]
    entry: Setting
    reference: Setting
    paper: str = ""
    paper_difference: float | None = None
    paper_direction: int = 0  # the sign of the paper's finding where it gives no figure

    @property
    def paper_sign(self) -> float | None:
        """The paper's difference, or its direction (+-1) where it gives none; None without either."""
        if self.paper_difference is not None:
            return float(self.paper_difference)
        return float(self.paper_direction) if self.paper_direction else None


def _setting(where: str, table: dict) -> Setting:
    fields = check_table(where, table, SETTING_KEYS)
    if fields["combine"] not in COMBINE:
        raise ValueError(f"{where}: combine = {fields['combine']!r}; choose {' or '.join(COMBINE)}")
    return Setting(tuple(fields["scales"]), fields["combine"])


def transfer_nets(entries: list[dict], catalog: dict, where: str) -> list[TransferNet]:
    """The `[[transfer_net]]` entries, checked: each one kind, runs of the catalogue, names of earlier entries."""
    nets: dict[str, TransferNet] = {}
    for entry in entries:
        fields = check_table(f"{where}, transfer_net {toml_value(entry)}", entry, NET_KEYS)
        net = TransferNet(fields["name"], fields.get("paper_row", ""), fields.get("weights", ""), fields.get("run", ""),
                          tuple(fields.get("stack", ())), fields.get("random", ""), fields.get("row", True))
        here = f"{where}: transfer_net {net.name!r}"
        kinds = [bool(net.weights or net.run), bool(net.stack), bool(net.random)]
        if sum(kinds) != 1:
            raise ValueError(f"{here}: give weights and run (a net), stack = [...] (a fusion) or random = \"<net>\", one of them")
        if (net.weights or net.run) and not (net.weights and net.run):
            raise ValueError(f"{here}: give both its published weights (weights = \"vgg16\", used at the paper profile) and its run "
                             "(run = \"D-256-512\", used at the other profiles)")
        if net.weights and net.weights not in PUBLISHED_WEIGHTS:
            raise ValueError(f"{here}: weights = {net.weights!r}; choose {' or '.join(PUBLISHED_WEIGHTS)}")
        if net.run and net.run not in catalog:
            raise ValueError(f"{here}: run {net.run!r} is not a run of runs.toml")
        for other in (*net.stack, *([net.random] if net.random else [])):
            if other not in nets or not (nets[other].run or (net.stack and nets[other].random)):
                raise ValueError(f"{here} names {other!r}, which is not an earlier [[transfer_net]] with weights and a run")
        if net.name in nets:
            raise ValueError(f"{here} is named twice")
        nets[net.name] = net
    return list(nets.values())


def transfer_sets(entries: list[dict], where: str) -> list[TransferSet]:
    """The `[[transfer_set]]` entries, checked: known datasets, once each, known combinations and features."""
    sets = []
    for entry in entries:
        fields = check_table(f"{where}, transfer_set {toml_value(entry)}", entry, SET_KEYS)
        here = f"{where}: transfer_set {fields['dataset']!r}"
        if fields["dataset"] not in DATASETS:
            raise ValueError(f"{here}: unknown dataset; choose one of {', '.join(DATASETS)}")
        features = tuple(fields.get("features", ("image",)))
        if unknown := [f for f in features if f not in FEATURES]:
            raise ValueError(f"{here}: features {unknown[0]!r}; choose {' or '.join(FEATURES)}")
        if "image+box" in features and "action" not in fields["dataset"].lower():
            raise ValueError(f"{here}: image+box features need person boxes: an action dataset")
        if any(s.dataset == fields["dataset"] for s in sets):
            raise ValueError(f"{here} is listed twice")
        setting = _setting(here, {"scales": fields["scales"], "combine": fields["combine"]})
        sets.append(TransferSet(fields["dataset"], setting, features))
    return sets


def transfer_comparisons(entries: list[dict], nets: list[TransferNet], sets: list[TransferSet], where: str) -> list[TransferComparison]:
    """The `[[transfer_comparison]]` entries, checked against the file's nets and datasets."""
    found = []
    for entry in entries:
        fields = check_table(f"{where}, transfer_comparison {toml_value(entry)}", entry, COMPARISON_KEYS)
        here = f"{where}: transfer_comparison {fields['name']!r}"
        if fields["net"] not in {net.name for net in nets}:
            raise ValueError(f"{here}: net {fields['net']!r} is not a [[transfer_net]] of this file")
        datasets = tuple(fields.get("datasets", ()))
        if unknown := [d for d in datasets if d not in {s.dataset for s in sets}]:
            raise ValueError(f"{here}: dataset {unknown[0]!r} is not a [[transfer_set]] of this file")
        found.append(TransferComparison(
            fields["name"], fields["net"], datasets, _setting(f"{here} entry", fields["entry"]), _setting(f"{here} reference", fields["reference"]),
            fields.get("paper", ""), fields.get("paper_difference"), fields.get("paper_direction", 0),
        ))
    return found


@dataclass(frozen=True)
class TransferPlan:
    """An experiment file's Appendix B entries."""

    nets: tuple[TransferNet, ...]
    sets: tuple[TransferSet, ...]
    comparisons: tuple[TransferComparison, ...]

    def runs(self, profile: str) -> list[str]:
        """The catalogue runs the nets need at `profile`: none where the published weights serve."""
        return [] if profile == WEIGHTS_PROFILE else [net.run for net in self.nets if net.run]


def transfer_plan(data: dict, catalog: dict, where: str) -> TransferPlan | None:
    """The transfer entries of an experiment file's `data` (None without any)."""
    if not any(key in data for key in ("transfer_net", "transfer_set", "transfer_comparison")):
        return None
    nets = transfer_nets(data.get("transfer_net", []), catalog, where)
    sets = transfer_sets(data.get("transfer_set", []), where)
    if not nets or not sets:
        raise ValueError(f"{where}: a transfer experiment needs both [[transfer_net]] and [[transfer_set]] entries")
    return TransferPlan(tuple(nets), tuple(sets), tuple(transfer_comparisons(data.get("transfer_comparison", []), nets, sets, where)))
