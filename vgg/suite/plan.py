"""Experiment files -> specs: the catalogue of training runs (`experiments/runs.toml`), each table's evaluations,
fusions and ablations (`experiments/<table>.toml`), the training runs an experiment needs in init order (a DAG
through their init parents), and their seeds.

Each run trains once per profile and seed into RUNS/<profile>/<run id> (seed 0) or RUNS/<profile>/<run id>-seed<k>;
a seed's init chain stays within the seed (B-256-seed1 starts from A-256-seed1).

An ablation compares entries (evaluations, or fusions `{ fusion = [runs], method = ... }`) in pairs, each the
difference entry - reference on the same val images. `evaluation = [...]` is one group of entries, `groups =
[[...], [...]]` several; `pairs` says how each group pairs up: "baseline" (default: each entry vs the group's
first), "successive" (each vs the one before), "all" (each vs every one before it), "best-member" (each fusion
vs its member with the lowest top-1 error in our results, which only the results can tell).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

from vgg.data.transforms import ScaleRange
from vgg.evaluation.protocols import METHODS
from vgg.nets.configs import get_config, has_lrn
from vgg.nets.models import FREEZE_CHOICES
from vgg.recipe.profiles import PROFILES_FILE
from vgg.runtime.toml_tables import check_table, read_toml_file, toml_value
from vgg.suite.experiment_keys import (
    ABLATION_FUSION_KEYS, ABLATION_KEYS, CLASSES_KEYS, EVALUATION_KEYS, EXPERIMENT_KEYS, FUSION_KEYS, HOW_EVALUATED, PAIRS, RUN_TABLE_KEYS,
)
from vgg.suite.localisation_plan import LocalisationComparison, LocalisationSpec, localisation_comparisons, localisation_specs
from vgg.suite.transfer_plan import TransferPlan, transfer_plan
from vgg.training.starting_weights import PARENT_PREFIX, InitSource, init_words

EXPERIMENTS_DIR = PROFILES_FILE.parent
RUNS_FILE = EXPERIMENTS_DIR / "runs.toml"
NOT_EXPERIMENTS = ("runs", "profiles", "pretrained")
"""The files of experiments/ that are not experiments (the run catalogue, the profiles, the published weights)."""
TABLES = tuple(sorted((path.stem for path in EXPERIMENTS_DIR.glob("*.toml") if path.stem not in NOT_EXPERIMENTS),
                      key=lambda name: (not name.startswith("table"), int(name[5:]) if name[5:].isdigit() else 0, name)))
"""The experiments, one per file of experiments/: the paper's tables, then the ablations (the Makefile lists them the same way)."""


def seeded_id(run_id: str, seed: int) -> str:
    """The folder name of run `run_id` trained with `seed`: the id itself for seed 0, `<id>-seed<k>` otherwise."""
    return run_id if seed == 0 else f"{run_id}-seed{seed}"


