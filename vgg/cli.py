"""`python -m vgg <command>`: the suite's command line.

Each command imports what it runs when it runs (the imports marked "on use"): loading the
training stack, torchvision or the runner costs every other command seconds of start-up."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from vgg.cli_data import add_data_commands
from vgg.evaluation.scores import fusion_row
from vgg.nets.complexity import format_summary, summarize
from vgg.nets.configs import CONFIGS
from vgg.nets.models import FREEZE_CHOICES, VGGSpec
from vgg.nets.trained import load_net, profile_for_crop
from vgg.recipe.profiles import get_profile
from vgg.runtime.precision import CHOICES as PRECISION_CHOICES
from vgg.runtime.stop_signals import EXIT_BAD_INPUT, run_stoppable
from vgg.suite.plan import TABLES, load_experiment
from vgg.suite.reports import REPORTS, write_report
from vgg.suite.results_csv import upsert_rows
from vgg.training.run_config import DEFAULT_PROFILE, TrainConfig, add_train_arguments, config_from_arguments
from vgg.training.starting_weights import CHECKPOINT_PREFIX

# The commands import what only they need (training, evaluation, the runner, torchvision's decoders)
# when they run, so that `python -m vgg params` and every command's --help start without them.

PRECISION_HELP = "test protocols' arithmetic: fp32 (TF32 off; the paper's), bf16 autocast, or auto (bf16 on CUDA and fast-bf16 CPUs)"
MAX_IMAGE_PIXELS_HELP = "decode image files that declare up to N pixels (default 89,478,485, PIL's limit; ImageNet's are far below it): a file declaring more is a bad image, refused before it is decoded"
MAX_SCALE_HELP = "refuse test scales above N paper units (default 1024, twice the paper's largest): memory grows as the square of the scale"


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


def cmd_recipe(args: argparse.Namespace) -> None:
    print(get_profile(args.profile).recipe_table())


def cmd_report(args: argparse.Namespace) -> None:
    for name in args.names:
        print(f"wrote {write_report(name, args.out_dir, args.profile, args.results, args.data)}")


def cmd_gpu_check(args: argparse.Namespace) -> None:
    from vgg.suite.gpu_check import gpu_check  # on use (start-up: see the module's doc)

    gpu_check(args.size, args.out, args.work_dir)


def cmd_train(args: argparse.Namespace) -> None:
    from vgg.training.train import train  # on use (start-up: see the module's doc)

    profile = get_profile(args.profile or DEFAULT_PROFILE)
    data = args.data or profile.data
    if not data:
        raise ValueError(f"the {profile.name} profile has no default dataset: pass --data DIR")
    train(config_from_arguments(args, data=str(data)), args.out)


def _scales(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace("|", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales are comma-separated integers in paper units (e.g. 256,384,512), got {text!r}") from None


def cmd_evaluate(args: argparse.Namespace) -> None:
    from vgg.evaluation.evaluate import EvalRequest, run_evaluation  # on use (start-up: see the module's doc)

    row = run_evaluation(EvalRequest(
        checkpoint=args.checkpoint, weights=args.weights, data=args.data, method=args.method, scales=args.scales, flip=not args.no_flip,
        dense_softmax=args.dense_softmax, limit=args.limit, save_scores_to=args.save_scores, workers=args.workers,
        device=args.device, skip_bad_images=args.skip_bad_images, precision=args.precision, max_scale=args.max_scale,
    ))
    if row is not None and args.out:  # rank 0's row
        upsert_rows(Path(args.out), [row])


def cmd_fuse(args: argparse.Namespace) -> None:
    from vgg.evaluation.evaluate import errors_line  # on use (start-up: see the module's doc)

    row = fusion_row(args.scores)
    print(f"fusion of {len(args.scores)} nets ({row['config']}): {errors_line(row)} on {row['images']} images")
    if args.out:
        upsert_rows(args.out, [row])


def cmd_run(args: argparse.Namespace) -> None:
    from vgg.suite.runner import ExperimentRunner  # on use (start-up: see the module's doc)

    runner = ExperimentRunner(
        profile=args.profile, data=args.data, runs_root=args.runs, results_dir=args.results, gpus=args.gpus,
        launch=args.launch, workers=args.workers, device=args.device, slurm_args=args.slurm_args, progress=not args.no_progress,
        seeds=args.seeds, precision=args.precision, jobs=args.jobs, tensorboard=args.tensorboard,
        transfer_roots=dict(args.transfer_data), weights_dir=args.weights_dir,
    )
    runner.run_all([load_experiment(name, runner.catalog) for name in args.experiments])


def _named_root(text: str) -> tuple[str, str]:
    """NAME=DIR of --transfer-data."""
    name, equals, root = text.partition("=")
    if not equals or not name or not root:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR (e.g. VOC2007=/data/VOCdevkit), got {text!r}")
    return name.upper(), root


def cmd_status(args: argparse.Namespace) -> None:
    from vgg.suite.runner import ExperimentRunner  # on use (start-up: see the module's doc)
    from vgg.suite.status import SuiteStatus

    data = args.data or get_profile(args.profile).data or "(no dataset: status reads none)"
    runner = ExperimentRunner(profile=args.profile, data=data, runs_root=args.runs, results_dir=args.results, seeds=args.seeds, jobs=args.jobs)
    print(SuiteStatus(runner, [load_experiment(name, runner.catalog) for name in args.experiments or TABLES], args.reports).format())


def _add_suite_options(parser: argparse.ArgumentParser) -> None:
    """The options that name a suite's folders and seeds: `run` and `status` share them."""
    parser.add_argument("--profile", default="smoke", help="paper | smoke | ci (default smoke)")
    parser.add_argument("--data", help="dataset folder (default: the profile's; smoke: data/synthetic, generated when absent)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="runs folder (default runs/)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (default results/)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every run with seeds 0..N-1 (seed k >= 1 into RUNS/<profile>/<run>-seed<k>) and add mean rows (default 1)")
    parser.add_argument("--jobs", type=int, default=None, help="runs trained at once, each in a process with its share of the CPU threads "
                        "(default: 2 on a CPU of 2 or more cores, 1 on GPUs)")


def cmd_predict(args: argparse.Namespace) -> None:
    from vgg.evaluation.predict import predict, save_figure  # on use (start-up: see the module's doc)

    net = load_net(args.checkpoint, args.weights)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    predictions = predict(net, args.images, args.method, args.topk, args.scales, device, args.max_scale)
    for prediction in predictions:
        print(prediction.line())
    if args.save_figure:
        print(f"wrote {save_figure(predictions, args.save_figure)}")


def cmd_finetune(args: argparse.Namespace) -> None:
    from vgg.training.train import train  # on use (start-up: see the module's doc)

    weights = f"{CHECKPOINT_PREFIX}{args.checkpoint}" if args.checkpoint else args.weights
    source = load_net(checkpoint=args.checkpoint) if args.checkpoint else load_net(weights=args.weights)
    profile = args.profile or profile_for_crop(source.model.spec.crop).name
    cfg = TrainConfig(
        config=source.model.config, train_scale=args.train_scale, data=str(args.data), profile=profile, weights=weights, freeze=args.freeze,
        head_lr_mult=args.head_lr_mult, normalization=source.normalization.name, batch_norm=source.model.spec.batch_norm, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, workers=args.workers, device=args.device, progress=not args.no_progress,
    )
    train(cfg, args.out)


def cmd_pretrained(args: argparse.Namespace) -> None:
    from vgg.suite.pretrained import run_pretrained  # on use (start-up: see the module's doc)

    run_pretrained(args.weights_dir, str(args.data), args.results / "pretrained.csv", args.limit, args.workers)


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

    recipe = commands.add_parser("recipe", help="the paper's training recipe beside a profile's (vgg/recipe/paper.py, experiments/profiles.toml)")
    recipe.add_argument("--profile", default="smoke", help="paper, smoke or ci (default smoke)")
    recipe.set_defaults(handler=cmd_recipe)

    report = commands.add_parser("report", help="write markdown reports under reports/")
    report.add_argument("names", nargs="+", choices=REPORTS, metavar="NAME", help=f"one or more of {', '.join(REPORTS)}")
    report.add_argument("--out-dir", type=Path, default=Path("reports"), help="where to write (default reports/)")
    report.add_argument("--profile", default="smoke", help="whose results to report (tables 3-7, ablations; default smoke)")
    report.add_argument("--results", type=Path, default=Path("results"), help="results folder (default results/)")
    report.add_argument("--data", help="the dataset, when the results hold several for the profile")
    report.set_defaults(handler=cmd_report)

    train = commands.add_parser("train", help="train one net with the paper's recipe (resumes; skips if finished)")
    train.add_argument("--out", type=Path, required=True, help="run folder: checkpoint.pt, metrics.csv, curves.png, DONE")
    add_train_arguments(train)  # one option per field of vgg.training.run_config.TrainConfig
    train.add_argument("--max-image-pixels", type=int, metavar="N", help=MAX_IMAGE_PIXELS_HELP)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="a test protocol of Sect. 3.2 on a trained net")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="RUN_DIR or RUN_DIR/checkpoint.pt of our training")
    source.add_argument("--weights", help="a torchvision-format VGG state dict (e.g. vgg16-397923af.pth)")
    evaluate.add_argument("--data", help="dataset folder (default: the one the net was trained on; torchvision weights: the profile's)")
    evaluate.add_argument("--method", default="dense", choices=("dense", "multi-crop", "multi-crop+dense", "centre-crop"))
    evaluate.add_argument("--scales", type=_scales, help="test scales Q in paper units, e.g. 256,384,512 (default: the paper's single scale for the net)")
    evaluate.add_argument("--no-flip", action="store_true", help="do not average with the mirrored image")
    evaluate.add_argument("--dense-softmax", default="after-average", choices=("after-average", "before-average"),
                          help="soft-max after (default) or before the spatial average of the dense score map")
    evaluate.add_argument("--limit", type=int, help="evaluate a fixed subset of N val images")
    evaluate.add_argument("--save-scores", help="write per-image posteriors here (for fuse)")
    evaluate.add_argument("--out", type=Path, help="upsert the results row into this CSV")
    evaluate.add_argument("--workers", type=int, help="loader processes (default: from the CPU count)")
    evaluate.add_argument("--device", default="auto", help="auto | cpu | cuda")
    evaluate.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images (listed at the end)")
    evaluate.add_argument("--precision", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    evaluate.add_argument("--max-scale", type=int, metavar="N", help=MAX_SCALE_HELP)
    evaluate.add_argument("--max-image-pixels", type=int, metavar="N", help=MAX_IMAGE_PIXELS_HELP)
    evaluate.set_defaults(handler=cmd_evaluate)

    fuse = commands.add_parser("fuse", help="ConvNet fusion: average the posteriors of saved score files")
    fuse.add_argument("scores", nargs="+", help="score files written by evaluate --save-scores")
    fuse.add_argument("--out", type=Path, help="upsert the results row into this CSV")
    fuse.set_defaults(handler=cmd_fuse)

    run = commands.add_parser("run", help="run experiments (tables): train what is missing, evaluate, write results/<table>.csv")
    run.add_argument("experiments", nargs="+", help="table3 ... table7, ablations, or paths to experiment files")
    _add_suite_options(run)
    run.add_argument("--gpus", type=int, default=0, help="train and evaluate under torchrun with this many processes")
    run.add_argument("--launch", default="local", choices=("local", "slurm"), help="slurm: submit each run as an sbatch job")
    run.add_argument("--slurm-args", default="", help="extra #SBATCH options, e.g. '--partition=gpu --time=72:00:00'")
    run.add_argument("--workers", type=int, help="loader processes (default: from the CPU count)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--tensorboard", action="store_true", help="each run's per-epoch scalars under RUN/tensorboard/ (tensorboard --logdir RUNS)")
    run.add_argument("--precision", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    run.add_argument("--max-image-pixels", type=int, metavar="N", help=MAX_IMAGE_PIXELS_HELP)
    run.add_argument("--transfer-data", type=_named_root, action="append", default=[], metavar="NAME=DIR",
                     help="Appendix B (table11, table12): a target dataset's root, NAME one of VOC2007, VOC2012, CALTECH101, CALTECH256 (repeatable)")
    run.add_argument("--weights-dir", type=Path, help="Appendix B at the paper profile: a folder with torchvision's vgg16-*.pth and vgg19-*.pth "
                     "(default: torchvision's cache, downloading when missing)")
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", help="where a suite run stands: each run's state, epoch, best val error, time left (reads files only)")
    status.add_argument("experiments", nargs="*", help="table3 ... table7, ablations, or experiment files (default: every table)")
    _add_suite_options(status)
    status.add_argument("--reports", type=Path, default=Path("reports"), help="reports folder (default reports/)")
    status.set_defaults(handler=cmd_status)

    predict = commands.add_parser("predict", help="top-k classes of images under a test protocol")
    predict.add_argument("images", nargs="+", type=Path, help="image files (JPEG or PNG)")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="torchvision-format state dict, or torchvision:vgg16 (ImageNet class names)")
    source.add_argument("--checkpoint", help="one of our runs (class names from its dataset)")
    predict.add_argument("--method", default="dense", choices=("dense", "multi-crop", "multi-crop+dense", "centre-crop"))
    predict.add_argument("--scales", type=_scales, help="test scales in paper units (default: the net's single scale; 256 for weights)")
    predict.add_argument("--max-scale", type=int, metavar="N", help=MAX_SCALE_HELP)
    predict.add_argument("--topk", type=int, default=5)
    predict.add_argument("--save-figure", type=Path, help="draw each image beside a bar chart of its top-k")
    predict.add_argument("--device", default="auto", help="auto | cpu | cuda")
    predict.add_argument("--max-image-pixels", type=int, metavar="N", help=MAX_IMAGE_PIXELS_HELP)
    predict.set_defaults(handler=cmd_predict)

    finetune = commands.add_parser("finetune", help="transfer a trained VGG to a folder of images (a new last layer)")
    source = finetune.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="torchvision-format state dict, or torchvision:vgg16")
    source.add_argument("--checkpoint", help="one of our runs")
    finetune.add_argument("--data", type=Path, required=True, help="class-folder dataset: DIR/train/<class>/*, DIR/val/<class>/*")
    finetune.add_argument("--out", type=Path, required=True, help="run folder (resumes; skips if finished)")
    finetune.add_argument("--freeze", default="none", choices=FREEZE_CHOICES, help="features: train the FC layers only")
    finetune.add_argument("--head-lr-mult", type=float, default=10.0, help="learning-rate multiplier of the new last layer (default 10)")
    finetune.add_argument("--train-scale", default="256:512", help="S in paper units (default 256:512, the paper's jittering)")
    finetune.add_argument("--profile", help="default: the profile of the weights' crop (paper for torchvision's)")
    finetune.add_argument("--epochs", type=int, help="maximum epochs (default: the profile's fine-tuning length)")
    finetune.add_argument("--batch-size", type=int)
    finetune.add_argument("--lr", type=float, help="initial learning rate (default: the profile's finetune_lr, 1e-3)")
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument("--workers", type=int)
    finetune.add_argument("--device", default="auto")
    finetune.add_argument("--no-progress", action="store_true")
    finetune.add_argument("--max-image-pixels", type=int, metavar="N", help=MAX_IMAGE_PIXELS_HELP)
    finetune.set_defaults(handler=cmd_finetune)

    pretrained = commands.add_parser("pretrained", help="evaluate every VGG weight file of a folder under the paper's protocols")
    pretrained.add_argument("--weights-dir", type=Path, required=True, help="folder of torchvision-format VGG state dicts")
    pretrained.add_argument("--data", type=Path, required=True, help="dataset folder (ImageNet for numbers comparable with the paper)")
    pretrained.add_argument("--results", type=Path, default=Path("results"))
    pretrained.add_argument("--limit", type=int, help="a fixed subset of N val images")
    pretrained.add_argument("--workers", type=int)
    pretrained.set_defaults(handler=cmd_pretrained)

    check = commands.add_parser("gpu-check", help="measure the cluster path on this machine's device (issue 15): reports/gpu.md")
    check.add_argument("--size", default="full", choices=("full", "tiny"), help="full: the GPU check; tiny: toy sizes on any device (the tests)")
    check.add_argument("--out", type=Path, default=Path("reports/gpu.md"))
    check.add_argument("--work-dir", type=Path, default=Path("data"), help="where the generated JPEGs go (default data/)")
    check.set_defaults(handler=cmd_gpu_check)

    add_data_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Bad input ends with a one-line error and exit status 2; a stop signal with 75
    (preemption: run the same command again) or 130 (Ctrl-C); see README, "When things go wrong"."""
    return run_stoppable(lambda: _run_command(argv))


def _run_command(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "max_image_pixels", None) is None:
            args.handler(args)
        else:
            from vgg.data.loaders import image_pixel_limit  # on use (start-up: see the module's doc)

            with image_pixel_limit(args.max_image_pixels):
                args.handler(args)
    except (ValueError, OSError) as error:  # OSError: a file the command cannot use (permissions, a read-only disk)
        from vgg.data.loaders import worker_error_message  # on use (start-up: see the module's doc)

        print(f"error: {worker_error_message(error) or _os_error_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def _os_error_line(error: Exception) -> str:
    """An error's line; a file the command may not write (a read-only disk or folder) says what to do."""
    if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and error.filename:
        return f"cannot write or open {error.filename}: {error.strerror}; make its folder writable, or point the command at one that is (--runs, --results, --out, --out-dir)"
    return str(error)
