"""Reports of results against the paper: reports/<table>.md (+ .png) for Tables 3-7 and the ablations.

Each report names, in its header, the dataset, profile, date, commit and device of the rows
it shows, and the chance errors of its classes; a toy-scale (smoke or ci) report says in its
first line that its numbers are not comparable with the paper's in absolute terms and
compares the direction of each effect. Each of our errors carries its 95% bootstrap interval
over the val images (`27.0 [26.6, 27.4]`); where several seeds were run, the mean over the
seeds with its interval over seeds and images (`vgg.evaluation.statistics`) and the standard deviation across seeds
(`27.0 [26.4, 27.6] ± 0.3 (3 seeds)`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tabulate import tabulate

from vgg.runtime.checkpoint import atomic_write_figure, atomic_write_text
from vgg.suite.ablation_report import render_ablations
from vgg.suite.curves import curves_section
from vgg.suite.localisation_report import localisation_comparisons_section, render_localisation
from vgg.suite.plan import Experiment, RunSpec, load_catalog, load_experiment
from vgg.suite.published import NONE, Numbers, number, paper_numbers, paper_row_numbers, published_rows
from vgg.suite.report_parts import METRICS, ResultsView, delta, fmt, ours_cell, training_section
from vgg.suite.transfer_report import render_transfer, transfer_comparisons_section


def _plot(path: Path, labels: list[str], ours: list[dict | None], paper: list[Numbers], title: str) -> None:
    """Two panels, top-1 and top-5 error: ours with its 95% interval as an error bar, beside the paper's."""
    import matplotlib  # here: reports without a figure (and the other commands) start without matplotlib and seaborn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    figure, axes = plt.subplots(1, 2, figsize=(max(9, 1.1 * len(labels) + 3), 4.5))
    x, width = np.arange(len(labels)), 0.4
    for axis, (metric, name) in zip(axes, METRICS):
        def column(values: list[float | None]) -> np.ndarray:
            return np.array([np.nan if value is None else value for value in values], dtype=float)

        values, low, high = (column([number(row.get(f"{metric}_err{suffix}")) if row else None for row in ours]) for suffix in ("", "_lo", "_hi"))
        errors = np.nan_to_num(np.stack([values - low, high - values]), nan=0.0).clip(min=0)
        theirs = column([numbers.get(metric) for numbers in paper])
        axis.bar(x - width / 2, values, width, yerr=errors, capsize=3, label="ours (95% interval)")
        axis.bar(x + width / 2, theirs, width, label="paper")
        axis.set_xticks(x, labels, rotation=30, ha="right")
        axis.set_ylabel(f"{name} error (%)")
        axis.set_title(f"{name} error")
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    atomic_write_figure(figure, path)
    plt.close(figure)


def _scale_label(train_scale: str) -> str:
    return f"[{train_scale.replace(':', ';')}]" if ":" in train_scale else train_scale


def _error_cells(row: dict | None, ours: Numbers, paper: Numbers) -> list[str]:
    """ours [interval], paper, Δ for top-1 then top-5."""
    return [cell for metric, _ in METRICS for cell in (ours_cell(row, metric), fmt(paper.get(metric)), delta(ours.get(metric), paper.get(metric)))]


def render_evaluation_table(experiment: Experiment, view: ResultsView, catalog: dict[str, RunSpec]) -> tuple[str, list, list, list]:
    """Tables 3-5: one line per evaluation, ours beside the paper's."""
    lines, labels, ours_rows, papers = [], [], [], []
    for spec in experiment.evaluations:
        run = catalog[spec.run]
        row = view.find(spec.run, spec.method, spec.test_scales, spec.flip)
        paper = paper_numbers(spec, run.config, run.train_scale, tables=(str(experiment.paper_table),))
        lines.append([run.config, _scale_label(run.train_scale), ",".join(map(str, spec.scales)), spec.method, *_error_cells(row, view.numbers(row), paper)])
        labels.append(f"{run.config} S={_scale_label(run.train_scale)} {spec.method}" if experiment.paper_table == 5 else f"{run.config} S={_scale_label(run.train_scale)}")
        ours_rows.append(row)
        papers.append(paper)
    headers = ["ConvNet config.", "train S", "test Q", "method", "top-1 ours", "top-1 paper", "Δ", "top-5 ours", "top-5 paper", "Δ"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True), labels, ours_rows, papers


