"""A training run's settings, declared once: `TrainConfig`.

Each field says, in its metadata, what it is to the run:
- `IDENTITY`: it defines what the run computes, so it enters the run's hash (`vgg.training.identity`);
- `IDENTITY_WHEN_SET`: the same, but only when set (fields added after the first runs, so that
  those runs keep their hash);
- `RECIPE`: a model constant whose value, given or default, the identity's recipe holds;
- `HOW`: how the run runs (workers, device, checkpoint cadence...), not what it computes.

and how it appears on the command line (help, type, choices). The `train` parser, the parsed
arguments back into a `TrainConfig`, and the argv of torchrun and SLURM jobs are all derived
from these declarations: adding an option is adding a field.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path

import torch

from vgg.data.datasets import ImageList
from vgg.localisation.regression import REGRESSIONS
from vgg.nets.models import FREEZE_CHOICES
from vgg.recipe.paper import PAPER
from vgg.recipe.profiles import get_profile
from vgg.runtime import precision as arithmetic
from vgg.training.identity import digest, run_identity
from vgg.training.starting_weights import normalized_init

IDENTITY, IDENTITY_WHEN_SET, RECIPE, HOW = "identity", "identity when set", "recipe", "how"
DEFAULT_PROFILE = "smoke"
SYNC_EVERY = 50
"""Steps between read-backs of the training sums from the device (and checks for stop requests)."""


def option(role: str, help: str, default=MISSING, kind: type = str, choices: tuple | None = None, required: bool = False) -> Field:
    """A `TrainConfig` field: its role in the run's identity, and its command-line option."""
    metadata = {"role": role, "help": help, "kind": kind, "choices": choices, "required": required}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainConfig:
    """A training run (see the module's doc for what each field's role means)."""

    config: str = option(IDENTITY, "a configuration of Table 1: A, A-LRN, B, C, D, E (or B-5x5)", required=True)
    train_scale: str = option(IDENTITY, "S in paper units: 256, 384, or a jitter range 256:512", required=True)
    data: str = option(IDENTITY, "dataset folder (default: the profile's; smoke: data/synthetic)")
    profile: str = option(IDENTITY, f"paper | smoke | ci (experiments/profiles.toml; default {DEFAULT_PROFILE})", DEFAULT_PROFILE)
    init: str | None = option(IDENTITY, "where the first weights come from (vgg.training.starting_weights): random (the profile's random init, the default) | paper (N(0, 0.01^2)) | glorot | from:RUN (a finished run: net A, or the same config to fine-tune)", None)
    epochs: int | None = option(IDENTITY, f"maximum epochs (default: the profile's; paper {PAPER.epochs})", None, int)
    batch_size: int | None = option(IDENTITY, f"global batch over all processes (default: the profile's; paper {PAPER.batch_size})", None, int)
    lr: float | None = option(IDENTITY, f"initial learning rate (default {PAPER.lr:g}; the profile's finetune_lr, {PAPER.finetune_lr:g} in the paper, when fine-tuning the same config)", None, float)
    momentum: float = option(IDENTITY, f"SGD momentum (default {PAPER.momentum})", PAPER.momentum, float)
    weight_decay: float = option(IDENTITY, f"L2 weight decay (default {PAPER.weight_decay:g})", PAPER.weight_decay, float)
    dropout: float | None = option(IDENTITY, f"dropout on FC1 and FC2 (default: the profile's; paper {PAPER.dropout})", None, float)
    seed: int = option(IDENTITY, "seed of the init, the data order, the augmentation and dropout (default 0)", 0, int)
    accum: int = option(IDENTITY, "gradient accumulation steps per optimizer step (default 1)", 1, int)
    normalization: str = option(IDENTITY, "mean-rgb (the paper's) | torchvision", "mean-rgb")
    batch_norm: bool = option(IDENTITY, "BatchNorm after every conv (not in the paper)", False, bool)
    val_images: int | None = option(IDENTITY, "per-epoch validation subset size (default: the profile's; 0 = all)", None, int)
    plateau_patience: int | None = option(IDENTITY, "epochs without a val gain before the lr drops (default: the profile's)", None, int)
    weights: str | None = option(IDENTITY_WHEN_SET, "fine-tuning on these classes from trained weights, a new last layer: torchvision:NAME, a torchvision-format file, or checkpoint:RUN (replaces --init)", None)
    freeze: str = option(IDENTITY_WHEN_SET, "features: train the FC layers only (fine-tuning a trained net)", "none", choices=FREEZE_CHOICES)
    head_lr_mult: float = option(IDENTITY_WHEN_SET, "fine-tuning: learning-rate multiple of the new last layer (default 1)", 1.0, float)
    regression: str = option(
        IDENTITY_WHEN_SET, "Appendix A's localisation net: the last FC predicts a box (centre x, centre y, width, height) with a Euclidean "
        "loss, for one class-agnostic box (scr) or one per class (pcr), from the dataset's box annotations; init from:RUN gives every other "
        "layer (default none: class scores)", "none", choices=("none", *REGRESSIONS),
    )
    precision: str = option(
        IDENTITY_WHEN_SET, "the training arithmetic: fp32, bf16 (autocast), or auto (default: bf16 on CUDA, and on a CPU where a bf16 conv step "
        "measures at least 1.3x the fp32 one; decided once per run, kept in its checkpoints, recorded in its identity unless fp32)",
        "auto", choices=arithmetic.CHOICES,
    )
    lrn_alpha: float | None = option(RECIPE, "A-LRN: PyTorch's LRN alpha (default 5e-4, the AlexNet paper's; 1e-4 for the alpha/n reading)", None, float)
    workers: int | None = option(HOW, "loader processes per rank (default: from the CPU count)", None, int)
    device: str = option(HOW, "auto | cpu | cuda", "auto")
    compile: bool = option(HOW, "torch.compile the network", False, bool)
    checkpoint_minutes: float = option(HOW, "also checkpoint every N minutes (default 10)", 10.0, float)
    checkpoint_steps: int = option(HOW, "also checkpoint every N steps (0: off)", 0, int)
    decode: str = option(
        HOW, "where training images are decoded and augmented: cpu (loader workers), gpu (the training device, nvJPEG on CUDA), "
        "auto (default: cpu off CUDA; on CUDA, gpu unless the CPU loader measurably keeps up with the step, decided once per run: "
        "kept in its checkpoints, rank 0's choice for every rank)", "auto", choices=("cpu", "gpu", "auto"),
    )
    sync_every: int = option(HOW, f"read the training loss and counts back from the device, and check for stop requests, every N steps (default {SYNC_EVERY}; 0: at each epoch's end only)", SYNC_EVERY, int)
    max_scale: int | None = option(HOW, "refuse a training scale S above N paper units (default 1024, twice the paper's largest): memory grows as its square", None, int)
    skip_bad_images: bool = option(HOW, "skip unreadable images (listed each epoch, counted in metrics.csv)", False, bool)
    progress: bool = option(HOW, "a progress bar (--no-progress: none)", True, bool)
    tensorboard: bool = option(HOW, "also write each epoch's scalars under RUN/tensorboard/, for `tensorboard --logdir runs/` (needs the tensorboard package)", False, bool)

    def __post_init__(self) -> None:
        object.__setattr__(self, "init", normalized_init(self.init))  # "random" is stored as None: the hashes of existing runs
        if self.regression != "none" and self.decode == "gpu":
            raise ValueError("--regression trains on boxes that follow each crop, decoded on the CPU: leave --decode at auto or cpu")

    def settings(self) -> dict:
        """The fields that define what the run computes, as given (paths included). The LRN constant
        is not among them: the identity's recipe holds its value, given or default. The precision is
        the one it trains in (`auto` decided, `arithmetic_precision`), left out when fp32: the
        arithmetic of every run from before it was recorded."""
        chosen = {}
        for item in fields(self):
            role, value = item.metadata["role"], getattr(self, item.name)
            if item.name == "precision":
                value = self.arithmetic_precision()
                if value != "fp32":
                    chosen[item.name] = value
            elif role == IDENTITY or (role == IDENTITY_WHEN_SET and value != item.default):
                chosen[item.name] = value
        return chosen

    def arithmetic_precision(self) -> str:
        """fp32 or bf16: `precision`, with `auto` decided for the device the run trains on (`vgg.runtime.precision`)."""
        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        return arithmetic.resolve(self.precision, device)

    def identity(self, splits: list[ImageList] | None = None) -> dict:
        """The run's identity (`vgg.training.identity`): its settings with the dataset and the parent by
        content, and its profile's recipe with the LRN constant it trains with."""
        return run_identity(self.settings(), get_profile(self.profile), self.lrn_alpha, splits)

    def run_hash(self) -> str:
        return digest(self.identity())


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The `train` options, one per `TrainConfig` field."""
    for item in fields(TrainConfig):
        meta = item.metadata
        if meta["kind"] is bool:
            if item.default:
                parser.add_argument(f"--no-{_dashed(item.name)}", dest=item.name, action="store_false", help=meta["help"])
            else:
                parser.add_argument(f"--{_dashed(item.name)}", dest=item.name, action="store_true", help=meta["help"])
            continue
        parser.add_argument(f"--{_dashed(item.name)}", dest=item.name, type=meta["kind"], choices=meta["choices"], required=meta["required"], help=meta["help"])


def config_from_arguments(args: argparse.Namespace, **overrides) -> TrainConfig:
    """The `TrainConfig` of parsed `train` arguments (an option left out takes the field's default)."""
    given = {item.name: getattr(args, item.name) for item in fields(TrainConfig) if getattr(args, item.name, None) is not None}
    return TrainConfig(**{**given, **overrides})


def train_command(cfg: TrainConfig, out: Path | str, program: list[str] | None = None) -> list[str]:
    """The `python -m vgg train` command line of `cfg` (for torchrun and SLURM jobs); `program`
    replaces `python -m vgg` (e.g. `python -c CODE` that calls `vgg.cli.main`)."""
    command = [*(program or [sys.executable, "-m", "vgg"]), "train", "--out", str(out)]
    for item in fields(cfg):
        value = getattr(cfg, item.name)
        if value == item.default or value is None:
            continue
        if item.metadata["kind"] is bool:
            command.append(f"--{'no-' if item.default else ''}{_dashed(item.name)}")
        else:
            command.extend([f"--{_dashed(item.name)}", str(value)])
    return command


def _dashed(name: str) -> str:
    return name.replace("_", "-")
