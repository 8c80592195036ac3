"""reports/ablations.md: a summary table of every paired comparison's verdict, then one section
per ablation with its findings and its entries' errors.

Our differences and their 95% paired-bootstrap intervals come from results/comparisons.csv
(written by the runner from the score files); the paper's differences (vgg.suite.published) and
the verdicts (vgg.suite.comparisons.verdict) are drawn here, at render time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from vgg.suite.comparisons import COMPARISONS_FILE, verdict
from vgg.suite.plan import AblationSpec, ComparisonPair, Entry, Experiment, FusionSpec, RunSpec
from vgg.suite.published import NONE, entry_paper_numbers, number, paper_difference
from vgg.suite.results_csv import read_rows, shown_row
from vgg.suite.report_parts import METRICS, ResultsView, fmt, ours_cell, training_section

NOT_RUN = "not run yet"


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
        seeds = int(number(self.row.get("seeds")) or 1)
        return f"{value:+.1f} [{low:+.1f}, {high:+.1f}]" + (f" ({seeds} seeds)" if seeds > 1 else "")

    def paper_text(self, metric: str) -> str:
        value = self.paper[metric]
        return "-" if value is None else f"{value:+.1f}"

    def verdict(self, metric: str) -> str:
        if self.row is None:
            return NOT_RUN
        return verdict(float(self.row[f"{metric}_diff_lo"]), float(self.row[f"{metric}_diff_hi"]), self.paper[metric])


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
        mine = entry_paper_numbers(pair.entry, catalog)
        theirs = entry_paper_numbers(reference, catalog) if reference is not None else NONE
        paper = {metric: paper_difference(mine, theirs, metric, ablation.paper_top1_difference) for metric, _ in METRICS}
        found.append(Finding(pair, row, paper))
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


def render_ablations(experiment: Experiment, view: ResultsView, results_dir: Path, catalog: dict[str, RunSpec]) -> str:
    """The ablations report: the header, the verdict summary, then one section per ablation."""
    comparisons = read_comparisons(results_dir, view)
    per_ablation = [(ablation, findings(ablation, comparisons, catalog)) for ablation in experiment.ablations]
    everything = [(ablation, finding) for ablation, found in per_ablation for finding in found]
    sections = [
        view.header(experiment),
        "## Summary: our differences against the paper's\n",
        f"Δ = error(first) - error(second) in points of %, on the same val images, with its 95% paired-bootstrap interval; "
        f"verdicts: the interval excludes 0 with the paper's sign (agrees) or the other (opposite), or contains 0 "
        f"(inconclusive at this size). Top-1 is the headline, top-5 beside it. Ours on {view.profile}. "
        f"With one seed the interval covers the sampling of the val images, not the noise of training (seed, thread "
        f"count): `SEEDS=N` (N >= 2) trains every run N times and bootstraps over the seeds too.\n",
        summary_table(everything, view) + "\n",
    ]
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
