"""Reports of Appendix B: reports/table11.md and table12.md from results/<table>.csv (`vgg.suite.transfer_runs`),
beside the paper's published rows, with the check that the trained nets' descriptors beat a random net's, and the
scale comparisons' section (results/transfer_comparisons.csv) shared with reports/ablations.md.

Every score is in %: mAP for the multi-label sets (VOC, the toy multi-label and action sets), mean class recall
for the single-label ones (Caltech, the toy categories), the latter the mean over 3 random splits ± their standard
deviation, as the paper reports it. Each carries its 95% bootstrap interval over the test images (shifted by the
bootstrap's bias: `vgg.transfer.protocols`).
"""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate

from vgg.suite.plan import Experiment
from vgg.suite.published import number, transfer_paper_values
from vgg.suite.report_parts import TOY_PROFILES
from vgg.suite.results_csv import read_rows
from vgg.suite.transfer_plan import TRANSFER_COMPARISONS_FILE
from vgg.transfer.tasks import DATASETS

FEATURE_ROWS = {"image": ", image-only", "image+box": ", image and bounding box"}
"""Table 12's published rows: the net's row name and the features' suffix."""


def score_cell(row: dict | None) -> str:
    """"77.8 [76.0, 80.2]", with "± std" over splits where there are several."""
    if row is None:
        return "-"
    text = f"{float(row['value']):.1f}"
    if row.get("value_std") not in (None, ""):
        text += f" ± {float(row['value_std']):.1f}"
    return f"{text} [{float(row['value_lo']):.1f}, {float(row['value_hi']):.1f}]"


def _rows(results: Path, profile: str) -> list[dict]:
    rows = [row for row in read_rows(results) if row.get("profile") == profile and row.get("transfer_set")]
    if not rows:
        raise ValueError(f"no {profile}-profile results in {results}: run the experiment first (make {results.stem} PROFILE={profile})")
    return rows


def _find(rows: list[dict], dataset: str, net: str, features: str) -> dict | None:
    found = [row for row in rows if (row["transfer_set"], row["net"], row["features"]) == (dataset, net, features)]
    return found[-1] if found else None


def _header(experiment: Experiment, rows: list[dict], profile: str) -> str:
    lines = []
    if profile in TOY_PROFILES:
        lines += [f"> **Toy-scale run ({profile} profile) on synthetic target sets: not comparable with the paper's VOC and Caltech numbers "
                  "in absolute terms.** The nets are the suite's own toy D and E; compare the direction of each effect, not the values.", ""]
    lines += [f"# {experiment.title}", "", experiment.description, ""]
    nets = {row["net"]: row["weights"] for row in rows}
    lines += [f"- net {name}: `{weights}`" for name, weights in nets.items()]
    for dataset in dict.fromkeys(row["transfer_set"] for row in rows):
        first = next(row for row in rows if row["transfer_set"] == dataset)
        chance = f"; chance about {float(first['chance']):.1f}" if first.get("chance") else ""
        lines.append(f"- {DATASETS[dataset].title}: `{first['dataset']}`, {first['train_images']} train and {first['test_images']} test "
                     f"items, {first['classes']} classes; {DATASETS[dataset].protocol}{chance}")
    for name, key in (("date", "date"), ("commit", "git_commit"), ("device", "device")):
        values = sorted({row[key] for row in rows if row.get(key)})
        lines.append(f"- {name}: {values[0]} to {values[-1]}" if name == "date" and len(values) > 1 else f"- {name}: {', '.join(values) or '-'}")
    lines += [f"- profile: {profile}; one run of each net (seed 0); each score in % with its [95% bootstrap interval over the test items]", ""]
    return "\n".join(lines)


def ours_table(experiment: Experiment, rows: list[dict]) -> str:
    """Our rows: one per net (and features), a column per dataset evaluated, the paper's value beside each real one."""
    datasets = [spec.dataset for spec in experiment.transfer.sets if any(row["transfer_set"] == spec.dataset for row in rows)]
    published = transfer_paper_values(experiment.paper_table or 0)
    headers = ["net", "features"]
    for dataset in datasets:
        headers += [f"{DATASETS[dataset].title} ({DATASETS[dataset].metric}) ours"] + (["paper"] if DATASETS[dataset].paper_column else [])
    kinds = list(dict.fromkeys(kind for spec in experiment.transfer.sets for kind in spec.features))
    lines = []
    for net in (net for net in experiment.transfer.nets if net.row):
        for kind in kinds:
            line = [net.name, kind]
            for dataset in datasets:
                line.append(score_cell(_find(rows, dataset, net.name, kind)))
                if DATASETS[dataset].paper_column:
                    paper_row = net.paper_row + (FEATURE_ROWS[kind] if experiment.paper_table == 12 and net.paper_row else "")
                    line.append(published.get((paper_row, DATASETS[dataset].paper_column), "-"))
            lines.append(line)
    return tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)


