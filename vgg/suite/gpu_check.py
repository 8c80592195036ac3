"""`make gpu-check`: the cluster path measured on one device, as one table and `reports/gpu.md`.

Sections (issue 15): (a) correctness: bf16 vs fp32 loss trajectories of D from the same init and
batches, evaluation on the device vs the CPU's fp32 path and in bf16 vs fp32 on the same weights
and images, and a run killed mid-epoch and resumed against the same run uninterrupted;
(b) training throughput of this suite's step on device-resident batches (A, D, E; with and
without torch.compile) beside a torchvision vgg16 trained the plain way (fp32 and bf16
autocast), with MFU against a bf16 matrix product measured in the same run and against the
data-sheet peak; (c) the data path: the CPU loader with every core and the device path, at
S = 256 and S in [256, 512]; (d) evaluation throughput of D: dense over 3 scales and 150-crop
multi-crop. `--size tiny` runs everything at toy sizes on the CPU (the test suite does), so the
script cannot rot where no GPU is at hand; its figures are not GPU figures.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from vgg.data.datasets import load_split
from vgg.data.device_decode import DeviceAugmenter, EncodedDataset, collate_encoded
from vgg.data.loaders import Batch, EpochSampler, ImageDataset, available_cpus, iterate_epoch, make_loader
from vgg.data.normalization import get_normalization
from vgg.data.synthetic import SynthSpec, generate
from vgg.data.transforms import ScaleRange, TrainTransform
from vgg.evaluation.evaluate import evaluate
from vgg.evaluation.metrics import METRICS_NAME, read_metrics
from vgg.nets.complexity import summarize
from vgg.nets.models import VGG, VGGSpec
from vgg.nets.trained import Net
from vgg.recipe.paper import PAPER
from vgg.recipe.profiles import Profile, get_profile
from vgg.runtime.checkpoint import atomic_write_text, load_checkpoint
from vgg.runtime.precision import FullFP32
from vgg.suite.kill_resume import kill_mid_epoch
from vgg.training.run_config import TrainConfig, train_command
from vgg.training.train import train
from vgg.training.train_step import forward_backward, sgd_optimizer, synchronize, timed

DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0}
"""Dense bf16 tensor-core peak by NVIDIA's data sheets (SXM parts), for the MFU against it."""


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: `full` on the GPU, `tiny` for the tests on a CPU."""

    name: str
    profile: str  # sizes and widths of the nets
    batches: dict[str, int]  # batch per config for the throughput rows
    largest: tuple[int, ...]  # D's batches to try, rising, for the largest that fits
    steps: int  # timed steps per throughput row (after `warmup`)
    warmup: int
    trajectory_steps: int
    matmul: int  # side of the square bf16 matrix product
    images: int  # generated JPEGs for the data path and evaluation
    eval_images: int
    data_batches: int  # timed loader batches per data-path row


SIZES = {
    "full": Sizes("full", "paper", {"A": 256, "D": 256, "E": 256, "reference": 256}, largest=(512, 768, 1024, 1536, 2048), steps=30, warmup=8, trajectory_steps=30, matmul=8192, images=8192, eval_images=64, data_batches=12),
    "tiny": Sizes("tiny", "ci", {"A": 4, "D": 4, "E": 4, "reference": 1}, largest=(8,), steps=1, warmup=0, trajectory_steps=3, matmul=128, images=24, eval_images=4, data_batches=2),
}


def format_rate(images_per_s: float) -> str:
    """images/s for a table: one decimal, or three significant digits below 10 (a CPU without bf16
    units runs bf16 autocast at a few hundredths of an image a second at the tiny sizes)."""
    return f"{images_per_s:.1f}" if images_per_s >= 10 else f"{images_per_s:.3g}"


def machine() -> dict[str, str]:
    """What ran the check: device, versions, cores."""
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "CUDA": torch.version.cuda or "-",
        "cuDNN": str(torch.backends.cudnn.version()) if cuda else "-",
        "CPU cores available": str(available_cpus()),
    }


def matmul_tflops(device: torch.device, side: int, repeats: int = 20) -> float:
    """bf16 (fp32 on the CPU) square matrix product rate in TFLOP/s: the ceiling MFU is measured against."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
    seconds = timed(lambda: a @ b, device, warmup=3, repeats=repeats)
    return 2 * side**3 / seconds / 1e12


