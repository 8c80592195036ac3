"""Appendix A's experiment entries (`[[localisation]]` in experiments/table8.toml ... table10.toml) -> specs.

A localisation entry is a protocol (`centre-crop`: Table 8's, with the ground-truth class; `dense`: Tables 9
and 10's, with the top-5 classes of the file's `[classes]` entry) applied to one or more members, each a
localisation run of runs.toml tested at its own scales; several members are fused by pooling their boxes
before the merge. `[classes]` is "the best classification system" whose top-5 classes are localised
(Sect. 4.5): an evaluation (`run`) or a fusion (`runs`) as the classification tables write them.
"""

from __future__ import annotations

from dataclasses import dataclass

from vgg.localisation.protocols import PROTOCOLS
from vgg.runtime.toml_tables import Key, check_table, text, toml_value

LOCALISATION_KEYS: dict[str, Key] = {
    "label": text(required=True),
    "paper_row": text(expected="a string: the config of the paper's row in published_results.csv"),
    "protocol": text(expected=f"a string: {' or '.join(PROTOCOLS)}"),
    "members": Key((list,), "a list of { run = ..., scales = [...] }", lambda v: len(v) > 0 and all(isinstance(m, dict) for m in v), required=True),
}
COMPARISON_KEYS: dict[str, Key] = {
    "name": text(required=True),
    "entry": text(required=True, expected="a string: the label of a [[localisation]] entry of this file"),
    "reference": Key((str, list), "a label, or a list of labels (the best of them, by top-5 error)", required=True),
    "paper": text(),
}
MEMBER_KEYS: dict[str, Key] = {
    "run": text(required=True, expected="a string: a localisation run of runs.toml"),
    "scales": Key((list,), "a list of test scales Q in paper units", lambda v: len(v) > 0 and all(isinstance(q, int) and q > 0 for q in v), required=True),
}


@dataclass(frozen=True)
class BoxMember:
    """One localisation net tested at its scales (paper units)."""

    run: str
    scales: tuple[int, ...]

    def key(self, protocol: str, classes: str = "") -> str:
        """A file-name-safe identity for its box file; dense boxes depend on the classes localised."""
        scales = "-".join(map(str, self.scales))
        return f"{self.run}__box-{protocol}__{scales}" + (f"__classes-{classes}" if classes else "")


@dataclass(frozen=True)
class LocalisationSpec:
    """A row of Tables 8-10: a protocol over its members, their boxes pooled."""

    label: str
    protocol: str
    members: tuple[BoxMember, ...]
    paper_row: str = ""

    @property
    def run(self) -> str:
        return "+".join(member.run for member in self.members)

    @property
    def test_scales(self) -> str:
        return "+".join("|".join(map(str, member.scales)) for member in self.members)


def localisation_specs(entries: list[dict], catalog: dict, where: str) -> list[LocalisationSpec]:
    """The `[[localisation]]` entries of an experiment file, checked against the catalogue."""
    specs = []
    for entry in entries:
        fields = check_table(f"{where}, localisation {toml_value(entry)}", entry, LOCALISATION_KEYS)
        protocol = fields.get("protocol", "dense")
        if protocol not in PROTOCOLS:
            raise ValueError(f"{where}: localisation {fields['label']!r} has protocol {protocol!r}; choose {' or '.join(PROTOCOLS)}")
        members = []
        for member in fields["members"]:
            checked = check_table(f"{where}, localisation {fields['label']!r} member {toml_value(member)}", member, MEMBER_KEYS)
            run = catalog.get(checked["run"])
            if run is None or run.regression == "none":
                raise ValueError(f"{where}: localisation {fields['label']!r} names {checked['run']!r}, which is not a localisation run "
                                 "(regression = \"scr\" or \"pcr\") of runs.toml")
            members.append(BoxMember(checked["run"], tuple(checked["scales"])))
        if protocol == "centre-crop" and (len(members) > 1 or len(members[0].scales) > 1):
            raise ValueError(f"{where}: localisation {fields['label']!r}: the centre-crop protocol takes one member at one scale")
        specs.append(LocalisationSpec(fields["label"], protocol, tuple(members), fields.get("paper_row", "")))
    return specs


@dataclass(frozen=True)
class LocalisationComparison:
    """A paired comparison of two localisation entries of one file (`[[comparison]]`): entry - reference, the
    reference being the best (lowest top-5 error) of `references` when there are several (a fusion's members)."""

    name: str
    entry: LocalisationSpec
    references: tuple[LocalisationSpec, ...]
    paper: str = ""


def localisation_comparisons(entries: list[dict], specs: list[LocalisationSpec], where: str) -> list[LocalisationComparison]:
    """The `[[comparison]]` entries of an experiment file, their labels checked against its localisation entries."""
    by_label = {spec.label: spec for spec in specs}
    found = []
    for entry in entries:
        fields = check_table(f"{where}, comparison {toml_value(entry)}", entry, COMPARISON_KEYS)
        references = fields["reference"] if isinstance(fields["reference"], list) else [fields["reference"]]
        for label in [fields["entry"], *references]:
            if label not in by_label:
                raise ValueError(f"{where}: comparison {fields['name']!r} names {label!r}, not the label of a [[localisation]] entry "
                                 f"(labels: {', '.join(by_label)})")
        found.append(LocalisationComparison(fields["name"], by_label[fields["entry"]], tuple(by_label[r] for r in references), fields.get("paper", "")))
    return found
