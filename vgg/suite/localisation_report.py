"""Reports of Appendix A: reports/table8.md ... table10.md from results/<table>.csv (`vgg.suite.localisation_runs`),
beside the paper's numbers, and the localisation comparisons' section of reports/ablations.md.

Table 8's error is the ground-truth-class localisation error of one centre crop (its row keeps it in both
top-1 and top-5 columns), shown with the error of a box that always covers the centre half of the image:
the floor a net must clear to have learned anything. Tables 9 and 10's is the top-5 localisation error
(the paper's), with the top-1 error beside it.
"""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from vgg.runtime.checkpoint import atomic_write_figure
from vgg.suite.comparisons import COMPARISONS_FILE
from vgg.suite.localisation_plan import LocalisationSpec
from vgg.suite.plan import Experiment
from vgg.suite.published import localisation_paper_numbers, number, published_rows
from vgg.suite.report_parts import ResultsView, delta, fmt, ours_cell
from vgg.suite.results_csv import read_rows, shown_row

LOCALISATION_PREFIX = "localisation:"
"""Comparisons of localisation entries are named so in comparisons.csv (experiments/table8.toml, table9.toml)."""


def find_row(view: ResultsView, spec: LocalisationSpec) -> dict | None:
    """A localisation entry's row (seed 0's; localisation is evaluated for seed 0)."""
    return shown_row([row for row in view.rows if (row["run"], row["method"], row["test_scales"]) == (spec.run, f"box-{spec.protocol}", spec.test_scales)])


def _baseline_cell(row: dict | None) -> tuple[str, str]:
    """The centre-half baseline's error [interval] and whether the net's error is at most half of it."""
    if row is None or not row.get("baseline_err"):
        return "-", "-"
    baseline, error = float(row["baseline_err"]), float(row["top1_err"])
    text = f"{baseline:.1f} [{float(row['baseline_err_lo']):.1f}, {float(row['baseline_err_hi']):.1f}]"
    return text, "yes" if error <= baseline / 2 else f"no ({error:.1f} > {baseline / 2:.1f})"


def render_table8(experiment: Experiment, view: ResultsView) -> tuple[str, list]:
    lines, plotted = [], []
    for spec in experiment.localisations:
        row = find_row(view, spec)
        paper = localisation_paper_numbers(8, spec.paper_row).get("value")
        ours = number(row["top1_err"]) if row else None
        baseline, learned = _baseline_cell(row)
        fine_tuned, regression = (row.get("fine_tuned", "-"), row.get("regression", "-").upper()) if row else ("-", "-")
        lines.append([spec.label, fine_tuned, regression, ours_cell(row, "top1"), fmt(paper), delta(ours, paper), baseline, learned])
        plotted.append((spec.label, row, "top1", paper))
    headers = ["row", "fine-tuned layers", "regression", "error ours [95%]", "paper", "Δ", "centre-half box [95%]", "ours <= half of it"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True), plotted


def render_table9(experiment: Experiment, view: ResultsView) -> tuple[str, list]:
    lines, plotted = [], []
    for spec in experiment.localisations:
        row = find_row(view, spec)
        paper = localisation_paper_numbers(experiment.paper_table, spec.paper_row)
        ours = number(row["top5_err"]) if row else None
        lines.append([spec.label, ours_cell(row, "top5"), fmt(paper.get("val")), fmt(paper.get("test")), delta(ours, paper.get("val")), ours_cell(row, "top1")])
        plotted.append((spec.label, row, "top5", paper.get("val")))
    if experiment.paper_table == 10:
        for published in published_rows():
            if published["table"] == "10" and published["config"] != "VGG":
                numbers = localisation_paper_numbers(10, published["config"])
                lines.append([published["config"], "-", fmt(numbers.get("val")), fmt(numbers.get("test")), "-", "-"])
    headers = ["row", "top-5 loc. error ours [95%]", "paper val", "paper test", "Δ (val)", "top-1 loc. error ours [95%]"]
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True), plotted


