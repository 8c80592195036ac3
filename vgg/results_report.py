"""Reports of results against the paper: reports/<table>.md (+ .png) for Tables 3-7 and the ablations.

Each report names, in its header, the dataset, profile, date, commit and device of the rows
it shows, and the chance errors of its classes; a toy-scale (smoke or ci) report says in its
first line that its numbers are not comparable with the paper's in absolute terms and
compares the direction of each effect. Each of our errors carries its 95% bootstrap interval
over the val images (`27.0 [26.6, 27.4]`); where several seeds were run, the mean over the
seeds with the two-level interval and the standard deviation across seeds
(`27.0 [26.4, 27.6] ± 0.3 (3 seeds)`).
"""

from __future__ import annotations

import math
from pathlib import Path

from tabulate import tabulate

from vgg.checkpoint import atomic_write_figure, atomic_write_text
from vgg.plan import EvalSpec, Experiment, FusionSpec, RunSpec, load_catalog, load_experiment
from vgg.published import NONE, Numbers, number, paper_numbers, paper_row_numbers, published_rows
from vgg.results import MEAN_SEED, read_rows, shown_row

TOY_PROFILES = ("smoke", "ci")
METRICS = (("top1", "top-1"), ("top5", "top-5"))


def fmt(value: float | None) -> str:
    """An error to 0.1 ("-" when absent)."""
    return "-" if value is None else f"{value:.1f}"


def delta(ours: float | None, paper: float | None) -> str:
    """ours - paper, signed, to 0.1 ("-" when either is absent)."""
    return "-" if ours is None or paper is None else f"{ours - paper:+.1f}"


def ours_cell(row: dict | None, metric: str) -> str:
    """Our error with its 95% interval, `27.0 [26.6, 27.4]`; from an aggregate over seeds,
    `mean [lo, hi] ± std (N seeds)`; just the value where the row has no interval."""
    value = number(row.get(f"{metric}_err")) if row else None
    if value is None:
        return "-"
    low, high = number(row.get(f"{metric}_err_lo")), number(row.get(f"{metric}_err_hi"))
    text = f"{value:.1f}" if low is None or high is None else f"{value:.1f} [{low:.1f}, {high:.1f}]"
    std = number(row.get(f"{metric}_err_std"))
    return text if std is None else f"{text} ± {std:.1f} ({row.get('seeds')} seeds)"


