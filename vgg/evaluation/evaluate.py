"""A net evaluated over a dataset under one of the paper's test protocols (`vgg.evaluation.protocols`, Sect. 3.2),
split over the ranks when distributed, and its results row: the `evaluate` command. Nets come from
`vgg.nets.trained`; the per-image scores it can save, and their fusion, are `vgg.evaluation.scores`.

Dense and centre-crop evaluation batch images of the same rescaled size (`Batcher`): the
posteriors are those of one image at a time, up to float rounding, in a fraction of the time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from vgg.data.datasets import ImageList, load_split, missing_classes_warning
from vgg.data.loaders import BadImageError, EpochSampler, default_workers, read_image
from vgg.data.transforms import ScaleRange, rescale
from vgg.evaluation.metrics import error_percent, interval_fields, topk_correct
from vgg.evaluation.protocols import Batcher, Protocol, check_test_scales
from vgg.evaluation.scores import EvalResult, save_scores
from vgg.nets.trained import Net, default_dataset, load_net, unfinished_warning
from vgg.runtime import distributed
from vgg.runtime.checkpoint import git_commit, utc_timestamp
from vgg.runtime.stop_signals import ignore_stop_signals

EVALUATION_VERSION = 2
"""Raised when the same protocol on the same checkpoint comes to compute other posteriors: score
files of another version are computed again (2: dense reads the image's central `pooled_region`)."""


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
    posteriors of all images in dataset order. `precision` (fp32, bf16 or auto, `vgg.runtime.precision`;
    default: the net's profile's `eval_precision`) is the protocol's arithmetic.
    """
    check_test_scales(net, scales, max_scale)
    if net.regression != "none":
        raise ValueError(f"{net.source} is a box regressor ({net.regression.upper()}, Appendix A): its outputs are boxes, not class scores; "
                         "its protocols are make table8, table9 and table10")
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
    protocol = Protocol.of_net(net, method, flip, dense_softmax, device, precision)
    sampler = EpochSampler(len(images), shuffle=False, rank=rank, world_size=world, pad=False)
    workers = default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", world))) if workers is None else workers
    loader = DataLoader(
        ScaledImages(images, pixels, skip_bad_images), batch_size=None, sampler=sampler, num_workers=workers, prefetch_factor=4 if workers else None,
        worker_init_fn=ignore_stop_signals,
    )
    started = time.perf_counter()
    done, skipped = run_batched(protocol, loader, images)
    kept, posteriors, skipped = gather_in_dataset_order(done, skipped, len(images.classes))
    labels = torch.from_numpy(images.samples.labels[kept])
    top1, top5 = topk_correct(posteriors, labels)
    ids = images.image_ids()
    return EvalResult(
        posteriors=posteriors,
        labels=labels,
        image_ids=[ids[i] for i in kept],
        top1_err=error_percent(top1, len(kept)),
        top5_err=error_percent(top5, len(kept)),
        wall_s=time.perf_counter() - started,
        skipped=skipped,
        device=str(protocol.device),
        precision=protocol.precision,
    )


def run_batched(protocol: Protocol, loader: DataLoader, images: ImageList) -> tuple[list[tuple[int, torch.Tensor]], list[str]]:
    """The protocol over this rank's share of the images (`ScaledImages` from `loader`), batched:
    each image's (index, posteriors) in the order its batch completed, and the unreadable images skipped."""
    batcher, done, skipped = Batcher(protocol), [], []
    for index, _, scaled in loader:
        if scaled is None:
            skipped.append(str(images.samples[index][0]))
            continue
        done += batcher.add(index, scaled)
    done += batcher.finish()  # in the order batches completed: `gather_in_dataset_order` sorts them by index
    return done, skipped


def gather_in_dataset_order(
    done: list[tuple[int, torch.Tensor]], skipped: list[str], classes: int
) -> tuple[list[int], torch.Tensor, list[str]]:
    """Every rank's (dataset index, posteriors) pairs, in any order, and skipped image paths, gathered
    on every rank: (the indices in dataset order, their posteriors (N, K), the skipped paths in rank order)."""
    indices, posteriors = [index for index, _ in done], [posterior for _, posterior in done]
    local = (indices, torch.stack(posteriors) if posteriors else torch.empty(0, classes), skipped)
    gathered = distributed.gather_lists([local])  # every rank's part, in rank order
    all_indices = [i for part in gathered for i in part[0]]
    all_posteriors = torch.cat([part[1] for part in gathered])
    order = torch.tensor(all_indices).argsort()
    return [all_indices[i] for i in order.tolist()], all_posteriors[order], [path for part in gathered for path in part[2]]


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
        device="+".join(dict.fromkeys(result.device for result in results)),
        precision="+".join(dict.fromkeys(result.precision for result in results)),
    )


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
        "date": utc_timestamp(),
        "evaluation_version": EVALUATION_VERSION,
    }


def errors_line(row: dict) -> str:
    """A row's errors with their 95% intervals, for the command line: top-1 error 27.00% [26.61, 27.39], ..."""
    return ", ".join(
        f"{name} error {float(row[f'{key}_err']):.2f}% [{float(row[f'{key}_err_lo']):.2f}, {float(row[f'{key}_err_hi']):.2f}]"
        for name, key in (("top-1", "top1"), ("top-5", "top5"))
    )


@dataclass(frozen=True)
class EvalRequest:
    """What the `evaluate` command is asked (its options): the net, the dataset, the protocol, and
    the score file to save (the CLI writes the results row to --out)."""

    checkpoint: str | None
    weights: str | None
    data: str | None
    method: str
    scales: list[int] | None
    flip: bool
    dense_softmax: str
    limit: int | None
    save_scores_to: str | None
    workers: int | None
    device: str
    skip_bad_images: bool
    precision: str | None = None
    max_scale: int | None = None


def run_evaluation(request: EvalRequest) -> dict | None:
    """The `evaluate` command: returns the results row (on rank 0)."""
    method, flip, dense_softmax = request.method, request.flip, request.dense_softmax
    context = distributed.setup(request.device)
    try:
        net = load_net(request.checkpoint, request.weights)
        data = default_dataset(net, request.data)
        scales = request.scales
        if scales is None:
            if net.train_scale == "unknown":
                raise ValueError("pass --scales (torchvision weights carry no training scale)")
            scales = [ScaleRange.parse(net.train_scale).single_test_scale]
        val = load_split(data, "val")
        images = val.subset(request.limit)
        if context.is_main:
            for warning in (unfinished_warning(net.source) if net.training == "unfinished" else None, missing_classes_warning(val)):
                if warning:
                    print(warning)
        result = evaluate(
            net, images, method, scales, flip, dense_softmax, request.workers, context.device, request.skip_bad_images, request.precision,
            request.max_scale,
        )
        if not context.is_main:
            return None
        row = provenance_row(net, data, method, scales, flip, dense_softmax, result, len(val))
        print(
            f"VGG-{row['config']} (S={row['train_scale']}, {row['profile']} profile) {method} at Q={row['test_scales']}"
            f"{' with flips' if flip else ''}: {errors_line(row)} on {row['images']} images ({row['wall_s']:.1f} s)"
        )
        if result.skipped:
            print(f"skipped {len(result.skipped)} unreadable image(s): {', '.join(result.skipped)}")
        if request.save_scores_to:
            save_scores(request.save_scores_to, result, images, row)
        return row
    finally:
        distributed.teardown()
