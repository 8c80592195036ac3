"""A net evaluated over a dataset under one of the paper's test protocols (`vgg.protocols`, Sect. 3.2),
split over the ranks when distributed; per-image scores, their fusion (Table 6) and results rows.

Dense and centre-crop evaluation batch images of the same rescaled size (`Batcher`): the
posteriors are those of one image at a time, up to float rounding, in a fraction of the time.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from vgg import distributed
from vgg.checkpoint import DAMAGED, git_commit, load_checkpoint, load_run_checkpoint, read_done
from vgg.datasets import ImageList, load_split, missing_classes_warning
from vgg.loaders import BadImageError, EpochSampler, default_workers, read_image
from vgg.metrics import error_percent, per_image_errors, topk_correct
from vgg.models import VGG, VGGSpec
from vgg.normalization import TORCHVISION, Normalization
from vgg.profiles import Profile
from vgg.protocols import Batcher, Protocol
from vgg.protocols import COMBINED_METHODS, DENSE_SOFTMAX, GRID, METHODS, grid_crops, grid_positions  # noqa: F401 (importable from here too)
from vgg.statistics import error_interval_fields
from vgg.stop_signals import ignore_stop_signals
from vgg.torchvision_compat import vgg_from_torchvision_state_dict
from vgg.transforms import rescale

SCORES_FORMAT = 1
MAX_TEST_SCALE = 1024
"""The largest test scale Q (paper units) evaluated without --max-scale: twice the paper's largest, 512."""


@dataclass
class Net:
    """A trained net ready to evaluate, with where it came from."""

    model: VGG
    normalization: Normalization
    profile: Profile
    source: Path
    run: str
    train_scale: str
    classes: tuple[str, ...] | None
    data_dir: str | None = None  # the dataset a checkpoint was trained on
    seed: int | None = None  # the training seed of our checkpoints (None: published weights)
    training: str = ""  # our checkpoints: "finished", or "unfinished" (mid-run: preempted, killed, still training)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:16]


def load_net(checkpoint: Path | str | None = None, weights: Path | str | None = None) -> Net:
    """A net from one of our checkpoints, or from a weight spec (`vgg.weights`: a torchvision-format
    state dict file, or torchvision:vgg16)."""
    if (checkpoint is None) == (weights is None):
        raise ValueError("give exactly one of --checkpoint (our runs) and --weights (a torchvision-format state dict or torchvision:NAME)")
    if checkpoint is not None:
        path = Path(checkpoint)
        path = path / "checkpoint.pt" if path.is_dir() else path
        state = load_run_checkpoint(
            path, "--checkpoint takes a run folder or its checkpoint.pt", damaged=f"it was {DAMAGED}: remove {path.parent} and train that run again"
        )
        model = VGG.from_spec(VGGSpec(**state["spec"]))
        model.load_state_dict(state["model"])
        profile = Profile.from_dict(state["profile"])
        return Net(
            model, Normalization.from_dict(state["normalization"]), profile, path, path.parent.name, state["train_scale"],
            tuple(state["classes"]), state["run"].get("data"), int(state["run"].get("seed", 0)),
            "finished" if training_finished(state, path.parent) else "unfinished",
        )
    from vgg.weights import load_weights

    loaded = load_weights(str(weights))
    model = vgg_from_torchvision_state_dict(loaded.state_dict)
    return Net(model, TORCHVISION, profile_for_crop(model.spec.crop), loaded.path, loaded.name, "unknown", None)


def training_finished(state: dict, run_dir: Path) -> bool:
    """Whether a checkpoint is of a finished run: its folder's DONE is of the same run, or (a copied
    checkpoint) it was saved at an epoch's end after the last epoch or the schedule's stop."""
    done = read_done(run_dir)
    if done is not None and done.get("run_hash") == state.get("run_hash"):
        return True
    at_the_end = state["epoch"] >= state.get("max_epochs", float("inf")) or state["schedule"].get("finished", False)
    return state["step_in_epoch"] == 0 and at_the_end