def published_table(table: int) -> str:
    """The paper's table as published: every row, a column per dataset."""
    values = transfer_paper_values(table)
    order = [dataset.paper_column for dataset in DATASETS.values()]  # the paper's: VOC-2007, VOC-2012, Caltech-101, Caltech-256
    columns = sorted(dict.fromkeys(column for _, column in values), key=lambda column: order.index(column) if column in order else len(order))
    names = list(dict.fromkeys(name for name, _ in values))
    lines = [[name, *(values.get((name, column), "-") for column in columns)] for name in names]
    return tabulate(lines, headers=["method", *columns], tablefmt="github", disable_numparse=True)


def random_check(experiment: Experiment, rows: list[dict]) -> str:
    """Whether the best trained net beats the random one by a margin outside both intervals, per dataset and features."""
    randoms = {net.name for net in experiment.transfer.nets if net.random}
    lines = []
    for spec in experiment.transfer.sets:
        for kind in spec.features:
            trained = [row for row in rows if row["transfer_set"] == spec.dataset and row["features"] == kind and row["net"] not in randoms]
            floor = [row for row in rows if row["transfer_set"] == spec.dataset and row["features"] == kind and row["net"] in randoms]
            if not trained or not floor:
                continue
            best = max(trained, key=lambda row: float(row["value"]))
            for random in floor:
                margin = float(best["value_lo"]) - float(random["value_hi"])
                verdict = f"yes: the intervals are {margin:.1f} points apart" if margin > 0 else f"NO: the intervals overlap by {-margin:.1f} points"
                lines.append([DATASETS[spec.dataset].title, kind, f"{best['net']}: {score_cell(best)}", f"{random['net']}: {score_cell(random)}",
                              f"{float(best['value']) - float(random['value']):+.1f}", verdict])
    if not lines:
        return ""
    table = tabulate(lines, headers=["dataset", "features", "best trained net", "random net", "difference", "trained beats random outside both intervals"],
                     tablefmt="github", disable_numparse=True)
    return ("\n## Do the descriptors carry what training learned?\n\nThe same SVMs on the descriptors of a randomly initialised net of the "
            f"same architecture (not in the paper): a trained net must beat it by more than both intervals.\n\n{table}\n")


def transfer_comparisons_section(results_dir: Path, profile: str, heading: str = "##") -> str:
    """The scale comparisons of Appendix B (results/transfer_comparisons.csv) for `profile`, empty without any."""
    rows = [row for row in read_rows(Path(results_dir) / TRANSFER_COMPARISONS_FILE) if row.get("profile") == profile]
    if not rows:
        return ""
    lines = []
    for row in rows:
        ours = f"{float(row['diff']):+.1f} [{float(row['diff_lo']):+.1f}, {float(row['diff_hi']):+.1f}]"
        paper = number(row.get("paper_diff"))
        verdict = row["verdict"] + (" (provisional)" if row.get("provisional") == "True" else "")
        lines.append([row["comparison"].removeprefix("transfer:").strip(), DATASETS[row["transfer_set"]].title, row["net"], f"{row['entry']} - {row['reference']}",
                      f"{float(row['entry_value']):.1f} vs {float(row['reference_value']):.1f}", ours, "-" if paper is None else f"{paper:+.1f}", row["paper_says"], verdict])
    headers = ["comparison", "dataset", "net", "first - second", "scores", "our Δ [95%]", "paper Δ", "the paper says", "verdict"]
    table = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
    return (f"\n{heading} Appendix B: transfer (scales)\n\nPaired differences of the transfer score (mAP or mean class recall, points; "
            "`make table11`), first - second, on the same test items (Caltech: per split, averaged), with the paired 95% bootstrap "
            "interval. Where the paper gives a direction but no figure, the verdict compares signs. One run of each net: provisional."
            f"\n\n{table}\n")


def render_transfer(experiment: Experiment, profile: str, results_dir: Path) -> str:
    """The whole report of Table 11 or 12."""
    rows = _rows(Path(results_dir) / f"{experiment.name}.csv", profile)
    sections = [_header(experiment, rows, profile), "## Ours\n", ours_table(experiment, rows), "",
                f"## Published (the paper's Table {experiment.paper_table})\n", published_table(experiment.paper_table or 0),
                "\nStarred values: pre-trained on an extended ILSVRC (Wei et al.: 2000 classes; Oquab et al.: 1512).",
                random_check(experiment, rows)]
    if experiment.transfer.comparisons:
        sections.append(transfer_comparisons_section(results_dir, profile))
    return "\n".join(sections)