def _plot(path: Path, plotted: list, title: str) -> None:
    """One panel: our localisation error with its 95% interval beside the paper's, one line per row."""
    import matplotlib  # here: other reports start without matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 1.2 + 0.45 * len(plotted)))
    for y, (label, row, metric, paper) in enumerate(plotted):
        if row is not None:
            value, low, high = (float(row[f"{metric}_err{suffix}"]) for suffix in ("", "_lo", "_hi"))
            axis.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color="tab:blue", capsize=3)
        if paper is not None:
            axis.plot(paper, y, "D", color="black")
    axis.set_yticks(range(len(plotted)), [label for label, *_ in plotted], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel("localisation error (%): ours (blue, 95% interval), paper (black diamond)")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    atomic_write_figure(figure, path)
    plt.close(figure)


def render_localisation(experiment: Experiment, view: ResultsView, figure: Path) -> str:
    """The body of a Table 8-10 report: the table, its figure and what the numbers are."""
    if experiment.paper_table == 8:
        table, plotted = render_table8(experiment, view)
        note = ("Error: the share of val images whose box for the ground-truth class, from the central crop at Q = 384, has IoU <= 0.5 "
                "with every ground-truth box of that class. The centre-half box covers the middle half of each side of every image.")
    else:
        table, plotted = render_table9(experiment, view)
        classes = next((row for row in view.rows if row.get("classes_from")), {})
        note = (f"Top-5 localisation error: an image is wrong unless one of its top-5 classes (from {classes.get('classes_from', '-')}, whose "
                f"own top-5 classification error, {classes.get('classes_top5_err', '-')}%, is the floor here) is the ground truth and its "
                "merged box has IoU > 0.5 with a ground-truth box of it; top-1 counts the first class only. The paper's val and test are "
                "ILSVRC-2014's.")
    _plot(figure, plotted, f"{experiment.title.split(':')[0]}: ours ({view.profile} profile) vs paper")
    curves = ("In the learning curves below, a box regressor's val top-1 (and top-5) error is its per-epoch box error: the share of "
              "centre crops of the val subset whose box for the true class has IoU <= 0.5 with the crop's target box.")
    return f"{table}\n\n{note}\n\n![localisation error, ours vs paper]({figure.name})\n\n{curves}\n"


def localisation_comparisons_section(results_dir: Path, profile: str, dataset: str) -> str:
    """The ablations report's section on the localisation comparisons (from comparisons.csv), empty without any."""
    rows = [row for row in read_rows(Path(results_dir) / COMPARISONS_FILE)
            if row.get("comparison", "").startswith(LOCALISATION_PREFIX) and (row.get("profile"), row.get("dataset")) == (profile, dataset)]
    if not rows:
        return ""
    lines = []
    for row in rows:
        cells = []
        for metric in ("top1", "top5"):
            ours = f"{float(row[f'{metric}_diff']):+.1f} [{float(row[f'{metric}_diff_lo']):+.1f}, {float(row[f'{metric}_diff_hi']):+.1f}]"
            paper = number(row.get(f"paper_{metric}_diff"))
            cells += [ours, "-" if paper is None else f"{paper:+.1f}", row[f"{metric}_verdict"] + (" (provisional)" if row.get("provisional") == "True" else "")]
        lines.append([row["comparison"].removeprefix(LOCALISATION_PREFIX).strip(), row["pair"], *cells])
    headers = ["comparison", "pair", "our Δ top-1 [95%]", "paper Δ top-1", "verdict (top-1)", "our Δ top-5 [95%]", "paper Δ top-5", "verdict (top-5)"]
    table = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
    return ("\n## Appendix A: localisation\n\nPaired differences of localisation error (Tables 8 and 9; `make table8 table9`), "
            "first - second, on the same val images. Table 8's error is the ground-truth-class error of one centre crop, so its "
            f"top-1 and top-5 columns are the same; Table 9's paper figure is the top-5 error.\n\n{table}\n")