@dataclass(frozen=True)
class RunSpec:
    """One training run of the catalogue (seed 0), or of its expansion over seeds."""

    id: str
    config: str
    train_scale: str
    init: str
    seed: int = 0
    freeze: str = "none"  # "features": a fine-tune that trains the FC layers only
    lrn_alpha: float | None = None  # nets with LRN: PyTorch's alpha (None: the model's default)
    regression: str = "none"  # Appendix A: "scr" or "pcr", a localisation net fine-tuned from its init's classification net

    @property
    def parent(self) -> str | None:
        """The id of the run this one starts from (`init = "from:<run id>"`), None for a random init."""
        source = InitSource.parse(self.init)
        return source.where if source.kind == "parent" else None

    @property
    def scale(self) -> ScaleRange:
        return ScaleRange.parse(self.train_scale)

    @property
    def catalog_id(self) -> str:
        """The run's id in runs.toml (without the seed suffix)."""
        return self.id.removesuffix(f"-seed{self.seed}") if self.seed else self.id

    def for_seed(self, seed: int) -> RunSpec:
        """This catalogue run trained with `seed`: its id, and its parent's, carry the seed's suffix."""
        init = PARENT_PREFIX + seeded_id(self.parent, seed) if self.parent is not None else self.init
        return replace(self, id=seeded_id(self.id, seed), init=init, seed=seed)


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation: a run, a method, test scales in paper units, flips."""

    run: str
    method: str
    scales: tuple[int, ...]
    flip: bool = True
    label: str = ""
    paper_row: str = ""

    @property
    def key(self) -> str:
        """A file-name-safe identity, for the score file."""
        return f"{self.run}__{self.method}__{'-'.join(map(str, self.scales))}__{'flip' if self.flip else 'noflip'}"

    @property
    def test_scales(self) -> str:
        return "|".join(map(str, self.scales))


@dataclass(frozen=True)
class FusionSpec:
    """Posteriors of several evaluations averaged (Table 6)."""

    label: str
    members: tuple[EvalSpec, ...]
    method: str
    paper_row: str = ""

    @property
    def run(self) -> str:
        return "+".join(member.run for member in self.members)

    @property
    def key(self) -> str:
        return "+".join(member.key for member in self.members)


Entry = Union[EvalSpec, FusionSpec]
"""What an ablation compares: an evaluation or a fusion."""


def entry_name(entry: Entry, other: Entry | None = None) -> str:
    """A short name of `entry` that tells it from `other`: its run (or fusion label), and what differs
    from an evaluation of the same run (method, test scales Q, flips)."""
    if isinstance(entry, (FusionSpec, LocalisationSpec)):
        return entry.label
    name = entry.run
    if isinstance(other, EvalSpec) and other.run == entry.run:
        if other.method != entry.method:
            name += f" {entry.method}"
        if other.scales != entry.scales:
            name += f" Q={','.join(map(str, entry.scales))}"
        if other.flip != entry.flip:
            name += " flip" if entry.flip else " no flip"
    return name


@dataclass(frozen=True)
class ComparisonPair:
    """One paired comparison: error(entry) - error(reference); reference None: the fusion's best member."""

    comparison: str
    entry: Entry
    reference: Entry | None

    @property
    def label(self) -> str:
        if self.reference is None:
            return f"{entry_name(self.entry)} vs its best member"
        return f"{entry_name(self.entry, self.reference)} vs {entry_name(self.reference, self.entry)}"


@dataclass(frozen=True)
class AblationSpec:
    """An ablation: groups of entries, paired within each group as `pairs` says."""

    name: str
    question: str
    paper: str
    groups: tuple[tuple[Entry, ...], ...]
    pairs_mode: str = "baseline"
    paper_top1_difference: float | None = None

    @property
    def entries(self) -> list[Entry]:
        """Every entry of every group, once each, in order."""
        return list({_entry_key(entry): entry for group in self.groups for entry in group}.values())

    def pairs(self) -> list[ComparisonPair]:
        """The paired comparisons, in the order the groups list them."""
        found = []
        for group in self.groups:
            if self.pairs_mode == "baseline":
                found += [(entry, group[0]) for entry in group[1:]]
            elif self.pairs_mode == "successive":
                found += list(zip(group[1:], group[:-1]))
            elif self.pairs_mode == "all":
                found += [(group[j], group[i]) for j in range(len(group)) for i in range(j)]
            else:
                found += [(entry, None) for entry in group]
        return [ComparisonPair(self.name, entry, reference) for entry, reference in found]


def _entry_key(entry: Entry) -> str:
    return f"fusion:{entry.key}:{entry.method}" if isinstance(entry, FusionSpec) else entry.key


