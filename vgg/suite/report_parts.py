"""What the result reports share (`vgg.suite.table_reports`, `vgg.suite.ablation_report`,
`vgg.suite.pretrained`): the view of one results CSV for a profile and dataset with the report's
header, the formatting of errors and their intervals, and the section on how each net trained.
"""

from __future__ import annotations

import math
from pathlib import Path

from tabulate import tabulate

from vgg.suite.plan import EvalSpec, Experiment, FusionSpec
from vgg.suite.published import NONE, Numbers, number
from vgg.suite.results_csv import MEAN_SEED, read_rows, row_seed, shown_row

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

    def trained_runs(self) -> dict[str, list[int]]:
        """The runs of the rows that record how their net trained (not fusions), in the rows' order, each with its seeds."""
        seeds: dict[str, list[int]] = {}
        for row in self.rows:
            if row.get("epochs") and row_seed(row) != MEAN_SEED and int(row_seed(row)) not in seeds.setdefault(row["run"], []):
                seeds[row["run"]].append(int(row_seed(row)))
        return seeds

    def classes(self) -> int:
        """The number of classes of the rows' dataset (0 when no row records it)."""
        return max((int(c) for c in (row.get("classes") for row in self.rows) if c and str(c).isdigit()), default=0)

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
                f"- seeds: {', '.join(seeds)}; each of our errors is the mean over the seeds [95% interval over the seeds (t) and the "
                "val images (bootstrap)] ± the standard deviation across seeds"
            )
        else:
            lines.append("- seeds: one (seed 0); each of our errors carries its [95% bootstrap interval over the val images]")
        meaning = "Δ = error(first) - error(second) of a pair" if experiment.ablations else "Δ = ours - paper"
        kind = "localisation errors (a box right at IoU > 0.5)" if experiment.localisations else "top-1 / top-5 error"
        lines.append(f"- errors are ILSVRC-style {kind} in %; {meaning}")
        lines.append("")
        return "\n".join(lines)


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