def unfinished_warning(checkpoint: Path) -> str:
    """The warning line for scoring the checkpoint of an unfinished run."""
    return (
        f"warning: {checkpoint} is the checkpoint of an unfinished run (no DONE beside it: preempted, killed or still "
        f"training): these errors are of a partly trained net; the results row says training=unfinished"
    )


def default_dataset(net: Net, data: str | None) -> str:
    """The dataset to evaluate `net` on: `data` when given, else the one the net was trained on (our
    checkpoints record it), else its profile's default."""
    if data:
        return data
    if net.data_dir:
        if not Path(net.data_dir).is_dir():
            raise ValueError(
                f"{net.run} was trained on {net.data_dir}, which is not a folder from here; pass --data DIR "
                "(the dataset moved, or the path was relative to another working directory)"
            )
        return net.data_dir
    if not net.profile.data:
        raise ValueError("pass --data DIR (the net's profile has no default dataset)")
    return net.profile.data


def profile_for_crop(crop: int) -> Profile:
    """The profile whose crop is `crop` (torchvision's weights: 224, the paper profile)."""
    from vgg.profiles import load_profiles

    for profile in load_profiles().values():
        if profile.crop == crop:
            return profile
    raise ValueError(f"no profile has a {crop} px crop; add one to experiments/profiles.toml")


class ScaledImages(Dataset):
    """Each image decoded once and rescaled to every test scale (in loader workers)."""

    def __init__(self, images: ImageList, scales: list[int], skip_bad_images: bool = False):
        self.images, self.scales, self.skip_bad_images = images, scales, skip_bad_images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]):
        _, index = key
        path, label = self.images.samples[index]
        try:
            image = read_image(path)
        except BadImageError:
            if self.skip_bad_images:
                return index, label, None
            raise
        return index, label, [rescale(image, scale) for scale in self.scales]


@dataclass
class EvalResult:
    posteriors: torch.Tensor  # (N, K) in dataset order
    labels: torch.Tensor
    image_ids: list[str]
    top1_err: float
    top5_err: float
    wall_s: float
    skipped: list[str]
    device: str
    precision: str = "fp32"  # what the protocol computed in (bf16 only under CUDA autocast)