@dataclass
class Experiment:
    """One experiment file: its evaluations, fusions and ablations."""

    name: str
    title: str
    description: str
    paper_table: int | None
    evaluations: list[EvalSpec] = field(default_factory=list)
    fusions: list[FusionSpec] = field(default_factory=list)
    ablations: list[AblationSpec] = field(default_factory=list)
    localisations: list[LocalisationSpec] = field(default_factory=list)  # Appendix A (`vgg.suite.localisation_plan`)
    classes: Entry | None = None  # the classification whose top-5 classes the dense localisation protocol localises
    comparisons: list[LocalisationComparison] = field(default_factory=list)  # paired comparisons of localisation entries
    transfer: TransferPlan | None = None  # Appendix B (`vgg.suite.transfer_plan`)

    def all_fusions(self) -> list[FusionSpec]:
        """Every fusion this experiment needs (ablation entries too), once each."""
        ablation_fusions = [e for ablation in self.ablations for e in ablation.entries if isinstance(e, FusionSpec)]
        return list({_entry_key(f): f for f in [*self.fusions, *ablation_fusions]}.values())

    def all_evaluations(self) -> list[EvalSpec]:
        """Every evaluation this experiment needs (fusion members and ablation entries too), once each."""
        found: dict[str, EvalSpec] = {}
        for spec in [
            *self.evaluations,
            *(e for ablation in self.ablations for e in ablation.entries if isinstance(e, EvalSpec)),
            *(m for fusion in self.all_fusions() for m in fusion.members),
        ]:
            found.setdefault(spec.key, spec)
        return list(found.values())


def read_toml(path: Path) -> dict:
    """An experiment file's data; a missing or malformed file is a clear error."""
    return read_toml_file(path, "experiment file", f"; known: {', '.join(TABLES)} in {EXPERIMENTS_DIR}")


def load_catalog(path: Path = RUNS_FILE) -> dict[str, RunSpec]:
    """The training runs of runs.toml, checked: known configurations, scales and parents, no cycles."""
    catalog = {}
    for run_id, table in read_toml(path).items():
        fields = check_table(f"{path} [{run_id}]", table, RUN_TABLE_KEYS)
        spec = RunSpec(
            run_id, fields["config"], str(fields["train_scale"]), fields.get("init", "random"),
            freeze=fields.get("freeze", "none"), lrn_alpha=fields.get("lrn_alpha"), regression=fields.get("regression", "none"),
        )
        if spec.freeze not in FREEZE_CHOICES:
            raise ValueError(f"{path}: run {run_id} has freeze = {spec.freeze!r}; choose one of {', '.join(FREEZE_CHOICES)}")
        try:
            get_config(spec.config)
            spec.scale.check_bounds()
        except ValueError as error:
            raise ValueError(f"{path} [{run_id}]: {error}") from None
        catalog[run_id] = spec
    for spec in catalog.values():
        _check_init(path, spec, set(catalog))
        if spec.freeze != "none" and (spec.parent is None or catalog[spec.parent].config != spec.config):
            raise ValueError(f"{path}: run {spec.id} has freeze = {spec.freeze!r}, which fine-tunes a trained net: its init must be a run of configuration {spec.config}")
        if spec.regression != "none" and (spec.parent is None or catalog[spec.parent].config != spec.config or catalog[spec.parent].regression != "none"):
            raise ValueError(f"{path}: run {spec.id} has regression = {spec.regression!r}: its init must be a classification run of configuration {spec.config} (from:<run id>)")
        if spec.lrn_alpha is not None and not has_lrn(spec.config):
            raise ValueError(f"{path}: run {spec.id} sets lrn_alpha, but configuration {spec.config} has no LRN")
        seen, current = {spec.id}, spec
        while current.parent is not None:
            if current.parent in seen:
                raise ValueError(f"{path}: the init chain of {spec.id} loops through {current.parent}")
            seen.add(current.parent)
            current = catalog[current.parent]
    return catalog


