"""Top-k errors (with their bootstrap intervals), the per-epoch metrics CSV of a run, and its loss/error curve."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from vgg.evaluation.statistics import error_interval_fields
from vgg.runtime.checkpoint import atomic_write_figure, atomic_write_text

METRICS_NAME = "metrics.csv"
CURVE_NAME = "curves.png"
METRIC_FIELDS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_top1_err",
    "train_top5_err",
    "val_top1_err",
    "val_top5_err",
    "images_per_s",
    "wall_s",
    "skipped_images",
)


def topk_hits(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Per row, whether its label is among the k highest scores, for each k: (len(ks), rows), bool.

    Ties are broken by class index (the lower index ranks first), so results are deterministic.
    k is capped at the number of classes.
    """
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices
    hits = order == labels.view(-1, 1)
    return torch.stack([hits[:, : min(k, scores.shape[1])].any(dim=1) for k in ks])


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have their label among the k highest scores, for each k (see `topk_hits`)."""
    return [int(count) for count in topk_hits(scores, labels, ks).sum(dim=1)]


def batch_sums(loss: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A batch's share of the running sums, as float64 on the scores' device, computed without a
    host sync: [mean loss x images, top-1 hits, top-5 hits, images, 1 if the loss is not finite]."""
    hits = topk_hits(scores, labels).sum(dim=1).double()
    loss = loss.detach().double()
    images = torch.full_like(loss, labels.shape[0])
    return torch.stack([loss * images, hits[0], hits[1], images, (~torch.isfinite(loss)).double()])


def per_image_errors(scores: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each image's top-1 and top-5 error as 0/1 (numpy bool arrays), for bootstrap intervals."""
    hits = topk_hits(scores, labels).numpy()
    return ~hits[0], ~hits[1]


def interval_fields(posteriors: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The 95% bootstrap intervals (over the images) of the top-1 and top-5 errors of per-image posteriors."""
    return error_interval_fields(*per_image_errors(posteriors, labels))


def error_percent(correct: int, total: int) -> float:
    """Error in percent; 100 for an empty set would hide a bug, so that is an error."""
    if total <= 0:
        raise ValueError("no images were evaluated")
    return 100.0 * (1 - correct / total)


def append_metrics(run_dir: Path, row: dict) -> None:
    """Add one epoch's row to RUN_DIR/metrics.csv, rewriting it atomically (a file of a few hundred
    rows): a kill or a full disk leaves the previous file whole, and one with the columns of an
    older version gets today's."""
    path = Path(run_dir) / METRICS_NAME
    write_metrics(path, [*(read_metrics(path) if path.exists() else []), row])


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.csv."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Replace a metrics.csv atomically with `rows` under today's columns (a kill leaves the old file)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({field: row.get(field, "") for field in METRIC_FIELDS} for row in rows)
    atomic_write_text(path, buffer.getvalue())


def curve_summary(run_dir: Path) -> dict:
    """A finished run's learning curve in a few numbers: its last epoch's rate, loss and val errors,
    its best val top-1 error and its training time."""
    rows = read_metrics(Path(run_dir) / METRICS_NAME)
    last = rows[-1]
    return {
        "final_lr": float(last["lr"]),
        "train_loss": float(last["train_loss"]),
        "val_top1_err": float(last["val_top1_err"]),
        "val_top5_err": float(last["val_top5_err"]),
        "best_val_top1_err": min(float(row["val_top1_err"]) for row in rows),
        "train_wall_s": round(sum(float(row["wall_s"]) for row in rows), 1),
    }


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop rows after `last_epoch` (left by a run killed after writing them but before its checkpoint)."""
    path = Path(run_dir) / METRICS_NAME
    if path.exists():
        write_metrics(path, [row for row in read_metrics(path) if int(row["epoch"]) <= last_epoch])


EARLIER_METRICS_NAME = "metrics-earlier-start.csv"


def set_aside_metrics(run_dir: Path) -> Path | None:
    """At a run's start from scratch, move the metrics.csv of an earlier start (whose checkpoint was
    removed or never written) to `EARLIER_METRICS_NAME`, replacing an older one: the new run's rows
    would follow its rows (epochs 0, 1, 0, 1). Returns where it went, or None when there was none."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return None
    return path.replace(path.with_name(EARLIER_METRICS_NAME))


def plot_curves(run_dir: Path, title: str) -> Path:
    """Draw RUN_DIR/curves.png (train loss; train and val top-1 error) from metrics.csv."""
    import matplotlib  # here, not at the top: commands that draw nothing start without matplotlib, pandas and seaborn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.read_csv(Path(run_dir) / METRICS_NAME)
    errors = frame.melt(id_vars="epoch", value_vars=["train_top1_err", "val_top1_err"], var_name="split", value_name="top-1 error (%)")
    sns.set_theme(style="whitegrid")
    figure, (loss_axis, error_axis) = plt.subplots(1, 2, figsize=(10, 4))
    sns.lineplot(data=frame, x="epoch", y="train_loss", ax=loss_axis, marker="o")
    loss_axis.set_ylabel("train loss")
    sns.lineplot(data=errors, x="epoch", y="top-1 error (%)", hue="split", ax=error_axis, marker="o")
    for drop_epoch in frame["epoch"][frame["lr"].diff() < 0]:
        error_axis.axvline(drop_epoch, color="grey", linestyle=":", linewidth=1)
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(run_dir) / CURVE_NAME
    atomic_write_figure(figure, path)
    plt.close(figure)
    return path
