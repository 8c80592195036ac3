"""`python -m vgg <command>`: the suite's command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vgg.complexity import format_summary, summarize
from vgg.configs import CONFIGS
from vgg.datasets import load_split
from vgg.models import VGGSpec
from vgg.report import REPORTS, write_report
from vgg.synthetic import SynthSpec, generate


def _add_network_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-classes", type=int, default=1000, help="classes of the last layer (default 1000)")
    parser.add_argument("--width", type=int, default=1, help="divisor of every channel and FC width (default 1)")
    parser.add_argument("--crop", type=int, default=224, help="training crop size, a multiple of 32 (default 224)")
    parser.add_argument("--batch-norm", action="store_true", help="BatchNorm after every conv (not in the paper)")


def _spec(args: argparse.Namespace, config: str) -> VGGSpec:
    return VGGSpec(config, args.num_classes, args.width, args.crop, args.batch_norm)


def cmd_params(args: argparse.Namespace) -> None:
    summaries = [summarize(_spec(args, name)) for name in CONFIGS]
    print(f"{'config':<8} {'weight layers':>13} {'parameters':>14} {'millions':>9} {'GMACs/image':>12}")
    for name, summary in zip(CONFIGS, summaries):
        print(
            f"{name:<8} {summary.weight_layers:>13} {summary.params:>14,} "
            f"{summary.params / 1e6:>9.1f} {summary.macs / 1e9:>12.3f}"
        )


def cmd_describe(args: argparse.Namespace) -> None:
    print(format_summary(summarize(_spec(args, args.config))))


def cmd_report(args: argparse.Namespace) -> None:
    for name in args.names:
        print(f"wrote {write_report(name, args.out_dir)}")


def cmd_data_synth(args: argparse.Namespace) -> None:
    spec = SynthSpec(args.classes, args.train_per_class, args.val_per_class, args.seed)
    started = time.perf_counter()
    out = generate(args.out, spec, workers=args.workers)
    print(f"synthetic dataset in {out} ({time.perf_counter() - started:.1f} s): {spec}")


def cmd_data_inspect(args: argparse.Namespace) -> None:
    for split in ("train", "val"):
        print(load_split(args.data, split).describe())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vgg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    params = commands.add_parser("params", help="Table 2: parameters and MACs of every configuration")
    _add_network_options(params)
    params.set_defaults(handler=cmd_params)

    describe = commands.add_parser("describe", help="layer list with output shapes, parameters and MACs")
    describe.add_argument("config", help=f"one of {', '.join(CONFIGS)}")
    _add_network_options(describe)
    describe.set_defaults(handler=cmd_describe)

    report = commands.add_parser("report", help="write markdown reports under reports/")
    report.add_argument("names", nargs="+", choices=REPORTS, metavar="NAME", help=f"one or more of {', '.join(REPORTS)}")
    report.add_argument("--out-dir", type=Path, default=Path("reports"), help="where to write (default reports/)")
    report.set_defaults(handler=cmd_report)

    data = commands.add_parser("data", help="datasets: generate the synthetic set, inspect a data folder")
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
    inspect = data_commands.add_parser("inspect", help="detect a data folder's layout and count its images")
    inspect.add_argument("--data", type=Path, required=True, help="the data folder")
    inspect.set_defaults(handler=cmd_data_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; bad input ends with a one-line error and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
