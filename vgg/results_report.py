"""Reports of results against the paper: reports/<table>.md (+ .png) for Tables 3-7 and the ablations.

Each report names, in its header, the dataset, profile, date, commit and device of the rows
it shows; a toy-scale (smoke or ci) report says in its first line that its numbers are not
comparable with the paper's in absolute terms and compares the direction of each effect.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from vgg.experiments import AblationSpec, EvalSpec, Experiment, FusionSpec, load_experiment
from vgg.results import read_rows

PUBLISHED = Path(__file__).parent / "paper" / "published_results.csv"
TOY_PROFILES = ("smoke", "ci")


@dataclass(frozen=True)
class Numbers:
    top1: float | None
    top5: float | None


NONE = Numbers(None, None)


def published_rows() -> list[dict[str, str]]:
    with open(PUBLISHED, newline="") as handle:
        return list(csv.DictReader(handle))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def paper_numbers_for(config: str, train_scale: str, test_scales: str, method: str, tables: tuple[str, ...] = ("3", "4", "5")) -> Numbers:
    """The paper's errors for a single net, matched on config, S (e.g. 256 or 256-512), Q ("a|b|c") and method."""
    scale = train_scale.replace(":", "-")
    for row in published_rows():
        if row["table"] in tables and (row["config"], row["train_scale"], row["test_scales"], row["eval_method"]) == (config, scale, test_scales, method):
            return Numbers(_number(row["top1_err"]), _number(row["top5_err"]))
    return NONE


def paper_numbers(spec: EvalSpec, config: str, train_scale: str, tables: tuple[str, ...] = ("3", "4", "5")) -> Numbers:
    """The paper's errors for a single-net evaluation of ours."""
    return paper_numbers_for(config, train_scale, spec.test_scales, spec.method, tables)


def paper_row_numbers(table: int, label: str, method: str | None) -> Numbers:
    """The paper's errors for a named row (Tables 6 and 7), optionally of one method."""
    for row in published_rows():
        if row["table"] == str(table) and row["config"] == label and (method is None or row["eval_method"] in ("", method)):
            return Numbers(_number(row["top1_err"]), _number(row["top5_err"]))
    return NONE


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _delta(ours: float | None, paper: float | None) -> str:
    return "-" if ours is None or paper is None else f"{ours - paper:+.1f}"


class ResultsView:
    """The rows of one results CSV for one profile and dataset."""

    def __init__(self, path: Path, profile: str, dataset: str | None = None):
        rows = [row for row in read_rows(path) if row.get("profile") == profile]
        datasets = sorted({row["dataset"] for row in rows})
        if not rows:
            raise ValueError(f"no {profile}-profile results in {path}: run the experiment first (make {path.stem} PROFILE={profile})")
        if dataset is None and len(datasets) > 1:
            raise ValueError(f"{path} holds {profile}-profile results for several datasets ({', '.join(datasets)}); pass --data")
        self.dataset = str(Path(dataset)) if dataset else datasets[0]
        self.profile = profile
        self.rows = [row for row in rows if row["dataset"] == self.dataset]

    def find(self, run: str, method: str, test_scales: str, flip: bool) -> dict | None:
        for row in self.rows:
            if (row["run"], row["method"], row["test_scales"], row["flip"]) == (run, method, test_scales, str(flip)):
                return row
        return None

    def find_fusion(self, fusion: FusionSpec) -> dict | None:
        """A fusion's row: its members' runs joined, its method and flips."""
        for row in self.rows:
            if (row["run"], row["method"], row["flip"]) == (fusion.run, fusion.method, str(fusion.members[0].flip)):
                return row
        return None

    def numbers(self, row: dict | None) -> Numbers:
        return NONE if row is None else Numbers(_number(row["top1_err"]), _number(row["top5_err"]))

    def header(self, experiment: Experiment) -> str:
        lines = []
        if self.profile in TOY_PROFILES:
            lines.append(
                f"> **Toy-scale run ({self.profile} profile) on a synthetic dataset: not comparable with the paper's "
                f"ImageNet numbers in absolute terms.** Compare the direction of each effect, not the values. "
                f"With the synthetic set's few classes (10 by default), top-5 error is near zero: read top-1."
            )
            lines.append("")
        lines.append(f"# {experiment.title}")
        lines.append("")
        if experiment.description:
            lines.append(experiment.description)
            lines.append("")

        def values(name: str) -> str:
            found = sorted({row.get(name, "") for row in self.rows if row.get(name)})
            return ", ".join(found) or "-"

        images = values("dataset_images")
        lines.append(f"- dataset: `{self.dataset}` ({images} val images)")
        lines.append(f"- profile: {self.profile}")
        dates = sorted({row["date"] for row in self.rows if row.get("date")})
        lines.append(f"- date: {dates[0]} to {dates[-1]}" if len(dates) > 1 else f"- date: {values('date')}")
        lines.append(f"- commit: {values('git_commit')}")
        lines.append(f"- device: {values('device')}")
        lines.append("- errors are ILSVRC-style top-1 / top-5 error in %; Δ = ours - paper")
        lines.append("")
        return "\n".join(lines)