def _model(config: str, profile: Profile, classes: int, device: torch.device, seed: int = 0) -> VGG:
    torch.manual_seed(seed)
    spec = VGGSpec(config=config, num_classes=classes, crop=profile.crop, width=profile.width, dropout=profile.dropout)
    return VGG.from_spec(spec, init="glorot").to(device, memory_format=torch.channels_last)


def _resident_batch(batch: int, crop: int, classes: int, device: torch.device, seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return Batch(images, labels, torch.zeros(batch, 3), torch.arange(batch)).to(device, torch.channels_last)


def suite_step_rate(config: str, batch: int, sizes: Sizes, device: torch.device, compile_: bool) -> dict:
    """images/s and peak memory of this suite's training step (normalisation, bf16 autocast on CUDA,
    SGD with momentum, device-side sums: `vgg.training.train_step`'s forward_backward and sgd_optimizer, as in the trainer) on a resident batch."""
    profile = get_profile(sizes.profile)
    classes = 1000
    model = _model(config, profile, classes, device)
    network = torch.compile(model) if compile_ else model
    optimizer = sgd_optimizer(model, PAPER.lr, momentum=PAPER.momentum, weight_decay=PAPER.weight_decay)
    normalization = get_normalization("mean-rgb")
    data = _resident_batch(batch, profile.crop, classes, device)
    pending = torch.zeros(5, dtype=torch.float64, device=device)

    def step() -> None:
        pending.add_(forward_backward(network, normalization, data, device))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _rate_row(f"VGG-{config}" + (" compiled" if compile_ else ""), "this suite, resident batch", step, batch, device, sizes, summarize(model.spec).macs)


def largest_batch_rate(sizes: Sizes, device: torch.device) -> dict:
    """D's step at the largest of `sizes.largest` that fits in the device's memory."""
    fitted = None
    for batch in sizes.largest:
        try:
            fitted = suite_step_rate("D", batch, sizes, device, compile_=False)
        except torch.OutOfMemoryError:
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if fitted is None:
        raise RuntimeError(f"VGG-D does not fit at batch {sizes.largest[0]} on {device}")
    return {**fitted, "row": f"VGG-D, largest batch that fits (of {', '.join(map(str, sizes.largest))})"}


def targets(result: dict) -> list[dict]:
    """Issue 15's targets from the check's figures: each with its value, its bar and whether it is met."""
    rows = {row["row"]: row for row in result["throughput"]}
    d_step = max((rows["VGG-D"], rows["VGG-D compiled"]), key=lambda row: row["images_per_s"])
    jittered = [row["images_per_s"] for row in result["data_path"] if row["kind"].endswith("S=256:512")]
    checks = [
        ("D's step: share of the measured bf16 matrix-product rate", d_step["mfu_measured"], 0.5),
        ("the trainer with JPEG loading: share of D's resident-batch rate", rows["VGG-D trainer"]["images_per_s"] / rows["VGG-D"]["images_per_s"], 0.9),
        ("the faster data path at S in [256, 512]: share of D's step rate", max(jittered) / d_step["images_per_s"], 1.0),
        ("D's step vs torchvision vgg16 with bf16 autocast (ratio of images/s)", d_step["images_per_s"] / rows["torchvision vgg16 bf16 autocast"]["images_per_s"], 1.0),
    ]
    return [{"target": name, "value": value, "bar": bar, "met": value >= bar} for name, value, bar in checks]


def targets_table(result: dict) -> str:
    lines = ["| target | measured | bar | met |", "|---|---|---|---|"]
    lines += [f"| {row['target']} | {row['value']:.2f} | {row['bar']:.2f} | {'yes' if row['met'] else 'no'} |" for row in targets(result)]
    return "\n".join(lines)


def torchvision_step_rate(batch: int, sizes: Sizes, device: torch.device, bf16: bool) -> dict:
    """The reference: torchvision's vgg16 (VGG-D) trained the plain way, fp32 or bf16 autocast."""
    profile = get_profile(sizes.profile)
    torch.manual_seed(0)
    model = torchvision.models.vgg16(num_classes=1000).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=PAPER.lr, momentum=PAPER.momentum, weight_decay=PAPER.weight_decay)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, profile.crop, profile.crop, generator=generator).to(device)
    labels = torch.randint(0, 1000, (batch,), generator=generator).to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    macs = summarize(VGGSpec(config="D", num_classes=1000, crop=profile.crop, width=1)).macs
    name = "torchvision vgg16 " + ("bf16 autocast" if bf16 else "fp32")
    return _rate_row(name, "reference, resident batch", step, batch, device, sizes, macs)