def _check_init(path: Path, spec: RunSpec, run_ids: set[str]) -> None:
    """A run's init is one of the words of `vgg.training.starting_weights` that a catalogue can use."""
    words = init_words("<run id>")
    try:
        source = InitSource.parse(spec.init)
    except ValueError:
        hints = {"gaussian": ' ("gaussian" is now written "paper")'} | {run: f" (a parent run is written {PARENT_PREFIX}{run})" for run in run_ids}
        raise ValueError(f"{path}: run {spec.id} has init = {spec.init!r}; init is {words}{hints.get(spec.init, '')}") from None
    if source.kind == "weights":
        raise ValueError(f"{path}: run {spec.id} has init = {spec.init!r}; a catalogue run's init is {words}")
    if source.kind == "parent" and source.where not in run_ids:
        raise ValueError(f"{path}: run {spec.id} starts from {spec.init!r}, but {source.where!r} is not a run of {path.name}")


def resolve_scales(kind, run: RunSpec) -> tuple[int, ...]:
    """Test scales in paper units: "single" and "multi" are the paper's sets for the run's training scale."""
    if kind == "single":
        return (run.scale.single_test_scale,)
    if kind == "multi":
        return run.scale.multi_test_scales
    if isinstance(kind, list) and kind and all(isinstance(q, int) for q in kind):
        return tuple(kind)
    raise ValueError(f"scales must be \"single\", \"multi\" or a list of integers, got {kind!r}")


def _eval_spec(entry: dict, defaults: dict, catalog: dict[str, RunSpec], where: str) -> EvalSpec:
    fields = {**defaults, **check_table(f"{where}, evaluation {toml_value(entry)}", entry, EVALUATION_KEYS)}
    run_id = fields.get("run")
    if run_id not in catalog:
        raise ValueError(f"{where}: unknown run {run_id!r}; runs are defined in {RUNS_FILE}")
    method = fields.get("method", "dense")
    if method not in METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return EvalSpec(
        run=run_id,
        method=method,
        scales=resolve_scales(fields.get("scales", "single"), catalog[run_id]),
        flip=fields.get("flip", True),
        label=fields.get("label", ""),
        paper_row=fields.get("paper_row", ""),
    )


def _fusion_spec(fields: dict, runs: list[str], catalog: dict[str, RunSpec], where: str) -> FusionSpec:
    """A fusion of `runs`, each evaluated as `fields` says (method, scales, flip)."""
    how = {key: value for key, value in fields.items() if key in HOW_EVALUATED}
    members = tuple(_eval_spec({**how, "run": run_id}, {}, catalog, where) for run_id in runs)
    if len(members) < 2:
        raise ValueError(f"{where}: fusion {fields.get('label', '+'.join(runs))!r} needs at least two runs")
    label = fields.get("label") or f"{'+'.join(runs)} {members[0].method}"
    return FusionSpec(label, members, members[0].method, fields.get("paper_row", ""))


def _ablation_spec(entry: dict, defaults: dict, catalog: dict[str, RunSpec], where: str) -> AblationSpec:
    name = entry.get("name", "?")
    where = f"{where}, ablation {name!r}"
    check_table(where, entry, ABLATION_KEYS)
    if ("evaluation" in entry) == ("groups" in entry):
        raise ValueError(f"{where}: give either evaluation = [...] (one group) or groups = [[...], ...]")
    mode = entry.get("pairs", "baseline")
    if mode not in PAIRS:
        raise ValueError(f"{where}: pairs must be one of {', '.join(PAIRS)}, got {mode!r}")

    def parse(item: dict) -> Entry:
        if "fusion" in item:
            check_table(f"{where}, fusion {toml_value(item)}", item, ABLATION_FUSION_KEYS)
            return _fusion_spec({**defaults, **item}, list(item["fusion"]), catalog, where)
        return _eval_spec(item, defaults, catalog, where)

    groups = tuple(tuple(parse(item) for item in group) for group in (entry["groups"] if "groups" in entry else [entry["evaluation"]]))
    for group in groups:
        if mode == "best-member" and not all(isinstance(e, FusionSpec) for e in group):
            raise ValueError(f"{where}: pairs = \"best-member\" compares fusions with their members; every entry must be a fusion")
        if mode != "best-member" and len(group) < 2:
            raise ValueError(f"{where}: a group needs at least two entries to compare")
    return AblationSpec(name, entry.get("question", ""), entry.get("paper", ""), groups, mode, entry.get("paper_top1_difference"))