def _plot(path: Path, labels: list[str], ours: list[float | None], paper: list[float | None], title: str) -> None:
    """Our top-5 error beside the paper's, one pair of bars per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    records = [
        {"row": label, "source": source, "top-5 error (%)": value}
        for label, mine, theirs in zip(labels, ours, paper)
        for source, value in (("ours", mine), ("paper", theirs))
        if value is not None
    ]
    sns.set_theme(style="whitegrid")
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(labels) + 2), 4))
    if records:
        sns.barplot(data=pd.DataFrame(records), x="row", y="top-5 error (%)", hue="source", ax=axis)
    axis.set_xlabel("")
    axis.set_title(title)
    plt.setp(axis.get_xticklabels(), rotation=30, ha="right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _scale_label(train_scale: str) -> str:
    return f"[{train_scale.replace(':', ';')}]" if ":" in train_scale else train_scale


def render_evaluation_table(experiment: Experiment, view: ResultsView, catalog) -> tuple[str, list, list, list]:
    """Tables 3-5: one line per evaluation, ours beside the paper's."""
    lines, labels, ours_top5, paper_top5 = [], [], [], []
    for spec in experiment.evaluations:
        run = catalog[spec.run]
        row = view.find(spec.run, spec.method, spec.test_scales, spec.flip)
        ours = view.numbers(row)
        paper = paper_numbers(spec, run.config, run.train_scale, tables=(str(experiment.paper_table),))
        lines.append(
            [run.config, _scale_label(run.train_scale), ",".join(map(str, spec.scales)), spec.method,
             _fmt(ours.top1), _fmt(paper.top1), _delta(ours.top1, paper.top1), _fmt(ours.top5), _fmt(paper.top5), _delta(ours.top5, paper.top5)]
        )
        labels.append(f"{run.config} S={_scale_label(run.train_scale)} {spec.method}" if experiment.paper_table == 5 else f"{run.config} S={_scale_label(run.train_scale)}")
        ours_top5.append(ours.top5)
        paper_top5.append(paper.top5)
    headers = ["ConvNet config.", "train S", "test Q", "method", "top-1 ours", "top-1 paper", "Δ", "top-5 ours", "top-5 paper", "Δ"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True), labels, ours_top5, paper_top5


def _fusion_lines(fusions: list[FusionSpec], view: ResultsView, table: int) -> tuple[list, list, list, list]:
    lines, labels, ours_top5, paper_top5 = [], [], [], []
    for fusion in fusions:
        ours = view.numbers(view.find_fusion(fusion))
        paper = paper_row_numbers(table, fusion.paper_row, fusion.method) if fusion.paper_row else NONE
        lines.append([fusion.label, ", ".join(m.run for m in fusion.members), fusion.method,
                      _fmt(ours.top1), _fmt(paper.top1), _delta(ours.top1, paper.top1), _fmt(ours.top5), _fmt(paper.top5), _delta(ours.top5, paper.top5)])
        labels.append(fusion.label)
        ours_top5.append(ours.top5)
        paper_top5.append(paper.top5)
    return lines, labels, ours_top5, paper_top5


def render_fusion_table(experiment: Experiment, view: ResultsView) -> tuple[str, list, list, list]:
    """Table 6: one line per fusion."""
    lines, labels, ours, paper = _fusion_lines(experiment.fusions, view, experiment.paper_table)
    headers = ["Combined ConvNet models", "members (our runs)", "method", "top-1 ours", "top-1 paper", "Δ", "top-5 ours", "top-5 paper", "Δ"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True), labels, ours, paper


def render_state_of_the_art(experiment: Experiment, view: ResultsView, catalog) -> tuple[str, list, list, list]:
    """Table 7: the paper's comparison (published numbers) with our best single net and fusion added."""
    lines = []
    for row in published_rows():
        if row["table"] == "7":
            notes = row["notes"]
            test = next((part.split("=", 1)[1] for part in notes.split("; ") if part.startswith("top5_test_err=")), "-")
            lines.append([row["config"], "paper", _fmt(_number(row["top1_err"])), _fmt(_number(row["top5_err"])), test])
    labels, ours_top5, paper_top5 = [], [], []
    for spec in experiment.evaluations:
        run = catalog[spec.run]
        ours = view.numbers(view.find(spec.run, spec.method, spec.test_scales, spec.flip))
        paper = paper_row_numbers(7, spec.paper_row, None) if spec.paper_row else NONE
        lines.append([spec.label or f"ours: {run.config}", f"ours ({view.profile})", _fmt(ours.top1), _fmt(ours.top5), "-"])
        labels.append(spec.label or run.config)
        ours_top5.append(ours.top5)
        paper_top5.append(paper.top5)
    for fusion in experiment.fusions:
        ours = view.numbers(view.find_fusion(fusion))
        paper = paper_row_numbers(7, fusion.paper_row, None) if fusion.paper_row else NONE
        lines.append([fusion.label, f"ours ({view.profile})", _fmt(ours.top1), _fmt(ours.top5), "-"])
        labels.append(fusion.label)
        ours_top5.append(ours.top5)
        paper_top5.append(paper.top5)
    headers = ["Method", "source", "top-1 val. error (%)", "top-5 val. error (%)", "top-5 test error (%)"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True), labels, ours_top5, paper_top5