def chance_text(rows: list[dict]) -> str | None:
    """The errors of guessing, from the rows' classes: "chance: 98.0% top-1, 90.0% top-5 error (50 classes)"."""
    counts = sorted({int(c) for c in (row.get("classes") for row in rows) if c and str(c).isdigit() and int(c) > 0})
    parts = [f"{100 * (1 - 1 / k):.1f}% top-1, {100 * (1 - min(5, k) / k):.1f}% top-5 error ({k} classes)" for k in counts]
    return f"chance: {'; '.join(parts)}" if parts else None


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
        """An evaluation's row: the aggregate over seeds where there is one, else seed 0's."""
        return shown_row([row for row in self.rows if (row["run"], row["method"], row["test_scales"], row["flip"]) == (run, method, test_scales, str(flip))])

    def find_fusion(self, fusion: FusionSpec) -> dict | None:
        """A fusion's row: its members' runs joined, its method and flips (aggregate, else seed 0's)."""
        return shown_row([row for row in self.rows if (row["run"], row["method"], row["flip"]) == (fusion.run, fusion.method, str(fusion.members[0].flip))])

    def find_entry(self, entry: EvalSpec | FusionSpec) -> dict | None:
        """The row of an evaluation or a fusion."""
        if isinstance(entry, FusionSpec):
            return self.find_fusion(entry)
        return self.find(entry.run, entry.method, entry.test_scales, entry.flip)

    def numbers(self, row: dict | None) -> Numbers:
        return NONE if row is None else Numbers(number(row["top1_err"]), number(row["top5_err"]))

    def header(self, experiment: Experiment) -> str:
        lines = []
        chance = chance_text(self.rows)
        if self.profile in TOY_PROFILES:
            lines.append(
                f"> **Toy-scale run ({self.profile} profile) on a synthetic dataset: not comparable with the paper's "
                f"ImageNet numbers in absolute terms.** Compare the direction of each effect, not the values."
                + (f" {chance[0].upper()}{chance[1:]}." if chance else "")
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
        if chance and self.profile not in TOY_PROFILES:
            lines.append(f"- {chance}")
        seeds = sorted({row.get("seeds", "") for row in self.rows if row.get("seed") == MEAN_SEED and row.get("seeds")})
        if seeds:
            lines.append(
                f"- seeds: {', '.join(seeds)}; each of our errors is the mean over the seeds [95% two-level bootstrap interval "
                "over seeds and val images] ± the standard deviation across seeds"
            )
        else:
            lines.append("- seeds: one (seed 0); each of our errors carries its [95% bootstrap interval over the val images]")
        meaning = "Δ = error(first) - error(second) of a pair" if experiment.ablations else "Δ = ours - paper"
        lines.append(f"- errors are ILSVRC-style top-1 / top-5 error in %; {meaning}")
        lines.append("")
        return "\n".join(lines)


def _plot(path: Path, labels: list[str], ours: list[dict | None], paper: list[Numbers], title: str) -> None:
    """Two panels, top-1 and top-5 error: ours with its 95% interval as an error bar, beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
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


def training_section(view: ResultsView) -> str:
    """How each net of the report trained (from the rows' training columns): epochs, steps (and,
    for rows that record it, the length as a fraction of the paper's), the epochs at which the rate
    dropped, the final rate, the last epoch's train loss beside the loss of guessing (ln K), and
    what stopped it. Empty when the rows carry no training columns."""
    lines, seen = [], set()
    with_ratio = any(row.get("paper_length_ratio") for row in view.rows)
    for row in view.rows:
        key = (row.get("run"), row.get("seed") or "0")
        if not row.get("epochs") or key in seen or row.get("seed") == MEAN_SEED:
            continue
        seen.add(key)
        loss = number(row.get("train_loss"))
        classes = int(number(row.get("classes")) or 0)
        chance = f" (chance {math.log(classes):.2f})" if classes > 1 else ""
        ratio = [f"{float(row['paper_length_ratio']):.3g}" if row.get("paper_length_ratio") else "-"] if with_ratio else []
        lines.append([
            row["run"] + (f" seed {key[1]}" if key[1] != "0" else ""), row["epochs"], row.get("steps", "-"), *ratio,
            (row.get("drop_epochs") or "none").replace("|", ", "), f"{float(row['final_lr']):g}" if row.get("final_lr") else "-",
            "-" if loss is None else f"{loss:.3f}{chance}", row.get("stopped", "-"),
        ])
    if not lines:
        return ""
    ratio_header = ["× paper's 370K x 256 images"] if with_ratio else []
    headers = ["run", "epochs", "steps", *ratio_header, "lr drops after epoch", "lr of the last epoch", "final train loss", "stopped by"]
    table = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
    note = "Epochs are counted from 0, as in `metrics.csv`; a drop after the last epoch is logged but never used."
    if any("*" in (row.get("drop_epochs") or "") for row in view.rows):
        note += " A drop marked * was forced by the profile's drop deadline (the val curve had not dropped the rate by then)."
    return f"\n## How each net trained\n\n{table}\n\n{note}\n"


def write_results_report(name: str | Path, profile: str, results_dir: Path, out_dir: Path, dataset: str | None = None) -> Path:
    """Render reports/<name>.md (and .png for tables) from results/<name>.csv for one profile.
    `name` is a table ("table3", "ablations") or the path of an experiment file."""
    catalog = load_catalog()
    experiment = load_experiment(name, catalog)
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    view = ResultsView(results_dir / f"{experiment.name}.csv", profile, dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{experiment.name}.md"
    if experiment.ablations:
        from vgg.ablations_report import render_ablations

        atomic_write_text(path, render_ablations(experiment, view, results_dir, catalog))
        return path
    if experiment.paper_table == 6:
        table, labels, ours, paper = render_fusion_table(experiment, view)
    elif experiment.paper_table == 7:
        table, labels, ours, paper = render_state_of_the_art(experiment, view, catalog)
    else:
        table, labels, ours, paper = render_evaluation_table(experiment, view, catalog)
    plot = out_dir / f"{experiment.name}.png"
    _plot(plot, labels, ours, paper, f"{experiment.title.split(':')[0]}: ours ({profile} profile, 95% intervals) vs paper")
    atomic_write_text(path, f"{view.header(experiment)}\n{table}\n\n![top-1 and top-5 error, ours vs paper]({plot.name})\n{training_section(view)}")
    return path