def load_experiment(name_or_path: str | Path, catalog: dict[str, RunSpec] | None = None) -> Experiment:
    """An experiment file by table name ("table3") or path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = EXPERIMENTS_DIR / f"{name_or_path}.toml"
    catalog = catalog if catalog is not None else load_catalog()
    data = read_toml(path)
    where = str(path)
    check_table(where, data, EXPERIMENT_KEYS)
    defaults = check_table(f"{where} [defaults]", data.get("defaults", {}), HOW_EVALUATED)
    for entry in data.get("fusion", []):
        check_table(f"{where}, fusion {toml_value(entry)}", entry, FUSION_KEYS)
    experiment = Experiment(path.stem, data.get("title", path.stem), data.get("description", ""), data.get("paper_table"))
    experiment.evaluations = [_eval_spec(entry, defaults, catalog, where) for entry in data.get("evaluation", [])]
    experiment.fusions = [
        _fusion_spec({**defaults, "label": "+".join(entry["runs"]), **entry}, list(entry["runs"]), catalog, where) for entry in data.get("fusion", [])
    ]
    experiment.ablations = [_ablation_spec(entry, defaults, catalog, where) for entry in data.get("ablation", [])]
    experiment.localisations = localisation_specs(data.get("localisation", []), catalog, where)
    experiment.comparisons = localisation_comparisons(data.get("comparison", []), experiment.localisations, where)
    if "classes" in data:
        classes = check_table(f"{where} [classes]", data["classes"], CLASSES_KEYS)
        if ("run" in classes) == ("runs" in classes):
            raise ValueError(f"{where} [classes]: give run = \"...\" (one net) or runs = [...] (a fusion)")
        experiment.classes = (
            _eval_spec(classes, {}, catalog, where) if "run" in classes else _fusion_spec(classes, list(classes["runs"]), catalog, where)
        )
    experiment.transfer = transfer_plan(data, catalog, where)
    if any(spec.protocol == "dense" for spec in experiment.localisations) and experiment.classes is None:
        raise ValueError(f"{where}: the dense localisation protocol localises the top-5 classes of a [classes] entry; add one")
    return experiment


def plan_runs(experiment: Experiment, catalog: dict[str, RunSpec], seeds: int = 1, profile: str = "") -> list[RunSpec]:
    """The training runs the experiment needs, parents included, parents first; seed 0's, then each
    further seed's (ids `<run>-seed<k>`, init chains within the seed); the transfer nets' at `profile`."""
    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    ordered: list[RunSpec] = []

    def visit(run_id: str) -> None:
        spec = catalog[run_id]
        if spec.parent is not None:
            visit(spec.parent)
        if spec not in ordered:
            ordered.append(spec)

    for evaluation in experiment.all_evaluations():
        visit(evaluation.run)
    every_seed = list(ordered)
    for localisation in experiment.localisations:  # localisation is evaluated for seed 0 (`vgg.suite.localisation_runs`)
        for member in localisation.members:
            visit(member.run)
    if experiment.classes is not None and experiment.localisations:
        for member in experiment.classes.members if isinstance(experiment.classes, FusionSpec) else (experiment.classes,):
            visit(member.run)
    for run_id in experiment.transfer.runs(profile) if experiment.transfer else ():  # seed 0's (`vgg.suite.transfer_runs`)
        visit(run_id)
    seed_zero = [spec for spec in ordered if spec not in every_seed]
    return [spec.for_seed(seed) for seed in range(seeds) for spec in every_seed] + seed_zero