def _direction(value: float | None) -> str:
    if value is None:
        return "?"
    return "lower" if value < 0 else "higher" if value > 0 else "equal"


def ablation_finding(ablation: AblationSpec, view: ResultsView, catalog) -> tuple[str, str]:
    """The ablation's table (markdown) and its finding in one sentence, from our numbers."""
    lines, ours_all, paper_all = [], [], []
    for spec in ablation.evaluations:
        run = catalog[spec.run]
        ours = view.numbers(view.find(spec.run, spec.method, spec.test_scales, spec.flip))
        # the paper's numbers belong to its own init chain (random A, B-E from A), not to the init ablation's variants
        paper = paper_numbers(spec, run.config, run.train_scale) if run.init not in ("glorot", "gaussian") else NONE
        ours_all.append(ours)
        paper_all.append(paper)
        lines.append([spec.run, spec.method, ",".join(map(str, spec.scales)), _fmt(ours.top1), _fmt(ours.top5), _fmt(paper.top1), _fmt(paper.top5)])
    table = tabulate(lines, headers=["run", "method", "test Q", "top-1 ours", "top-5 ours", "top-1 paper", "top-5 paper"], tablefmt="github", disable_numparse=True)
    base_spec, base, base_paper = ablation.evaluations[0], ours_all[0], paper_all[0]
    parts = []
    for spec, ours, paper in zip(ablation.evaluations[1:], ours_all[1:], paper_all[1:]):
        if base.top1 is None or ours.top1 is None:
            parts.append(f"{spec.run}: not run yet")
            continue
        ours_d1, ours_d5 = ours.top1 - base.top1, ours.top5 - base.top5
        name = spec.run if spec.run != base_spec.run else f"{spec.run} at Q={spec.test_scales}"
        text = f"{name} vs {base_spec.run}: {ours_d1:+.1f} top-1, {ours_d5:+.1f} top-5 on {view.profile}"
        if paper.top1 is not None and base_paper.top1 is not None:
            paper_d1, paper_d5 = paper.top1 - base_paper.top1, paper.top5 - base_paper.top5
            agree = "same direction" if _direction(ours_d1) == _direction(paper_d1) else "opposite direction"
            text += f", paper {paper_d1:+.1f} / {paper_d5:+.1f} ({agree} in top-1)"
        elif ablation.paper_top1_difference is not None:
            agree = "same direction" if _direction(ours_d1) == _direction(ablation.paper_top1_difference) else "opposite direction"
            text += f", paper {ablation.paper_top1_difference:+.1f} top-1 ({agree})"
        parts.append(text)
    return table, "; ".join(parts) + "."


def render_ablations(experiment: Experiment, view: ResultsView, catalog) -> str:
    sections = [view.header(experiment)]
    for ablation in experiment.ablations:
        table, finding = ablation_finding(ablation, view, catalog)
        sections.append(f"## {ablation.name}\n\n{ablation.question}\n\n- paper: {ablation.paper}\n- finding: {finding}\n\n{table}\n")
    return "\n".join(sections)


def write_results_report(name: str, profile: str, results_dir: Path, out_dir: Path, dataset: str | None = None) -> Path:
    """Render reports/<name>.md (and .png for tables) from results/<name>.csv for one profile."""
    from vgg.experiments import load_catalog

    catalog = load_catalog()
    experiment = load_experiment(name, catalog)
    view = ResultsView(Path(results_dir) / f"{name}.csv", profile, dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.md"
    if experiment.ablations:
        path.write_text(render_ablations(experiment, view, catalog))
        return path
    if experiment.paper_table == 6:
        table, labels, ours, paper = render_fusion_table(experiment, view)
    elif experiment.paper_table == 7:
        table, labels, ours, paper = render_state_of_the_art(experiment, view, catalog)
    else:
        table, labels, ours, paper = render_evaluation_table(experiment, view, catalog)
    plot = out_dir / f"{name}.png"
    _plot(plot, labels, ours, paper, f"{experiment.title.split(':')[0]}: top-5 error, ours ({profile}) vs paper")
    path.write_text(f"{view.header(experiment)}\n{table}\n\n![top-5 error, ours vs paper]({plot.name})\n")
    return path