def evaluate(
    net: Net,
    images: ImageList,
    method: str,
    scales: list[int],
    flip: bool = True,
    dense_softmax: str = "after-average",
    workers: int | None = None,
    device: torch.device | str | None = None,
    skip_bad_images: bool = False,
    precision: str | None = None,
    max_scale: int | None = None,
) -> EvalResult:
    """Run a protocol over every image of `images` (split over the ranks when distributed).

    `scales` are in the paper's units, at most `max_scale` (default: see `check_test_scales`).
    Each image is counted exactly once whatever the number of ranks; every rank gets the
    posteriors of all images in dataset order. `precision` (fp32 or bf16; default: the net's
    profile's `eval_precision`) applies on CUDA.
    """
    check_test_scales(net, scales, max_scale)
    if net.classes is not None and tuple(net.classes) != images.classes:
        raise ValueError(f"the net was trained on {len(net.classes)} other classes than the {len(images.classes)} of {images.root}")
    if net.model.spec.num_classes != len(images.classes):
        raise ValueError(f"the net has {net.model.spec.num_classes} classes, {images.root} has {len(images.classes)}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    pixels = [net.profile.size(scale) for scale in scales]
    if min(pixels) < net.model.spec.crop:
        raise ValueError(f"test scale {min(scales)} ({min(pixels)} px) is below the training crop {net.model.spec.crop} px")
    protocol = Protocol(net, method, flip, dense_softmax, device, precision)
    sampler = EpochSampler(len(images), shuffle=False, rank=rank, world_size=world, pad=False)
    workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", world))) if workers is None else workers
    loader = DataLoader(
        ScaledImages(images, pixels, skip_bad_images), batch_size=None, sampler=sampler, num_workers=workers, prefetch_factor=4 if workers else None,
        worker_init_fn=ignore_stop_signals,
    )
    started = time.perf_counter()
    batcher, done, skipped = Batcher(protocol), [], []
    for index, _, scaled in loader:
        if scaled is None:
            skipped.append(str(images.samples[index][0]))
            continue
        done += batcher.add(index, scaled)
    done += batcher.finish()  # in the order batches completed: sorted by index below
    indices, posteriors = [index for index, _ in done], [posterior for _, posterior in done]
    local = (indices, torch.stack(posteriors) if posteriors else torch.empty(0, len(images.classes)), skipped)
    gathered = distributed.gather_lists([local])  # every rank's part, in rank order
    all_indices = [i for part in gathered for i in part[0]]
    all_posteriors = torch.cat([part[1] for part in gathered])
    order = torch.tensor(all_indices).argsort()
    kept = [all_indices[i] for i in order.tolist()]
    result_posteriors = all_posteriors[order]
    labels = torch.from_numpy(images.samples.labels[kept])
    top1, top5 = topk_correct(result_posteriors, labels)
    ids = images.image_ids()
    return EvalResult(
        posteriors=result_posteriors,
        labels=labels,
        image_ids=[ids[i] for i in kept],
        top1_err=error_percent(top1, len(kept)),
        top5_err=error_percent(top5, len(kept)),
        wall_s=time.perf_counter() - started,
        skipped=[path for part in gathered for path in part[2]],
        device=str(protocol.device),
        precision=protocol.precision,
    )


def average_results(results: list[EvalResult]) -> EvalResult:
    """The posterior average of evaluations of the same images: multi-crop+dense from its dense and
    multi-crop parts gives exactly what evaluating it directly gives, at no cost. `wall_s` is the
    parts' sum (what the combination took to compute)."""
    first = results[0]
    for other in results[1:]:
        if other.image_ids != first.image_ids or not torch.equal(other.labels, first.labels):
            raise ValueError(f"cannot average evaluations of different images ({len(other.image_ids)} vs {len(first.image_ids)})")
    posteriors = torch.stack([result.posteriors for result in results]).mean(dim=0)
    top1, top5 = topk_correct(posteriors, first.labels)
    return EvalResult(
        posteriors=posteriors,
        labels=first.labels,
        image_ids=first.image_ids,
        top1_err=error_percent(top1, len(first.labels)),
        top5_err=error_percent(top5, len(first.labels)),
        wall_s=sum(result.wall_s for result in results),
        skipped=first.skipped,
        device=first.device,
        precision="+".join(dict.fromkeys(result.precision for result in results)),
    )


def save_scores(path: Path | str, result: EvalResult, images: ImageList, provenance: dict) -> None:
    """Per-image posteriors with the dataset, classes, image ids and labels, for fusion and paired
    comparisons. Kept in float32 (200 MB for ImageNet's 50,000 x 1,000): rounding to float16 broke
    near-ties and gave errors other than the results row's, which is computed from these posteriors."""
    from vgg.checkpoint import save_checkpoint

    state = {
        "format": SCORES_FORMAT,
        "dataset": str(images.root),
        "classes": list(images.classes),
        "image_ids": result.image_ids,
        "labels": result.labels,
        "posteriors": result.posteriors.to(torch.float32),
        "provenance": {key: str(value) for key, value in provenance.items()},
    }
    save_checkpoint(state, Path(path))


def load_scores(path: Path | str) -> dict:
    """A score file written by `save_scores`."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"score file {path} {problem} (python -m vgg evaluate --save-scores FILE writes them)")
    state = load_checkpoint(path, "score file", damaged=f"it was {DAMAGED}: write it again with python -m vgg evaluate --save-scores FILE")
    if state.get("format") != SCORES_FORMAT or "posteriors" not in state:
        raise ValueError(f"{path} is not a score file (python -m vgg evaluate --save-scores writes them)")
    return state


def fuse(paths: list[Path | str]) -> tuple[torch.Tensor, dict]:
    """Average the posteriors of several score files over the same images: (posteriors, first file)."""
    if len(paths) < 2:
        raise ValueError("fusion needs at least two score files")
    check_distinct_files(paths)
    members = [load_scores(path) for path in paths]
    first = members[0]
    for path, member in zip(paths[1:], members[1:]):
        if member["classes"] != first["classes"]:
            raise ValueError(f"{path} scores other classes than {paths[0]}")
        if member["image_ids"] != first["image_ids"] or not torch.equal(member["labels"], first["labels"]):
            raise ValueError(
                f"{path} scores other images than {paths[0]} ({len(member['image_ids'])} vs {len(first['image_ids'])}, "
                f"datasets {member['dataset']} and {first['dataset']}): evaluate every member on the same images"
            )
    posteriors = torch.stack([member["posteriors"].float() for member in members]).mean(dim=0)
    return posteriors, first


def interval_fields(posteriors: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The 95% bootstrap intervals (over the images) of the top-1 and top-5 errors of per-image posteriors."""
    return error_interval_fields(*per_image_errors(posteriors, labels))


def fusion_row(paths: list[Path | str]) -> dict:
    """The results row of a fusion of saved score files."""
    posteriors, first = fuse(paths)
    top1, top5 = topk_correct(posteriors, first["labels"])
    members = [load_scores(path)["provenance"] for path in paths]

    def joined(name: str, unique: bool = False) -> str:
        values = [m.get(name, "?") for m in members]
        return "+".join(dict.fromkeys(values) if unique else values)

    return {
        "profile": joined("profile", unique=True),
        "dataset": joined("dataset", unique=True),
        "dataset_images": joined("dataset_images", unique=True),
        "classes": len(first["classes"]),
        "run": joined("run"),
        "seed": "+".join(dict.fromkeys(m.get("seed") or "0" for m in members)),
        "config": joined("config"),
        "train_scale": joined("train_scale"),
        "method": joined("method", unique=True),
        "precision": joined("precision", unique=True),
        "test_scales": joined("test_scales", unique=True),
        "flip": joined("flip", unique=True),
        "dense_softmax": joined("dense_softmax", unique=True),
        "top1_err": round(error_percent(top1, len(first["labels"])), 3),
        "top5_err": round(error_percent(top5, len(first["labels"])), 3),
        **interval_fields(posteriors, first["labels"]),
        "images": len(first["labels"]),
        "checkpoint": " ".join(m.get("checkpoint", "?") for m in members),
        "checkpoint_sha256": joined("checkpoint_sha256"),
        "git_commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fusion": "yes",
    }


def provenance_row(
    net: Net, dataset: str, method: str, scales: list[int], flip: bool, dense_softmax: str, result: EvalResult, dataset_size: int
) -> dict:
    """A results row: the errors and everything needed to know what produced them."""
    return {
        "profile": net.profile.name,
        "dataset": str(dataset),
        "dataset_images": dataset_size,
        "classes": net.model.spec.num_classes,
        "run": net.run,
        "seed": "" if net.seed is None else net.seed,
        "config": net.model.config,
        "train_scale": net.train_scale,
        "method": method,
        "test_scales": "|".join(str(scale) for scale in scales),
        "flip": flip,
        "dense_softmax": dense_softmax if "dense" in method else "",
        "top1_err": round(result.top1_err, 3),
        "top5_err": round(result.top5_err, 3),
        **interval_fields(result.posteriors, result.labels),
        "images": len(result.labels),
        "wall_s": round(result.wall_s, 2),
        "training": net.training,
        "checkpoint": str(net.source),
        "checkpoint_sha256": net.sha256(),
        "normalization": net.normalization.name,
        "git_commit": git_commit(),
        "device": result.device,
        "precision": result.precision,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def errors_line(row: dict) -> str:
    """A row's errors with their 95% intervals, for the command line: top-1 error 27.00% [26.61, 27.39], ..."""
    return ", ".join(
        f"{name} error {float(row[f'{key}_err']):.2f}% [{float(row[f'{key}_err_lo']):.2f}, {float(row[f'{key}_err_hi']):.2f}]"
        for name, key in (("top-1", "top1"), ("top-5", "top5"))
    )


def run_evaluation(
    checkpoint: str | None,
    weights: str | None,
    data: str | None,
    method: str,
    scales: list[int] | None,
    flip: bool,
    dense_softmax: str,
    limit: int | None,
    save_scores_to: str | None,
    out: str | None,
    workers: int | None,
    device: str,
    skip_bad_images: bool,
    precision: str | None = None,
    max_scale: int | None = None,
) -> dict | None:
    """The `evaluate` command: returns the results row (on rank 0)."""
    from vgg.results import upsert_rows
    from vgg.transforms import ScaleRange

    context = distributed.setup(device)
    try:
        net = load_net(checkpoint, weights)
        data = default_dataset(net, data)
        if scales is None:
            if net.train_scale == "unknown":
                raise ValueError("pass --scales (torchvision weights carry no training scale)")
            scales = [ScaleRange.parse(net.train_scale).single_test_scale]
        val = load_split(data, "val")
        images = val.subset(limit)
        if context.is_main:
            for warning in (unfinished_warning(net.source) if net.training == "unfinished" else None, missing_classes_warning(val)):
                if warning:
                    print(warning)
        result = evaluate(net, images, method, scales, flip, dense_softmax, workers, context.device, skip_bad_images, precision, max_scale)
        if not context.is_main:
            return None
        row = provenance_row(net, data, method, scales, flip, dense_softmax, result, len(val))
        print(
            f"VGG-{row['config']} (S={row['train_scale']}, {row['profile']} profile) {method} at Q={row['test_scales']}"
            f"{' with flips' if flip else ''}: {errors_line(row)} on {row['images']} images ({row['wall_s']:.1f} s)"
        )
        if result.skipped:
            print(f"skipped {len(result.skipped)} unreadable image(s): {', '.join(result.skipped)}")
        if save_scores_to:
            save_scores(save_scores_to, result, images, row)
        if out:
            upsert_rows(Path(out), [row])
        return row
    finally:
        distributed.teardown()


def dense_memory_bytes(net: Net, scale: int) -> int:
    """A rough peak memory of the dense evaluation of one image at test scale `scale` (paper units).

    The image is taken as 4:3, its shorter side `scale` mapped by the net's profile. The peak is the
    rescaled uint8 image plus two float32 maps of the first block at full resolution (a conv's input
    and output; each later block holds half as many values), for the image and its mirror. The
    weights, convolution workspace and batches of several small images come on top.
    """
    side = net.profile.size(scale)
    pixels = side * (side * 4 // 3)
    first_channels = net.model.features[0].out_channels  # conv1's: block 1 has the largest maps
    return pixels * 3 + 2 * 2 * first_channels * pixels * 4


def check_test_scales(net: Net, scales: list[int], max_scale: int | None = None) -> None:
    """Refuse test scales that are not positive or above `max_scale` paper units (None: the
    MAX_TEST_SCALE), before anything is allocated, naming what the largest would take."""
    limit = MAX_TEST_SCALE if max_scale is None else max_scale
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"test scale {scale} is not positive: give the shorter image side in paper units, e.g. 256,384,512")
    largest = max(scales)
    if largest > limit:
        size = dense_memory_bytes(net, largest)
        memory = f"{size / 1e9:,.1f} GB" if size >= 1e9 else f"{size / 1e6:,.0f} MB"
        raise ValueError(
            f"test scale {largest} is above the limit of {limit} (paper units; the paper tests at 224 to 512): "
            f"densely evaluating one 4:3 image at Q = {largest} ({net.profile.size(largest)} px on the {net.profile.name} "
            f"profile) takes about {memory}; pass --max-scale {largest} to allow it"
        )


def check_distinct_files(paths: list[Path | str]) -> None:
    """Refuse a score file given twice, by the same path or by two paths to one file: fusion averages
    distinct members, and a repeat would count one net twice."""
    seen: dict[Path, Path | str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            first = seen[resolved]
            if str(first) == str(path):
                named = f"score file {path} is given twice"
            else:
                named = f"score files {first} and {path} are the same file"
            raise ValueError(f"{named}: a fusion averages distinct nets, so give each score file once")
        seen[resolved] = path
