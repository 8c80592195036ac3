"""reports/ablations.md: a summary table of every paired comparison's verdict, then one section
per ablation with its findings and its entries' errors.

Our differences and their 95% paired-bootstrap intervals come from results/comparisons.csv
(written by the runner from the score files); the paper's differences and the verdicts
(`vgg.suite.comparisons`) are drawn again here, at render time, so that rows written before they
were recorded render too. A verdict of one seed is marked provisional.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from vgg.runtime.checkpoint import atomic_write_figure
from vgg.suite.comparisons import AGREES, COMPARISONS_FILE, INCONCLUSIVE, NO_PAPER, OPPOSITE, is_provisional, paper_differences, verdict
from vgg.suite.plan import AblationSpec, ComparisonPair, Entry, Experiment, FusionSpec, RunSpec
from vgg.suite.published import entry_paper_numbers, number
from vgg.suite.report_parts import METRICS, ResultsView, fmt, ours_cell, training_section
from vgg.suite.results_csv import read_rows, shown_row

NOT_RUN = "not run yet"
PROVISIONAL = "provisional"


@dataclass(frozen=True)
class Finding:
    """One paired comparison as the report shows it: our difference (a comparisons.csv row) and the paper's."""

    pair: ComparisonPair
    row: dict | None
    paper: dict[str, float | None]

    @property
    def label(self) -> str:
        """The pair, with the best member named once the results chose it."""
        if self.pair.reference is None and self.row is not None:
            return f"{self.pair.label} ({self.row['reference']})"
        return self.pair.label

    def ours(self, metric: str) -> str:
        """Our difference with its 95% paired interval: `+1.5 [+0.3, +2.7]` (with seeds: `(N seeds)` after it)."""
        if self.row is None:
            return NOT_RUN
        value, low, high = (number(self.row.get(f"{metric}_diff{suffix}")) for suffix in ("", "_lo", "_hi"))
        return f"{value:+.1f} [{low:+.1f}, {high:+.1f}]" + (f" ({self.seeds} seeds)" if self.seeds > 1 else "")

    def paper_text(self, metric: str) -> str:
        value = self.paper[metric]
        return "-" if value is None else f"{value:+.1f}"

    @property
    def seeds(self) -> int:
        return int(number(self.row.get("seeds")) or 1) if self.row is not None else 0

    def verdict(self, metric: str) -> str:
        """The verdict, with "(provisional)" after it when it rests on one seed (not after "no paper figure": nothing to confirm)."""
        if self.row is None:
            return NOT_RUN
        found = verdict(float(self.row[f"{metric}_diff_lo"]), float(self.row[f"{metric}_diff_hi"]), self.paper[metric])
        return f"{found} ({PROVISIONAL})" if is_provisional(self.seeds) and found != NO_PAPER else found