def render_fusion_table(experiment: Experiment, view: ResultsView) -> tuple[str, list, list, list]:
    """Table 6: one line per fusion."""
    lines, labels, ours_rows, papers = [], [], [], []
    for fusion in experiment.fusions:
        row = view.find_fusion(fusion)
        paper = paper_row_numbers(experiment.paper_table, fusion.paper_row, fusion.method) if fusion.paper_row else NONE
        lines.append([fusion.label, ", ".join(m.run for m in fusion.members), fusion.method, *_error_cells(row, view.numbers(row), paper)])
        labels.append(fusion.label)
        ours_rows.append(row)
        papers.append(paper)
    headers = ["Combined ConvNet models", "members (our runs)", "method", "top-1 ours", "top-1 paper", "Δ", "top-5 ours", "top-5 paper", "Δ"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True), labels, ours_rows, papers


SPANS_BOTH_TOP5_COLUMNS = "spans the top-5 val and top-5 test columns"  # the fact sheet's note on GoogLeNet's rows


def render_state_of_the_art(experiment: Experiment, view: ResultsView, catalog: dict[str, RunSpec]) -> tuple[str, list, list, list]:
    """Table 7: the paper's comparison (published numbers) with our best single net and fusion added."""
    lines, spanning = [], False
    for row in published_rows():
        if row["table"] == "7":
            notes = row["notes"]
            val = fmt(number(row["top5_err"]))
            test = next((part.split("=", 1)[1] for part in notes.split("; ") if part.startswith("top5_test_err=")), "-")
            if SPANS_BOTH_TOP5_COLUMNS in notes:
                val = test = f"{val}†"
                spanning = True
            lines.append([row["config"], "paper", fmt(number(row["top1_err"])), val, test])
    labels, ours_rows, papers = [], [], []
    entries = [(spec, spec.label or f"ours: {catalog[spec.run].config}", spec.label or catalog[spec.run].config) for spec in experiment.evaluations]
    entries += [(fusion, fusion.label, fusion.label) for fusion in experiment.fusions]
    for entry, name, label in entries:
        row = view.find_entry(entry)
        lines.append([name, f"ours ({view.profile})", ours_cell(row, "top1"), ours_cell(row, "top5"), "-"])
        labels.append(label)
        ours_rows.append(row)
        papers.append(paper_row_numbers(7, entry.paper_row, None) if entry.paper_row else NONE)
    headers = ["Method", "source", "top-1 val. error (%)", "top-5 val. error (%)", "top-5 test error (%)"]
    table = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
    if spanning:
        table += "\n\n† one number in the paper, printed across its top-5 val. and test columns."
    return table, labels, ours_rows, papers


def write_results_report(name: str | Path, profile: str, results_dir: Path, out_dir: Path, dataset: str | None = None) -> Path:
    """Render reports/<name>.md (and .png for tables) from results/<name>.csv for one profile.
    `name` is a table ("table3", "ablations") or the path of an experiment file."""
    catalog = load_catalog()
    experiment = load_experiment(name, catalog)
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{experiment.name}.md"
    if experiment.transfer:
        atomic_write_text(path, render_transfer(experiment, profile, results_dir))
        return path
    view = ResultsView(results_dir / f"{experiment.name}.csv", profile, dataset)
    curves = curves_section(results_dir, out_dir, experiment.name, profile, view.dataset, view.trained_runs(), view.classes())
    if experiment.ablations:
        localisation = localisation_comparisons_section(results_dir, profile, view.dataset) + transfer_comparisons_section(results_dir, profile)
        atomic_write_text(path, render_ablations(experiment, view, results_dir, catalog, figure=out_dir / f"{experiment.name}.png") + localisation + curves)
        return path
    if experiment.localisations:
        body = render_localisation(experiment, view, out_dir / f"{experiment.name}.png")
        atomic_write_text(path, f"{view.header(experiment)}\n{body}{training_section(view)}{curves}")
        return path
    if experiment.paper_table == 6:
        table, labels, ours, paper = render_fusion_table(experiment, view)
    elif experiment.paper_table == 7:
        table, labels, ours, paper = render_state_of_the_art(experiment, view, catalog)
    else:
        table, labels, ours, paper = render_evaluation_table(experiment, view, catalog)
    plot = out_dir / f"{experiment.name}.png"
    _plot(plot, labels, ours, paper, f"{experiment.title.split(':')[0]}: ours ({profile} profile, 95% intervals) vs paper")
    atomic_write_text(path, f"{view.header(experiment)}\n{table}\n\n![top-1 and top-5 error, ours vs paper]({plot.name})\n{training_section(view)}{curves}")
    return path
