"""Opt-in TensorBoard scalars (`train --tensorboard`, `make ... TB=1`): each epoch's row of metrics.csv
written under RUN/tensorboard/ as it is appended, with the per-epoch val errors' 95% intervals, so
that `tensorboard --logdir runs/` overlays the runs of a suite while they train. The tensorboard
package is needed only with the flag (torch's SummaryWriter imports it)."""

from __future__ import annotations

from pathlib import Path

from vgg.evaluation.statistics import binomial_interval

TENSORBOARD_DIR = "tensorboard"
ROW_SCALARS = {
    "train_loss": "loss/train", "train_top1_err": "error/train_top1", "train_top5_err": "error/train_top5",
    "val_top1_err": "error/val_top1", "val_top5_err": "error/val_top5", "lr": "lr", "images_per_s": "speed/images_per_s",
}
"""metrics.csv column -> TensorBoard tag."""


def require_tensorboard() -> None:
    """A one-line error, before a run starts, when `--tensorboard` is asked for without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as error:
        raise ValueError(f"--tensorboard needs the tensorboard package ({error}): install it with `.venv/bin/pip install tensorboard` "
                         "(pip install tensorboard outside the suite's venv), or leave --tensorboard (make: TB=1) out") from None


class EpochScalars:
    """The run's TensorBoard writer. A resumed run purges the events from its first epoch on, so that
    a killed run's last, repeated epoch is not drawn twice."""

    def __init__(self, run_dir: Path, first_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=first_epoch or None)

    def add(self, row: dict, val_images: int) -> None:
        """One epoch's row (`vgg.training.train`'s metrics row) at step = its epoch, and its val intervals."""
        epoch = int(row["epoch"])
        for column, tag in ROW_SCALARS.items():
            self.writer.add_scalar(tag, float(row[column]), epoch)
        for k in ("top1", "top5"):
            low, high = binomial_interval(float(row[f"val_{k}_err"]), val_images)
            self.writer.add_scalar(f"error/val_{k}_low", low, epoch)
            self.writer.add_scalar(f"error/val_{k}_high", high, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
