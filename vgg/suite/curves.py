"""Learning curves in the results: results/curves.csv holds, for every run an experiment trained
or used (each seed), its per-epoch learning rate, train loss and val errors from the run's
metrics.csv, so that the reports draw the curves without the run folders (which are not
committed). Each report's "How each net trained" section shows the curves of its runs and names
the runs that ended at chance.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from vgg.evaluation.metrics import METRICS_NAME, read_metrics
from vgg.runtime.checkpoint import atomic_write_figure
from vgg.suite.plan import RunSpec
from vgg.suite.results_csv import read_rows, replace_groups

CURVES_FILE = "curves.csv"
CURVE_GROUP = ("profile", "dataset", "run", "seed")
"""A run's curve (one seed) is replaced whole; a report draws only the seeds its results rows hold."""
CURVE_FIELDS = (*CURVE_GROUP, "epoch", "lr", "train_loss", "val_top1_err", "val_top5_err")
AT_CHANCE = 0.95
"""A run whose last train loss is above this fraction of ln K (the loss of a uniform guess) ended at chance."""


def curve_rows(run: RunSpec, run_dir: Path, profile: str, dataset: str) -> list[dict]:
    """The curves.csv rows of one trained run (one seed), from its metrics.csv; none if it has none yet."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return []
    kept = CURVE_FIELDS[len(CURVE_GROUP) + 1 :]
    return [
        {"profile": profile, "dataset": dataset, "run": run.catalog_id, "seed": run.seed, "epoch": row["epoch"], **{k: row.get(k, "") for k in kept}}
        for row in read_metrics(path)
    ]


def write_curves(results_dir: Path, rows: list[dict]) -> Path:
    """Replace, in results_dir/curves.csv, the curve of every run and seed in `rows` by `rows`."""
    path = Path(results_dir) / CURVES_FILE
    replace_groups(path, rows, CURVE_GROUP, CURVE_FIELDS)
    return path


def read_curves(results_dir: Path, profile: str, dataset: str, runs: dict[str, list[int]]) -> dict[str, dict[int, list[dict]]]:
    """The curves of `runs` (run -> its seeds, in that order) for a profile and dataset: run -> seed -> its rows by epoch.
    Other seeds' curves (left by a run over more seeds) are not read."""
    by_run: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in read_rows(Path(results_dir) / CURVES_FILE):
        if row["profile"] == profile and row["dataset"] == dataset and int(row["seed"]) in runs.get(row["run"], ()):
            by_run[row["run"]][int(row["seed"])].append(row)
    return {run: {seed: sorted(rows, key=lambda r: int(r["epoch"])) for seed, rows in sorted(by_run[run].items())} for run in runs if run in by_run}


def ended_at_chance(curves: dict[str, dict[int, list[dict]]], classes: int) -> list[tuple[str, int, float]]:
    """(run, seed, last train loss) of every run whose last train loss is above AT_CHANCE x ln K, or not finite."""
    if classes < 2:
        return []
    limit = AT_CHANCE * math.log(classes)
    last = [(run, seed, float(rows[-1]["train_loss"] or "nan")) for run, seeds in curves.items() for seed, rows in seeds.items() if rows]
    return [(run, seed, loss) for run, seed, loss in last if not loss <= limit]


def plot_learning_curves(path: Path, curves: dict[str, dict[int, list[dict]]], classes: int, title: str) -> None:
    """One panel per run: train loss (solid, left axis, with ln K dotted) and the per-epoch val top-1
    error (dashed, right axis), a colour per seed."""
    import matplotlib  # here: reports without a figure (and the other commands) start without matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    columns = min(4, len(curves))
    rows = math.ceil(len(curves) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.5 * rows + 0.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, (run, seeds) in zip(axes.flat, curves.items()):
        errors = axis.twinx()
        for seed, seed_rows in seeds.items():
            epochs = [int(r["epoch"]) for r in seed_rows]
            colour = colours[seed % len(colours)]
            axis.plot(epochs, [float(r["train_loss"]) for r in seed_rows], "-", color=colour, lw=1.2, label=f"seed {seed}")
            errors.plot(epochs, [float(r["val_top1_err"]) for r in seed_rows], "--", color=colour, lw=0.9)
        if classes > 1:
            axis.axhline(math.log(classes), color="gray", ls=":", lw=0.9)
        axis.set_ylim(bottom=0)
        errors.set_ylim(0, 100)
        axis.set_title(run, fontsize=9)
        axis.tick_params(labelsize=7)
        errors.tick_params(labelsize=7)
        axis.set_xlabel("epoch", fontsize=7)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in list(axes.flat)[len(curves) :]:
        axis.set_visible(False)
    axes[0][0].set_ylabel("train loss (solid)", fontsize=7)
    axes[0][0].legend(fontsize=6, loc="upper right")
    figure.suptitle(f"{title}\ntrain loss (solid; dotted: ln K, a uniform guess) and val top-1 error % (dashed, right axis)", fontsize=9)
    figure.tight_layout()
    atomic_write_figure(figure, path)
    plt.close(figure)


def curves_section(results_dir: Path, out_dir: Path, name: str, profile: str, dataset: str, runs: dict[str, list[int]], classes: int) -> str:
    """The report's learning-curve figure (drawn into out_dir/<name>-curves.png) and its runs that
    ended at chance; empty when results_dir holds no curves of these runs."""
    curves = read_curves(results_dir, profile, dataset, runs)
    if not curves:
        return ""
    figure = Path(out_dir) / f"{name}-curves.png"
    plot_learning_curves(figure, curves, classes, f"{name}: learning curves ({profile} profile)")
    text = f"\n![learning curves: train loss and val top-1 error per epoch, each seed]({figure.name})\n"
    stuck = ended_at_chance(curves, classes)
    if stuck:
        named = "; ".join(f"{run} seed {seed} ({loss:.3f})" for run, seed, loss in stuck)
        text += (
            f"\nEnded at chance (last train loss above {AT_CHANCE:g} x ln {classes} = {AT_CHANCE * math.log(classes):.2f}, or not finite): {named}. "
            "Their errors measure a net that never left a uniform guess, not its configuration.\n"
        )
    return text