def _rate_row(name: str, kind: str, step: Callable[[], None], batch: int, device: torch.device, sizes: Sizes, macs: int) -> dict:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(step, device, sizes.warmup, sizes.steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"row": name, "kind": kind, "batch": batch, "images_per_s": batch / seconds, "train_tflops": 3 * 2 * macs * batch / seconds / 1e12, "peak_gib": peak}


def trainer_rate(data: Path, sizes: Sizes, out: Path) -> dict:
    """images/s of this suite's trainer on D at S in [256, 512] on generated JPEGs, data loading
    included (`--decode auto`, every core), from the run's own metrics: its second epoch, so that
    starting the loader workers is not counted."""
    shutil.rmtree(out, ignore_errors=True)
    batch = sizes.batches["D"]
    cfg = TrainConfig(config="D", train_scale="256:512", data=str(data), profile=sizes.profile, init="glorot", epochs=2, batch_size=batch, workers=available_cpus(), progress=False)
    train(cfg, out)
    last = read_metrics(out / METRICS_NAME)[-1]
    macs = summarize(VGGSpec(config="D", num_classes=len(load_split(data, "train").classes), crop=get_profile(sizes.profile).crop, width=get_profile(sizes.profile).width)).macs
    rate = float(last["images_per_s"])
    return {"row": "VGG-D trainer", "kind": "this suite, JPEGs loaded and decoded", "batch": batch, "images_per_s": rate, "train_tflops": 3 * 2 * macs * rate / 1e12, "peak_gib": float("nan")}


def loss_trajectories(sizes: Sizes, device: torch.device) -> tuple[list[float], list[float]]:
    """D's training loss over the same batches from the same init, fp32 (TF32 off) and bf16 autocast."""
    profile = get_profile(sizes.profile)
    losses = {}
    for bf16 in (False, True):
        model = _model("D", profile, 1000, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=PAPER.lr, momentum=PAPER.momentum, weight_decay=PAPER.weight_decay)
        normalization = get_normalization("mean-rgb")
        trajectory = []
        with FullFP32():
            for step in range(sizes.trajectory_steps):
                data = _resident_batch(sizes.batches["D"], profile.crop, 1000, device, seed=step)
                torch.manual_seed(step)  # the same dropout masks in both runs
                sums = forward_backward(model, normalization, data, device, bf16=bf16)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                trajectory.append(float(sums[0] / sums[3]))
        losses[bf16] = trajectory
    return losses[False], losses[True]