def read_comparisons(results_dir: Path, view: ResultsView) -> dict[tuple[str, str], dict]:
    """The comparisons.csv row shown for each (comparison, pair) of the view's profile and dataset."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in read_rows(Path(results_dir) / COMPARISONS_FILE):
        if (row.get("profile"), row.get("dataset")) == (view.profile, view.dataset):
            grouped[(row["comparison"], row["pair"])].append(row)
    return {key: shown_row(rows) for key, rows in grouped.items()}


def findings(ablation: AblationSpec, comparisons: dict[tuple[str, str], dict], catalog: dict[str, RunSpec]) -> list[Finding]:
    """The ablation's pairs with our differences and the paper's."""
    found = []
    for pair in ablation.pairs():
        row = comparisons.get((ablation.name, pair.label))
        reference = pair.reference
        if reference is None and row is not None:  # the fusion's best member, as the runner chose it
            reference = next((m for m in pair.entry.members if m.run == row["reference"]), None)
        found.append(Finding(pair, row, paper_differences(ablation, pair, reference, catalog)))
    return found


def _finding_line(finding: Finding) -> str:
    parts = [f"{name} {finding.ours(metric)}, paper {finding.paper_text(metric)}: {finding.verdict(metric)}" for metric, name in METRICS]
    return f"  - {finding.label}: {'; '.join(parts)}"


def _entry_cells(entry: Entry, view: ResultsView, catalog: dict[str, RunSpec]) -> list[str]:
    row = view.find_entry(entry)
    paper = entry_paper_numbers(entry, catalog)
    if isinstance(entry, FusionSpec):
        scales = {member.scales for member in entry.members}
        test = ",".join(map(str, next(iter(scales)))) if len(scales) == 1 else "each member's"
        name = f"{entry.label} ({', '.join(m.run for m in entry.members)})"
    else:
        name, test = entry.run, ",".join(map(str, entry.scales))
    return [name, entry.method, test, ours_cell(row, "top1"), ours_cell(row, "top5"), fmt(paper.top1), fmt(paper.top5)]


UNFINISHED_MARK = "‡"


def unfinished_training(row: dict | None) -> str | None:
    """Why a result row's net did not finish training, or None: it stopped at chance, or its
    budget ran out before its first learning-rate drop (the near-chance guard held the rate)."""
    if row is None or not row.get("epochs"):
        return None
    if row.get("stopped") == "at chance":
        return "stopped at chance"
    if not row.get("drop_epochs") and row.get("stopped") == "max_epochs":
        return f"never left its first learning rate in {row['epochs']} epochs"
    return None


def unfinished_members(finding: Finding, view: ResultsView) -> dict[str, str]:
    """The runs of a pair whose training did not finish (run -> why): their difference measures
    a net that failed to train, not the effect the paper describes."""
    entries = [finding.pair.entry] + ([finding.pair.reference] if finding.pair.reference is not None else [])
    evaluations = [m for e in entries for m in (e.members if isinstance(e, FusionSpec) else (e,))]
    found = {}
    for evaluation in evaluations:
        why = unfinished_training(view.find_entry(evaluation))
        if why is not None:
            found[evaluation.run] = why
    return found


def summary_table(all_findings: list[tuple[AblationSpec, Finding]], view: ResultsView) -> str:
    """One line per pair: our Δ [interval], the paper's Δ and the verdict, top-1 (the headline) then
    top-5; a pair with a net that did not finish training is marked, with a note naming it."""
    lines, unfinished = [], {}
    for ablation, finding in all_findings:
        members = unfinished_members(finding, view)
        unfinished.update(members)
        mark = f" {UNFINISHED_MARK}" if members else ""
        lines.append([ablation.name, finding.label, *(cell for metric, _ in METRICS for cell in (finding.ours(metric), finding.paper_text(metric), finding.verdict(metric) + mark))])
    headers = ["comparison", "pair", "our Δ top-1 [95%]", "paper Δ top-1", "verdict (top-1)", "our Δ top-5 [95%]", "paper Δ top-5", "verdict (top-5)"]
    table = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
    if unfinished:
        named = "; ".join(f"{run} {why}" for run, why in unfinished.items())
        table += (
            f"\n\n{UNFINISHED_MARK} a net of this pair did not finish training ({named}): the difference measures "
            "a net that failed to train under this profile's recipe, not the paper's effect. See \"How each net trained\"."
        )
    return table


VERDICT_COLOURS = {AGREES: "tab:green", OPPOSITE: "tab:red", INCONCLUSIVE: "tab:gray", NO_PAPER: "tab:blue"}


def plot_verdicts(path: Path, all_findings: list[tuple[AblationSpec, Finding]], title: str) -> None:
    """reports/ablations.png: one row per pair, grouped by comparison as in the report; our difference
    with its interval (coloured by its verdict; hollow where provisional) beside the paper's (a black
    diamond), top-1 and top-5 side by side. The axis is linear within +-10 points, logarithmic beyond."""
    import matplotlib  # here: other reports and commands start without matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(ablation, finding) for ablation, finding in all_findings if finding.row is not None]
    figure, axes = plt.subplots(1, 2, figsize=(13, 1.5 + 0.27 * max(1, len(shown))), sharey=True)
    rows = np.arange(len(shown))
    for axis, (metric, name) in zip(axes, METRICS):
        for y, (_, finding) in zip(rows, shown):
            value, low, high = (float(finding.row[f"{metric}_diff{suffix}"]) for suffix in ("", "_lo", "_hi"))
            found = verdict(low, high, finding.paper[metric])
            colour = VERDICT_COLOURS[found]
            hollow = is_provisional(finding.seeds)
            axis.errorbar(value, y, xerr=[[max(0.0, value - low)], [max(0.0, high - value)]], fmt="o", color=colour, mfc="white" if hollow else colour, capsize=2, ms=5)
            if finding.paper[metric] is not None:
                axis.plot(finding.paper[metric], y, "D", color="black", ms=4)
        axis.axvline(0, color="black", lw=0.8)
        axis.set_xscale("symlog", linthresh=10)
        ends = [float(finding.row[f"{metric}_diff{suffix}"]) for _, finding in shown for suffix in ("_lo", "_hi")]
        ends += [finding.paper[metric] for _, finding in shown if finding.paper[metric] is not None]
        low, high = 1.15 * min([-3.0, *ends]), 1.15 * max([3.0, *ends])
        ticks = [t for t in (-100, -30, -10, -5, -2, 0, 2, 5, 10, 30, 100) if low <= t <= high]
        axis.set_xlim(low, high)
        axis.set_xticks(ticks, [f"{t:+d}" if t else "0" for t in ticks])
        axis.set_xlabel(f"Δ {name} error (points of %), first - second")
        axis.set_title(f"{name}")
        groups = [ablation.name for ablation, _ in shown]
        for y in range(1, len(groups)):
            if groups[y] != groups[y - 1]:
                axis.axhline(y - 0.5, color="lightgray", lw=0.8)
    axes[0].set_yticks(rows, [f"{ablation.name}: {finding.label}" for ablation, finding in shown], fontsize=7)
    axes[0].invert_yaxis()
    handles = [plt.Line2D([], [], marker="o", ls="", color=colour, label=f"ours: {found}") for found, colour in VERDICT_COLOURS.items()]
    handles.append(plt.Line2D([], [], marker="D", ls="", color="black", label="paper"))
    handles.append(plt.Line2D([], [], marker="o", ls="", color="black", mfc="white", label="hollow: provisional (one seed)"))
    figure.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.06, 1, 0.97))
    atomic_write_figure(figure, path)
    plt.close(figure)


def render_ablations(experiment: Experiment, view: ResultsView, results_dir: Path, catalog: dict[str, RunSpec], figure: Path | None = None) -> str:
    """The ablations report: the header, the verdict summary (and its figure, drawn into `figure`), then
    one section per ablation."""
    comparisons = read_comparisons(results_dir, view)
    per_ablation = [(ablation, findings(ablation, comparisons, catalog)) for ablation in experiment.ablations]
    everything = [(ablation, finding) for ablation, found in per_ablation for finding in found]
    seeds = max((finding.seeds for _, finding in everything), default=0)
    noise = (
        f"Each interval covers {seeds} seeds (the noise of training: seed, thread count) and the val images."
        if seeds > 1 else
        "With one seed the interval covers the sampling of the val images, not the noise of training (seed, thread count), "
        "which moves paired differences by more: every verdict is **provisional**. `SEEDS=N` (N >= 2) trains every run N "
        "times and bootstraps over the seeds too."
    )
    sections = [
        view.header(experiment),
        "## Summary: our differences against the paper's\n",
        f"Δ = error(first) - error(second) in points of %, on the same val images, with its 95% paired-bootstrap interval; "
        f"verdicts: the interval excludes 0 with the paper's sign (agrees) or the other (opposite), or contains 0 "
        f"(inconclusive at this size). Top-1 is the headline, top-5 beside it. Ours on {view.profile}. {noise}\n",
    ]
    if figure is not None and any(finding.row is not None for _, finding in everything):  # no figure before any pair has results
        plot_verdicts(figure, everything, f"Ablations: our paired differences ({view.profile} profile, {seeds or 1} seed(s), 95% intervals) vs the paper's")
        sections.append(f"![our paired differences with their intervals beside the paper's, by comparison]({figure.name})\n")
    sections.append(summary_table(everything, view) + "\n")
    for ablation, found in per_ablation:
        table = tabulate(
            [_entry_cells(entry, view, catalog) for entry in ablation.entries],
            headers=["run", "method", "test Q", "top-1 ours", "top-5 ours", "top-1 paper", "top-5 paper"],
            tablefmt="github",
            disable_numparse=True,
        )
        lines = "\n".join(_finding_line(finding) for finding in found)
        sections.append(f"## {ablation.name}\n\n{ablation.question}\n\n- paper: {ablation.paper}\n- findings (Δ ours [95%], paper Δ: verdict):\n{lines}\n\n{table}\n")
    sections.append(training_section(view))
    return "\n".join(sections)
