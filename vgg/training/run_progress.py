"""What a training run tells the world while it runs, beside its checkpoints: its log (terminal and
RUN/train.log), RUN/PROGRESS.json (its state, epoch n of N, the time each epoch took, images/s,
the process and host), for
`python -m vgg status` to read without a lock, locally or from another node of a cluster; and,
opt-in, each epoch's TensorBoard scalars (`vgg.training.tensorboard_scalars`).

States: running, finished, stopped (a stop signal: the same command resumes it), failed (with the
error's line). A killed process cannot write its state: `status` tells by its pid (same host) or by
a file that stopped moving (another host)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from vgg.runtime.checkpoint import append_text, atomic_write_text
from vgg.training.tensorboard_scalars import EpochScalars

PROGRESS_NAME = "PROGRESS.json"
KEPT_EPOCH_TIMES = 5
"""Epoch durations kept: the estimate of the time left follows the recent pace (a resumed run's first
epoch, a cache warming up)."""


def run_logger(run_dir: Path, enabled: bool):
    """A run's log: each message printed and appended to RUN/train.log (on the main rank: `enabled`)."""

    def log(message: str) -> None:
        if enabled:
            print(message, flush=True)
            append_text(Path(run_dir) / "train.log", message + "\n")

    return log


def error_line(error: BaseException) -> str:
    """An error's first line, for PROGRESS.json and `status`."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


class RunProgress:
    """The progress file of one run (main rank only), and its TensorBoard writer when asked for."""

    def __init__(self, run_dir: Path, first_epoch: int, epochs: int, val_images: int, tensorboard: bool, started: float):
        """`started`: when this process began the run (time.time()), its start-up included."""
        self.path = Path(run_dir) / PROGRESS_NAME
        self.val_images = val_images
        self.scalars = EpochScalars(run_dir, first_epoch) if tensorboard else None
        earlier = read_progress(run_dir) if first_epoch > 0 else None  # a resumed run: its earlier sessions' time and pace carry over
        earlier_s = float(earlier.get("earlier_s", 0.0)) + float(earlier["updated"]) - float(earlier["started"]) if earlier and "updated" in earlier else 0.0
        self.record = {
            "state": "running", "pid": os.getpid(), "host": socket.gethostname(), "started": started, "earlier_s": round(earlier_s, 2),
            "epoch": first_epoch, "epochs": epochs, "epoch_seconds": list((earlier or {}).get("epoch_seconds", [])),
            "images_per_s": (earlier or {}).get("images_per_s"), "val_images": val_images, "error": "",
        }
        self._epoch_started = time.time()
        self._write()

    def epoch_closed(self, row: dict) -> None:
        """An epoch's metrics row is written: its time (training and validation), rate and errors."""
        now = time.time()
        self.record.update(
            epoch=int(row["epoch"]) + 1, images_per_s=float(row["images_per_s"]),
            epoch_seconds=[*self.record["epoch_seconds"], round(now - self._epoch_started, 2)][-KEPT_EPOCH_TIMES:],
        )
        self._epoch_started = now
        if self.scalars:
            self.scalars.add(row, self.val_images)
        self._write()

    def ended(self, state: str, error: str = "") -> None:
        """finished, stopped or failed (with the error's line); a finished run stays finished (a stop
        signal that came during its last epoch ends the command, not the run)."""
        if self.record["state"] == "finished":
            return
        self.record.update(state=state, error=error)
        if self.scalars:
            self.scalars.close()
            self.scalars = None
        self._write()

    def _write(self) -> None:
        self.record["updated"] = time.time()
        write_progress(self.path.parent, self.record)


def write_progress(run_dir: Path, record: dict) -> None:
    """PROGRESS.json, atomically; advisory, so a failed write (a full disk) never stops a run: the
    checkpoint that follows reports the disk."""
    try:
        atomic_write_text(Path(run_dir) / PROGRESS_NAME, json.dumps(record, indent=1) + "\n")
    except OSError:
        pass


def record_failure(run_dir: Path, error: str) -> None:
    """A run that failed before its loop started (no RunProgress yet): a failed record for `status`."""
    if Path(run_dir).is_dir():
        write_progress(run_dir, {"state": "failed", "error": error, "pid": os.getpid(), "host": socket.gethostname(), "updated": time.time()})


def read_progress(run_dir: Path) -> dict | None:
    """A run's PROGRESS.json, None when it has none or it cannot be read (being replaced: read again)."""
    try:
        return json.loads((Path(run_dir) / PROGRESS_NAME).read_text())
    except (OSError, ValueError):
        return None