def generated_images(sizes: Sizes, root: Path) -> Path:
    """JPEGs of ImageNet-like sizes (shorter side 256-500 px), generated once under `root`."""
    classes = 8
    spec = SynthSpec(classes=classes, train_per_class=max(1, sizes.images // classes), val_per_class=max(1, sizes.eval_images // classes), min_side=256, max_side=500)
    return generate(root / f"gpu-check-{sizes.name}", spec, workers=min(8, available_cpus()))


def data_path_rates(data: Path, sizes: Sizes, device: torch.device) -> list[dict]:
    """images/s of the CPU loader (every core) and of the device path, at S = 256 and S in [256, 512]."""
    profile = get_profile(sizes.profile)
    images = load_split(data, "train")
    batch = sizes.batches["D"]
    workers = available_cpus()
    rows = []
    for scale in ("256", "256:512"):
        transform = TrainTransform(ScaleRange.parse(scale).scaled(profile.size), profile.crop)
        sampler = EpochSampler(len(images), seed=0)
        cpu = make_loader(ImageDataset(images, transform), sampler, batch, workers, device)
        rows.append(_loader_row(f"CPU loader, {workers} workers", scale, (b.to(device) for b in iterate_epoch(cpu)), batch, sizes, device))
        encoded = make_loader(EncodedDataset(images), sampler, batch, workers, device, collate_fn=collate_encoded)
        augmenter = DeviceAugmenter(transform, 0, device)
        rows.append(_loader_row(f"device path ({device.type})", scale, iterate_epoch(augmenter.batches(encoded)), batch, sizes, device))
    return rows


def _loader_row(name: str, scale: str, batches, batch: int, sizes: Sizes, device: torch.device) -> dict:
    iterator = iter(batches)
    next(iterator)  # workers started, first batch out
    synchronize(device)
    started, seen = time.perf_counter(), 0
    for _ in range(sizes.data_batches):
        try:
            seen += len(next(iterator))
        except StopIteration:
            break
    synchronize(device)
    return {"row": name, "kind": f"data path, S={scale}", "batch": batch, "images_per_s": seen / (time.perf_counter() - started)}


def evaluation_rows(data: Path, sizes: Sizes, device: torch.device) -> tuple[list[dict], dict]:
    """D's dense (3 scales) and 150-crop multi-crop throughput on the device, and how far the
    device's posteriors are from the CPU's fp32 ones on the same weights and images."""
    profile = get_profile(sizes.profile)
    images = load_split(data, "val")
    model = _model("D", profile, len(images.classes), torch.device("cpu"))
    net = Net(model, get_normalization("mean-rgb"), profile, Path("random-init"), "D (random init)", "256", images.classes)
    scales = [224, 256, 288] if sizes.name == "full" else [256, 288, 320]
    rows, agreement = [], {}
    for method in ("dense", "multi-crop"):
        on_device = evaluate(net, images, method, scales, device=device, workers=min(8, available_cpus()), precision="fp32")
        rows.append({"row": f"VGG-D {method}, Q={','.join(map(str, scales))}, flips", "kind": "evaluation", "batch": "-", "images_per_s": len(images) / on_device.wall_s})
        on_cpu = evaluate(net, images, method, scales, device=torch.device("cpu"), workers=0, precision="fp32")
        agreement[f"{method}, device fp32 vs CPU fp32"] = _agreement(on_device, on_cpu)
        in_bf16 = evaluate(net, images, method, scales, device=device, workers=min(8, available_cpus()), precision="bf16")
        agreement[f"{method}, device {in_bf16.precision} vs device fp32"] = _agreement(in_bf16, on_device)
    return rows, agreement


RESUME_DETERMINISTIC = (
    "import torch; torch.backends.cudnn.deterministic = True; torch.backends.cudnn.benchmark = False; "
    "torch.use_deterministic_algorithms(True, warn_only=True); from vgg.cli import main; raise SystemExit(main())"
)


def resume_check(data: Path, sizes: Sizes, work_dir: Path) -> dict:
    """Kill a 2-epoch run of A mid-epoch and resume it (deterministic cuDNN and cuBLAS): do its
    weights equal those of the same run uninterrupted?"""
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}

    cfg = TrainConfig(
        config="A", train_scale="256", data=str(data), profile=sizes.profile, init="glorot", epochs=2, batch_size=sizes.batches["A"],
        checkpoint_steps=2, sync_every=2, workers=2, progress=False,
        precision="bf16",  # asked for: on a CPU, each process's own `auto` measurement could choose otherwise under load
    )
    command = lambda out: train_command(cfg, out, program=[sys.executable, "-c", RESUME_DETERMINISTIC])  # noqa: E731

    reference, killed = work_dir / "resume-reference", work_dir / "resume-killed"
    for folder in (reference, killed):
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run(command(reference), env=env, check=True, capture_output=True)
    step = kill_mid_epoch(command(killed), killed, env=env)
    subprocess.run(command(killed), env=env, check=True, capture_output=True)
    first, second = (load_checkpoint(folder)["model"] for folder in (reference, killed))
    difference = max((first[key].float() - second[key].float()).abs().max().item() for key in first)
    return {"killed_at_step": step, "weights_equal": all(torch.equal(first[key], second[key]) for key in first), "max_weight_diff": difference}


def _agreement(first, second) -> dict:
    """How far two evaluations of the same images are apart: equal top-1 decisions, max posterior gap."""
    same = (first.posteriors.argmax(1) == second.posteriors.argmax(1)).float().mean().item()
    return {"equal_top1": same, "max_posterior_diff": (first.posteriors - second.posteriors).abs().max().item()}


def run_check(sizes: Sizes, work_dir: Path, device: torch.device | None = None) -> dict:
    """Every measurement of the check, as plain data."""
    device = device or (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result = {"machine": machine(), "sizes": sizes.name, "device": str(device)}
    result["matmul_tflops"] = matmul_tflops(device, sizes.matmul)
    fp32, bf16 = loss_trajectories(sizes, device)
    result["trajectories"] = {"fp32": fp32, "bf16": bf16}
    throughput = []
    for config in ("A", "D", "E"):
        for compile_ in (False, True):
            throughput.append(suite_step_rate(config, sizes.batches[config], sizes, device, compile_))
    throughput.append(largest_batch_rate(sizes, device))
    for bf16_reference in (False, True):
        throughput.append(torchvision_step_rate(sizes.batches["reference"], sizes, device, bf16_reference))
    data = generated_images(sizes, work_dir)
    throughput.append(trainer_rate(data, sizes, work_dir / "trainer-D"))
    for row in throughput:
        row["mfu_measured"] = row["train_tflops"] / result["matmul_tflops"]
    result["throughput"] = throughput
    result["data_path"] = data_path_rates(data, sizes, device)
    result["evaluation"], result["agreement"] = evaluation_rows(data, sizes, device)
    result["resume"] = resume_check(data, sizes, work_dir)
    return result


def render(result: dict) -> str:
    """reports/gpu.md: the machine, the versions and every figure of the check."""
    lines = ["# GPU check" + (" (tiny CPU run: not GPU figures)" if result["sizes"] == "tiny" else ""), ""]
    lines += [f"- {key}: {value}" for key, value in result["machine"].items()]
    arithmetic = "bf16" if result["device"].startswith("cuda") else "fp32"
    lines += [f"- sizes: {result['sizes']}; device {result['device']}", f"- measured {arithmetic} matrix product: {result['matmul_tflops']:.1f} TFLOP/s", ""]
    peak = next((value for name, value in DATASHEET_BF16_TFLOPS.items() if name in result["machine"]["device"]), None)
    lines += ["## Targets", "", targets_table(result), ""]
    lines += ["## (b) Training throughput", "", "| row | what | batch | images/s | TFLOP/s | MFU (measured matmul) | MFU (data sheet) | peak GiB |", "|---|---|---|---|---|---|---|---|"]
    for row in result["throughput"]:
        sheet = f"{row['train_tflops'] / peak:.1%}" if peak else "-"
        lines.append(f"| {row['row']} | {row['kind']} | {row['batch']} | {format_rate(row['images_per_s'])} | {row['train_tflops']:.2f} | {row['mfu_measured']:.1%} | {sheet} | {row['peak_gib']:.1f} |")
    lines += ["", "## (c) Data path", "", "| path | S | images/s |", "|---|---|---|"]
    lines += [f"| {row['row']} | {row['kind'].split('S=')[1]} | {format_rate(row['images_per_s'])} |" for row in result["data_path"]]
    lines += ["", "## (d) Evaluation (VGG-D)", "", "| protocol | images/s |", "|---|---|"]
    lines += [f"| {row['row']} | {format_rate(row['images_per_s'])} |" for row in result["evaluation"]]
    lines += ["", "## (a) Correctness", "", "Training loss of D, same init and batches (fp32 with TF32 off vs bf16 autocast):", "", "| step | fp32 | bf16 |", "|---|---|---|"]
    lines += [f"| {i} | {a:.4f} | {b:.4f} |" for i, (a, b) in enumerate(zip(result["trajectories"]["fp32"], result["trajectories"]["bf16"]))]
    lines += ["", "Evaluation agreement on the same weights and images (bf16 is CUDA's; elsewhere it falls back to fp32):", "", "| method | equal top-1 decisions | max posterior difference |", "|---|---|---|"]
    lines += [f"| {method} | {value['equal_top1']:.1%} | {value['max_posterior_diff']:.2e} |" for method, value in result["agreement"].items()]
    resume = result["resume"]
    lines += ["", f"Resume (A, 2 epochs, deterministic cuDNN): killed after step {resume['killed_at_step']} and resumed; weights equal to the uninterrupted run's: "
              f"{'yes' if resume['weights_equal'] else 'no'} (largest difference {resume['max_weight_diff']:.2e})."]
    return "\n".join(lines) + "\n"


def gpu_check(size: str, out: Path, work_dir: Path) -> Path:
    """Run the check at `size`, write its report to `out` and print its table of targets."""
    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    result = run_check(SIZES[size], Path(work_dir))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, render(result))
    print(f"{targets_table(result)}\n\nevery figure, the machine and the versions: {out}")
    return out
