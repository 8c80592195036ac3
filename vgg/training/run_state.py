"""A training run's folder as the trainer finds it: its checkpoint (read, checked to be this run's),
and what a checkpoint holds besides the weights (the
epoch's running totals, the random generators' states).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from vgg.runtime.checkpoint import CHECKPOINT_NAME, DAMAGED, DONE_NAME, load_run_checkpoint
from vgg.training.identity import differences, format_differences
from vgg.training.run_config import TrainConfig

CHECKPOINT_FORMAT = 1


class OtherRunError(ValueError):
    """The output folder holds another run (other settings): training there would mix the two."""

    def __init__(self, folder: Path, what: str, changed: str):
        self.folder, self.what, self.changed = folder, what, changed
        super().__init__(
            f"{folder} holds {what} with other settings ({changed}); remove {folder}, or train into another folder "
            "(vgg train --out DIR; make ... RUNS=DIR, or vgg run --runs DIR)"
        )


@dataclass
class EpochTotals:
    """Running sums over the current epoch (kept in checkpoints for exact mid-epoch resume)."""

    loss_sum: float = 0.0
    top1: int = 0
    top5: int = 0
    seen: int = 0
    elapsed: float = 0.0
    skipped: list[str] = field(default_factory=list)  # this rank's unreadable images (--skip-bad-images)


def rng_state() -> dict:
    """Every random generator's state (torch, CUDA, numpy, Python), for a checkpoint."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }


def restore_rng(state: dict) -> None:
    """Put back the generators' states of `rng_state` (CUDA's when the device count is the same)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


def own_checkpoint(run_dir: Path) -> dict | None:
    """The run folder's checkpoint (None if it has none); a file there that is not one is an error."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    move = f"move it out of {run_dir}, then run the same command to train the run from its start"
    return load_run_checkpoint(path, "the run's own checkpoint, to resume from", damaged=f"it was {DAMAGED}: {move}", advice=move)


def recorded_precision(cfg: TrainConfig, *records: dict | None) -> TrainConfig:
    """`cfg` with `--precision auto` as the first of `records` (a run's DONE, its checkpoint) that
    describes its run decided it: bf16, or fp32 by its absence (from its identity, or from its
    settings before identity version 2, which recorded none). `cfg` as it is when it asks for
    a precision or no record describes its run (the decision is then the trainer's to make)."""
    if cfg.precision != "auto":
        return cfg
    for record in records:
        described = None if record is None else record.get("identity", record.get("run"))
        if isinstance(described, dict):
            return replace(cfg, precision=described.get("precision", "fp32"))
    return cfg


def checkpoint_to_resume(run_dir: Path, cfg: TrainConfig, identity: dict, run_hash: str, checkpoint: dict | None) -> dict | None:
    """The checkpoint of this run to resume from (None: start the run), given the run folder's own
    (`own_checkpoint`); the checkpoint of another run (other settings) is an `OtherRunError` naming
    what differs."""
    if checkpoint is None or checkpoint["run_hash"] == run_hash:
        return checkpoint
    stored, current = (checkpoint["identity"], identity) if "identity" in checkpoint else (checkpoint["run"], cfg.settings())
    raise OtherRunError(run_dir, "the checkpoint of an unfinished run", format_differences(differences(stored, current)))


def describe_done(done: dict, run_dir: Path) -> str:
    """A finished run in one line for the terminal (epochs, drops, final errors, time); the full
    record stays in its DONE."""
    drops = done.get("drop_epochs") or []
    drop_words = f"{len(drops)} rate drop{'s' if len(drops) != 1 else ''}" + (f" (after epoch {', '.join(map(str, drops))})" if drops else "")
    stopped = {"max_epochs": "stopped at its epoch limit", "plateau": "stopped by the plateau rule",
               "at chance": "given up at chance"}.get(done.get("stopped"), f"stopped: {done.get('stopped')}")
    minutes, epochs = done.get("train_wall_s", 0.0) / 60, done.get("epochs")
    return (f"VGG-{done.get('config')} at S={done.get('train_scale')}: {epochs} epoch{'s' if epochs != 1 else ''}, {drop_words}, {stopped}; "
            f"val top-1 {done.get('val_top1_err')}% (best {done.get('best_val_top1_err')}%), top-5 {done.get('val_top5_err')}%, "
            f"train loss {done.get('train_loss')}; {minutes:.1f} min of training. Full record: {Path(run_dir) / DONE_NAME}")
