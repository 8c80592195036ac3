"""`python -m vgg data <command>`: generate the synthetic set and its boxes, write Fashion-MNIST, hold out train
images, inspect a data folder (the `data` commands of `vgg.cli`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vgg.data.datasets import load_split
from vgg.data.synthetic import SynthSpec, ensure_synthetic_boxes, generate


def cmd_data_synth(args: argparse.Namespace) -> None:
    spec = SynthSpec(args.classes, args.train_per_class, args.val_per_class, args.seed)
    started = time.perf_counter()
    out = generate(args.out, spec, workers=args.workers)
    print(f"synthetic dataset in {out} ({time.perf_counter() - started:.1f} s): {spec.describe()}")


def cmd_data_synth_boxes(args: argparse.Namespace) -> None:
    print(f"box annotations of {ensure_synthetic_boxes(args.data, workers=args.workers)}: LOC_train_solution.csv and LOC_val_solution.csv")


def cmd_data_holdout(args: argparse.Namespace) -> None:
    from vgg.data.holdout import write_holdout  # on use (start-up: see the module's doc)

    out = write_holdout(args.data, args.out, args.per_class, args.seed)
    print(f"held-out split in {out}: val/ holds {args.per_class} train images per class of {args.data}, train/ the rest (links)")


def cmd_data_fashion_mnist(args: argparse.Namespace) -> None:
    from vgg.data.fashion_mnist import write_fashion_mnist  # on use (start-up: see the module's doc)

    out = write_fashion_mnist(args.source, args.out, args.train_per_class, args.val_per_class)
    print(f"Fashion-MNIST in {out}: {args.train_per_class} train and {args.val_per_class} val images per class, class-folder layout")


def cmd_data_inspect(args: argparse.Namespace) -> None:
    for split in ("train", "val"):
        print(load_split(args.data, split).describe())


def add_data_commands(commands) -> None:
    """The `data` command and its sub-commands, on the command line's sub-parsers `commands`."""
    data = commands.add_parser("data", help="datasets: generate the synthetic set, write Fashion-MNIST, hold out train images, inspect a data folder")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data_commands.add_parser("synth", help="generate the embedded synthetic dataset (deterministic)")
    synth.add_argument("--out", type=Path, required=True, help="folder to create (class-folder layout)")
    defaults = SynthSpec()
    synth.add_argument("--classes", type=int, default=defaults.classes, help=f"number of classes (default {defaults.classes})")
    synth.add_argument("--train-per-class", type=int, default=defaults.train_per_class, help=f"default {defaults.train_per_class}")
    synth.add_argument("--val-per-class", type=int, default=defaults.val_per_class, help=f"default {defaults.val_per_class}")
    synth.add_argument("--seed", type=int, default=defaults.seed, help="same seed, byte-identical files (default 0)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    synth.set_defaults(handler=cmd_data_synth)
    synth_boxes = data_commands.add_parser("synth-boxes", help="write the box annotations of a synthetic set generated before it wrote them (images unchanged)")
    synth_boxes.add_argument("--data", type=Path, required=True, help="the synthetic set's folder")
    synth_boxes.set_defaults(handler=cmd_data_synth_boxes, workers=None)
    holdout = data_commands.add_parser("holdout", help="hold out train images as a val split, to choose settings without the val images")
    holdout.add_argument("--data", type=Path, required=True, help="the dataset whose train images are split")
    holdout.add_argument("--out", type=Path, required=True, help="folder to create (class folders of links)")
    holdout.add_argument("--per-class", type=int, required=True, help="train images per class held out as val/")
    holdout.add_argument("--seed", type=int, default=0, help="which images are held out (default 0)")
    holdout.set_defaults(handler=cmd_data_holdout)
    fashion = data_commands.add_parser("fashion-mnist", help="write Fashion-MNIST's IDX files in the class-folder layout")
    fashion.add_argument("--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"), help="folder of the four .gz IDX files (default: Debian's)")
    fashion.add_argument("--out", type=Path, required=True, help="folder to create")
    fashion.add_argument("--train-per-class", type=int, default=1000, help="the first N of each class of the training file (default 1000)")
    fashion.add_argument("--val-per-class", type=int, default=250, help="the first N of each class of the test file (default 250)")
    fashion.set_defaults(handler=cmd_data_fashion_mnist)
    inspect = data_commands.add_parser("inspect", help="detect a data folder's layout and count its images")
    inspect.add_argument("--data", type=Path, required=True, help="the data folder")
    inspect.set_defaults(handler=cmd_data_inspect)
