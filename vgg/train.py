"""One training run with the paper's recipe (Sect. 3.1), resumable at the exact step.

SGD with momentum 0.9, weight decay 5e-4, dropout 0.5 on FC1/FC2, a global batch (256 in
the paper) split over the ranks (and `accum` micro-batches), learning rate 1e-2 divided by
10 whenever the validation accuracy stops improving (`vgg.schedule`). Sizes are given in
the paper's units and mapped by the profile.

Per-epoch validation (what drives the learning-rate drops): the central crop x crop crop
of each val image rescaled to the paper's single test scale for this training scale
(Q = S, or (Smin + Smax) / 2 when jittered), no flip, on a fixed subset of the val split
(`val_images` of the profile, the same subset for every run; 0 means all of it).

Determinism: augmentations are seeded per image by (seed, epoch, index) and dropout by
(seed, step), so the same command gives the same weights, and a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vgg import distributed
from vgg.checkpoint import CHECKPOINT_NAME, DAMAGED, DONE_NAME, append_text, git_commit, load_run_checkpoint, read_done, save_checkpoint, write_done
from vgg.datasets import ImageList, load_split, missing_classes_warning, require_data_folder
from vgg.device_decode import DeviceAugmenter, EncodedDataset, collate_encoded, decode_path
from vgg.initialization import PAPER_STD, init_from_a
from vgg.loaders import Batch, EpochSampler, ImageDataset, default_workers, iterate_epoch, make_loader, skipped_listing
from vgg.metrics import append_metrics, batch_sums, error_percent, plot_curves, truncate_metrics
from vgg.configs import A_CONFIGS, has_lrn
from vgg.models import FREEZE_CHOICES, VGG, VGGSpec, is_head
from vgg.normalization import Normalization, get_normalization
from vgg.profiles import Profile, get_profile
from vgg.identity import differences, digest, format_differences, recipe
from vgg.run_config import TrainConfig
from vgg.stop_signals import EXIT_PREEMPTED, Preempted, StopRequests, describe  # noqa: F401 (EXIT_PREEMPTED: re-exported)
from vgg.schedule import PlateauSchedule, drop_deadline_epochs, drop_earliest_epochs
from vgg.torchvision_compat import clean_state_dict
from vgg.transforms import CentreCropTransform, ScaleRange, TrainTransform

PAPER_LR = 1e-2
PAPER_ITERATIONS, PAPER_BATCH = 370_000, 256
"""Sect. 3.1: training stopped after 370K iterations (74 epochs) of batches of 256."""
CHECKPOINT_FORMAT = 1
PLOT_EVERY_EPOCH_AFTER_S = 30.0
MEMORY_FORMAT = torch.channels_last
CHECKPOINT_SPEC = "checkpoint:"


class OtherRunError(ValueError):
    """The output folder holds another run (other settings): training there would mix the two."""

    def __init__(self, folder: Path, what: str, changed: str):
        self.folder, self.what, self.changed = folder, what, changed
        super().__init__(f"{folder} holds {what} with other settings ({changed}); choose another --out or remove {folder}")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops, keeping the last good checkpoint."""


@dataclass
class EpochTotals:
    """Running sums over the current epoch (kept in checkpoints for exact mid-epoch resume)."""

    loss_sum: float = 0.0
    top1: int = 0
    top5: int = 0
    seen: int = 0
    elapsed: float = 0.0
    skipped: list[str] = field(default_factory=list)  # this rank's unreadable images (--skip-bad-images)


@dataclass
class _Loop:
    """A training loop's live objects and its position (epoch, step, the epoch's totals so far)."""

    model: VGG
    network: nn.Module  # the model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    schedule: PlateauSchedule
    classes: tuple[str, ...]
    device: torch.device
    loader: object = None
    augmenter: DeviceAugmenter | None = None  # --decode gpu: decodes and augments the loader's files on the device
    sampler: EpochSampler | None = None
    val_dataset: ImageDataset | None = None
    steps_per_epoch: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    read_step: int = 0  # global_step at the last read-back
    totals: EpochTotals = field(default_factory=EpochTotals)
    pending: torch.Tensor | None = None  # on the device, since the last read-back: see vgg.metrics.batch_sums
    started: float = 0.0  # perf_counter at the epoch's start, less its time before a resume
    last_save: float = 0.0


def _autocast(device: torch.device, bf16: bool | None = None):
    """bf16 autocast, by default on CUDA only (the paper profile's training arithmetic)."""
    bf16 = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def forward_backward(network: nn.Module, normalization: Normalization, batch: Batch, device: torch.device, accum: int = 1, bf16: bool | None = None) -> torch.Tensor:
    """The training step's forward and backward pass on one (micro-)batch already on `device`,
    gradients scaled by 1/`accum`; returns its loss and top-k sums on the device
    (`vgg.metrics.batch_sums`), without waiting for it. bf16: autocast (default: on CUDA)."""
    with _autocast(device, bf16):
        inputs = normalization(batch.images, batch.offsets).contiguous(memory_format=MEMORY_FORMAT)
        logits = network(inputs)
        loss = F.cross_entropy(logits.float(), batch.labels)
    (loss / accum).backward()
    return batch_sums(loss.detach(), logits.detach(), batch.labels)


PROBE_BATCHES = 8


def probe_rates(network: nn.Module, model: VGG, normalization: Normalization, loader, device: torch.device, batches: int = PROBE_BATCHES) -> tuple[float, float]:
    """Images/s of `loader` over `batches` batches after its first, and of forward and backward
    passes of `network` on its first batch. Leaves the weights, buffers, gradients and random
    generators as they were: the run is the same whether it probed or not."""
    torch_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    iterator = iter(iterate_epoch(loader, log=lambda message: None))
    first = next(iterator).to(device, MEMORY_FORMAT)
    started, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            seen += len(next(iterator))
        except StopIteration:
            break
    loader_rate = seen / max(time.perf_counter() - started, 1e-9)
    del iterator

    def step() -> None:
        forward_backward(network, normalization, first, device)

    step()  # warm-up (and cuDNN's choice of algorithms)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    step_rate = 3 * len(first) / (time.perf_counter() - started)
    for parameter in model.parameters():
        parameter.grad = None
    with torch.no_grad():
        for name, value in model.named_buffers():
            value.copy_(buffers[name])
    torch.set_rng_state(torch_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
    return loader_rate, step_rate


def _log_to(run_dir: Path, enabled: bool):
    def log(message: str) -> None:
        if not enabled:
            return
        print(message, flush=True)
        append_text(run_dir / "train.log", message + "\n")

    return log


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


def _step_seed(seed: int, global_step: int) -> int:
    return (seed * 1_000_003 + global_step) % (2**63)


class Trainer:
    """Holds everything of one run; `run()` trains to the end (or raises Preempted)."""

    def __init__(self, cfg: TrainConfig, out: Path):
        self.cfg, self.out = cfg, Path(out)
        self.context = distributed.setup(cfg.device)
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = _log_to(self.out, self.context.is_main)
        self.profile: Profile = get_profile(cfg.profile)
        self.scale = ScaleRange.parse(cfg.train_scale)
        self.pixel_scale = self.scale.scaled(self.profile.size)
        self.val_scale = self.profile.size(self.scale.single_test_scale)
        self.global_batch = cfg.batch_size or self.profile.batch_size
        self.normalization: Normalization = get_normalization(cfg.normalization)
        per_step = self.context.world_size * cfg.accum
        if self.global_batch % per_step:
            raise ValueError(
                f"the global batch {self.global_batch} does not split evenly over {self.context.world_size} "
                f"process(es) x {cfg.accum} accumulation step(s)"
            )
        self.micro_batch = self.global_batch // per_step
        self.dropout = cfg.dropout if cfg.dropout is not None else self.profile.dropout
        self._val_loader = None

    # ----- set-up -------------------------------------------------------------------
    def _data(self) -> tuple[ImageList, ImageList]:
        train_images, val_images = load_split(self.cfg.data, "train"), load_split(self.cfg.data, "val")
        if val_images.classes != train_images.classes:
            raise ValueError(f"{self.cfg.data}: val classes differ from train classes")
        self.log(train_images.describe())
        self.log(val_images.describe())
        warning = missing_classes_warning(val_images)
        if warning:
            self.log(warning)
        return train_images, val_images

    def _build_model(self, classes: tuple[str, ...], checkpoint: dict | None) -> tuple[VGG, float, int, bool]:
        """The network (initialised), its initial learning rate, its epoch limit, and whether it is a
        fine-tune of a trained net (the profile's finetune_* recipe)."""
        self._check_model_options()
        spec = VGGSpec(
            self.cfg.config,
            num_classes=len(classes),
            width=self.profile.width,
            crop=self.profile.crop,
            batch_norm=self.cfg.batch_norm,
            dropout=self.dropout,
            lrn_alpha=VGGSpec.lrn_alpha if self.cfg.lrn_alpha is None else self.cfg.lrn_alpha,
        )
        init = self.cfg.init or self.profile.random_init
        scheme = init if init in ("paper", "glorot") else self.profile.random_init
        if init not in ("paper", "glorot") and not init.startswith("from:"):
            raise ValueError(f"--init must be paper, glorot or from:CHECKPOINT, got {init!r}")
        fine_tune = False
        if self.cfg.weights is not None:
            if self.cfg.init is not None:
                raise ValueError("fine-tuning from --weights replaces --init: give one of them")
            source = self._weights_source()
            spec = VGGSpec(**{**source.model.spec.to_dict(), "num_classes": len(classes), "dropout": self.dropout})
        model = VGG.from_spec(spec, init=scheme, init_std=self.profile.init_std)
        if self.cfg.weights is not None:
            fine_tune = True
            if checkpoint is None:
                self._init_from_weights(model, source)
        elif checkpoint is None and init.startswith("from:"):
            fine_tune = self._init_from(model, Path(init[len("from:") :]), classes)
        if checkpoint is None and self.cfg.freeze == "features" and not fine_tune:  # a resumed run passed this check when it started
            raise ValueError(
                "--freeze features trains the FC layers of a trained net: fine-tune one (--init from:RUN of the same "
                "configuration, or vgg finetune --weights/--checkpoint), not a net from random init or from A"
            )
        lr = self.cfg.lr if self.cfg.lr is not None else (self.profile.finetune_lr if fine_tune else PAPER_LR)
        if checkpoint is not None:
            epochs = checkpoint["max_epochs"]
        elif self.cfg.epochs is not None:
            epochs = self.cfg.epochs
        else:
            epochs = self.profile.finetune_max_epochs if fine_tune else self.profile.max_epochs
        return model, lr, epochs, fine_tune

    def _weights_source(self):
        """The net to fine-tune from, checked against this run's profile and normalisation."""
        from vgg.evaluate import load_net

        spec = self.cfg.weights
        source = load_net(checkpoint=spec[len(CHECKPOINT_SPEC) :]) if spec.startswith(CHECKPOINT_SPEC) else load_net(weights=spec)
        if source.model.spec.crop != self.profile.crop:
            raise ValueError(
                f"{spec} was trained at a {source.model.spec.crop} px crop but the {self.profile.name} profile crops "
                f"{self.profile.crop} px; use the profile of that crop (torchvision's weights: --profile paper)"
            )
        if source.normalization != self.normalization:
            raise ValueError(f"{spec} expects the {source.normalization.name} normalisation, not {self.normalization.name}")
        return source

    def _check_model_options(self) -> None:
        """The run's freeze and LRN settings, checked before any network is built."""
        if self.cfg.freeze not in FREEZE_CHOICES:
            raise ValueError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)}, got {self.cfg.freeze!r}")
        if self.cfg.lrn_alpha is not None:
            if not has_lrn(self.cfg.config):
                raise ValueError(f"--lrn-alpha applies to configurations with LRN (A-LRN); {self.cfg.config} has none")
            if self.cfg.weights is not None:
                raise ValueError("--lrn-alpha cannot change the LRN of a net fine-tuned from --weights: it keeps the source's")

    def _init_from_weights(self, model: VGG, source) -> None:
        """Every layer from the source but the last, which is new (sized from this dataset)."""
        state = {key: value for key, value in source.model.state_dict().items() if not is_head(key)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(is_head(key) for key in missing), (missing, unexpected)
        # The new layer starts small (N(0, 0.01^2), as torchvision and the paper init FC layers): a
        # Glorot-sized head on a trained net's large activations saturates the soft-max at once.
        with torch.no_grad():
            model.head.weight.normal_(0.0, PAPER_STD)
            model.head.bias.zero_()
        trained = "the FC layers only (features frozen)" if self.cfg.freeze == "features" else "every layer"
        self.log(f"fine-tuning VGG-{model.config} from {self.cfg.weights}: every layer but a new {model.spec.num_classes}-way last layer "
                 f"comes from the weights; training {trained}, the new layer at {self.cfg.head_lr_mult:g}x the learning rate")

    def _init_from(self, model: VGG, path: Path, classes: tuple[str, ...]) -> bool:
        """Initialise from a parent run; True when fine-tuning a net of the same configuration."""
        folder = path if path.is_dir() else path.parent
        parent_state = load_run_checkpoint(
            path, "--init from: takes the folder of a finished run", damaged=f"it was {DAMAGED}: remove {folder} and train that run again",
            advice="a torchvision state dict starts a run through python -m vgg finetune --weights",
        )
        if read_done(folder) is None:
            raise ValueError(f"{path} has not finished training (no DONE file): finish it first (rerun its command to resume it)")
        parent_spec = VGGSpec(**parent_state["spec"])
        if tuple(parent_state["classes"]) != classes:
            raise ValueError(f"{path} was trained on other classes than {self.cfg.data}")
        if parent_state["normalization"] != self.normalization.to_dict():
            raise ValueError(f"{path} was trained with normalisation {parent_state['normalization']['name']}, not {self.normalization.name}")
        parent = VGG.from_spec(parent_spec)
        parent.load_state_dict(parent_state["model"])
        if parent_spec.config == model.config:
            if parent_spec != model.spec:
                raise ValueError(f"cannot fine-tune from {path}: its network is {parent_spec}, this run's is {model.spec}")
            model.load_state_dict(parent.state_dict())
            self.log(f"initialised every layer from {path} (fine-tuning, default lr {self.profile.finetune_lr})")
            return True
        if parent_spec.config not in A_CONFIGS:
            raise ValueError(f"--init from: takes a net of the same configuration (fine-tuning) or a net A; {path} is {parent_spec.config}")
        copied = init_from_a(model, parent, std=self.profile.init_std, scheme=self.profile.random_init)
        self.log(f"initialised {len(copied)} tensors (first four conv and three FC layers) from A at {path}; the rest {self.profile.random_init} init")
        return False

    def _val_batches(self, val_images: ImageList) -> ImageDataset:
        limit = self.cfg.val_images if self.cfg.val_images is not None else self.profile.val_images
        return ImageDataset(
            val_images.subset(limit), CentreCropTransform(self.val_scale, self.profile.crop), skip_bad_images=self.cfg.skip_bad_images,
            cache_decoded=self.profile.cache_decoded,
        )

    def _adoptable(self, stored_hash: str | None, checkpoint: dict | None) -> bool:
        """True for a run from before identity version 2 (`vgg.identity`) that is this run: the same
        settings, paths included (the legacy hash), and its checkpoint's recipe is this one."""
        if checkpoint is None or "identity" in checkpoint or stored_hash != self.cfg.legacy_hash():
            return False
        stored_recipe = recipe(Profile.from_dict(checkpoint["profile"]), self.cfg.config)
        if "lrn_alpha" in stored_recipe:
            stored_recipe["lrn_alpha"] = checkpoint["spec"].get("lrn_alpha")
        return stored_recipe == recipe(self.profile, self.cfg.config, self.cfg.lrn_alpha)

    # ----- the run ------------------------------------------------------------------
    # ----- the loop -----------------------------------------------------------------
    def run(self, stop: StopRequests) -> dict:
        """Train to the end, resuming from the run's checkpoint; a finished run returns its DONE.
        Stop signals (caught by `stop`, installed before the process group and the data listing)
        end it with `Preempted`: at once before its loop starts, after a checkpoint inside it."""
        stop.deferred = self.context.distributed  # no rank may leave a collective call that the others are in
        try:
            require_data_folder(self.cfg.data)  # first: a missing dataset would read as a change of settings
            self.identity = self.cfg.identity()
            self.run_hash = digest(self.identity)
            done = self._finished_already()
            if done is not None:
                return done
            loop = self._start()
            if self.context.distributed:  # every rank stops here, or none does
                self._agree_on_stop(stop, torch.zeros(0, dtype=torch.float64))
                if stop.raised:
                    raise Preempted(stop.signum, saved=False)
            stop.deferred = stop.in_loop = True
            while loop.epoch < self.epochs and not loop.schedule.finished:
                self._train_epoch(loop, stop)
                self._close_epoch(loop)
            final = self._finish(loop)
            if stop.raised:  # asked after the last read-back: the run is complete, but the command stops
                self.log(f"{describe(stop.signum)}: the run had finished ({DONE_NAME} written); exit {stop.exit_code}")
                raise Preempted(stop.signum)
            return final
        except Preempted as stopped:
            if not stopped.reported:
                self._log_unsaved_stop(stopped, stop.in_loop)
                stopped.reported = True
            raise

    def _log_unsaved_stop(self, stopped: Preempted, in_loop: bool) -> None:
        what, code = describe(stopped.signum), stopped.exit_code
        if not in_loop:
            self.log(f"{what} during start-up, before training began: nothing to save; exit {code} (run the same command to start again)")
        else:
            self.log(f"{what} again: stopped at once; the last checkpoint ({self.out / CHECKPOINT_NAME}) is kept; exit {code} (run the same command to resume from it)")

    def _agree_on_stop(self, stop: StopRequests, sums: torch.Tensor) -> torch.Tensor:
        """All-reduce `sums` (float64, on the loop's device or the CPU) with this rank's stop request,
        so that every rank learns of a stop asked of any (Ctrl-C on any making it an interruption
        everywhere), and return the reduced `sums`."""
        flags = torch.tensor([float(stop.raised), float(stop.signum == signal.SIGINT)], dtype=torch.float64, device=sums.device)
        reduced = distributed.all_reduce_sum(torch.cat([sums, flags])).cpu()
        stop.agree(stopped=bool(reduced[-2] > 0), interrupted=bool(reduced[-1] > 0))
        return reduced[:-2]

    def _train_epoch(self, loop: _Loop, stop: StopRequests) -> None:
        """The epoch's remaining steps at the schedule's rate; every `sync_every` steps (and at the
        epoch's end) the device-side sums are read back, and checkpoints and preemption handled."""
        cfg = self.cfg
        loop.sampler.set_epoch(loop.epoch, start=loop.step_in_epoch * self.micro_batch * cfg.accum)
        for group in loop.optimizer.param_groups:
            group["lr"] = loop.schedule.lr * group["lr_mult"]
        loop.network.train()
        if cfg.freeze == "features":
            loop.model.features.eval()  # frozen: batch-norm statistics stay the source's too
        loop.started = time.perf_counter() - loop.totals.elapsed
        progress = self._progress(loop.steps_per_epoch, loop.step_in_epoch, loop.epoch)
        batches = loop.loader if loop.augmenter is None else loop.augmenter.batches(loop.loader)
        micro_batches = iter(iterate_epoch(batches, skipped=loop.totals.skipped))
        while loop.step_in_epoch < loop.steps_per_epoch:
            self._step(loop, micro_batches)
            if self._read_back_due(loop, stop):
                time_due = self._read_back(loop, stop, progress)
                self._checkpoint_if_due(loop, stop, time_due)
        if progress is not None:
            progress.close()
        del micro_batches  # its loader workers end before validation starts its own

    def _step(self, loop: _Loop, micro_batches) -> None:
        """One SGD step on the global batch (`accum` micro-batches per rank). Its loss and top-k
        counts are added to `loop.pending` on the device: nothing here waits for the device."""
        cfg, context = self.cfg, self.context
        for micro in range(cfg.accum):
            batch = next(micro_batches).to(loop.device, MEMORY_FORMAT)
            # dropout masks from (seed, step) alone; seeded after fetching the batch, since
            # creating a loader iterator draws from the global generator
            torch.manual_seed(_step_seed(cfg.seed, (loop.global_step * cfg.accum + micro) * context.world_size + context.rank))
            sync = nullcontext() if (micro == cfg.accum - 1 or not context.distributed) else loop.network.no_sync()
            with sync:
                loop.pending += forward_backward(loop.network, self.normalization, batch, loop.device, cfg.accum)
        loop.optimizer.step()
        loop.optimizer.zero_grad(set_to_none=True)
        loop.step_in_epoch += 1
        loop.global_step += 1

    def _read_back_due(self, loop: _Loop, stop: StopRequests) -> bool:
        """At the epoch's end, every `sync_every` steps, at every `checkpoint_steps` step, and (one
        process) at once after a stop signal: ranks must read back at the same steps, so several
        processes wait for the next `sync_every` step."""
        every = [self.cfg.sync_every, self.cfg.checkpoint_steps]
        stop_now = stop.raised and not self.context.distributed
        return stop_now or loop.step_in_epoch == loop.steps_per_epoch or any(n and loop.global_step % n == 0 for n in every)

    def _read_back(self, loop: _Loop, stop: StopRequests, progress) -> bool:
        """Move the device-side sums into the epoch's totals: one host sync and one all-reduce across
        ranks, which also carries the stop requests and the main rank's clock (so that every rank
        checkpoints at the same step). Raises on a non-finite loss; returns whether the
        `checkpoint_minutes` are up."""
        time_due = self.context.is_main and time.monotonic() - loop.last_save > self.cfg.checkpoint_minutes * 60
        clock = torch.full_like(loop.pending[:1], float(time_due))
        sums = self._agree_on_stop(stop, torch.cat([loop.pending, clock]))
        loop.pending.zero_()
        first, last = loop.read_step, loop.global_step - 1  # the steps these sums cover, counted from 0
        where = f"at step {last}" if first == last else f"in steps {first}-{last}"
        loop.read_step = loop.global_step
        if sums[4] > 0:
            raise NonFiniteLossError(
                f"the loss became NaN or infinite {where} (epoch {loop.epoch}) with learning rate {loop.schedule.lr:g}; "
                f"training stopped. The last good checkpoint ({self.out / CHECKPOINT_NAME}) is kept. VGG without batch norm diverges at high rates (0.1): "
                f"lower --lr (the paper uses 1e-2 at batch 256)"
            )
        totals = loop.totals
        totals.loss_sum += float(sums[0])
        totals.top1 += int(sums[1])
        totals.top5 += int(sums[2])
        totals.seen += int(sums[3])
        totals.elapsed = time.perf_counter() - loop.started
        if progress is not None:
            progress.update(loop.step_in_epoch - progress.n)
            progress.set_postfix(loss=f"{totals.loss_sum / max(1, totals.seen):.3f}", img_s=f"{totals.seen / max(totals.elapsed, 1e-9):.0f}")
        return bool(sums[5] > 0)

    def _checkpoint_if_due(self, loop: _Loop, stop: StopRequests, time_due: bool) -> None:
        """A mid-epoch checkpoint every `checkpoint_steps` steps or `checkpoint_minutes` (`time_due`),
        and when a rank was asked to stop (then exit through Preempted). Only at read-backs, so a
        checkpoint's totals are complete, and at the same step on every rank."""
        due = (self.cfg.checkpoint_steps and loop.global_step % self.cfg.checkpoint_steps == 0) or time_due
        if stop.raised or (due and loop.step_in_epoch < loop.steps_per_epoch):
            self._save(loop)
            if stop.raised:
                self.log(f"{describe(stop.signum)}: checkpoint at epoch {loop.epoch}, step {loop.step_in_epoch}; exit {stop.exit_code} (run the same command to resume)")
                raise Preempted(stop.signum)

    def _close_epoch(self, loop: _Loop) -> None:
        """Validate, let the schedule act on it, log the epoch's row, then checkpoint the next epoch's start."""
        skipped = distributed.gather_lists(loop.totals.skipped)
        if skipped:
            self.log(skipped_listing(skipped, f"in epoch {loop.epoch}"))
        row = self._epoch_row(loop, len(skipped))
        if self.context.is_main:  # the row first: a kill before the checkpoint leaves a row that resume truncates
            append_metrics(self.out, row)
            if row["wall_s"] > PLOT_EVERY_EPOCH_AFTER_S:  # long epochs: keep the curve current
                plot_curves(self.out, self._curve_title(loop.model))
        loop.epoch, loop.step_in_epoch, loop.totals = loop.epoch + 1, 0, EpochTotals()
        self._save(loop)

    def _finish(self, loop: _Loop) -> dict:
        if not self.context.is_main:
            return {"rank": self.context.rank, "epochs": loop.epoch, "steps": loop.global_step}
        final = {**self._final_metrics(loop.schedule, loop.epoch, loop.global_step), "run_hash": self.run_hash, "identity": self.identity}
        plot_curves(self.out, self._curve_title(loop.model))
        write_done(self.out, final)
        self.log(f"finished: {final}")
        return final

    # ----- start, resume, save ------------------------------------------------------
    def _finished_already(self) -> dict | None:
        """The DONE of a finished run with these settings (adopting one from before identity version
        2), None for a run to train; a finished run with other settings is an error."""
        done = read_done(self.out)
        if done is None:
            return None
        if done.get("run_hash") != self.run_hash:
            checkpoint_path = self.out / CHECKPOINT_NAME
            checkpoint = self._own_checkpoint()
            if not self._adoptable(done.get("run_hash"), checkpoint):
                changed = format_differences(differences(done.get("identity", {}), self.identity)) if "identity" in done else "it predates the recorded identity"
                raise OtherRunError(self.out, "a finished run", changed)
            done = {**done, "run_hash": self.run_hash, "identity": self.identity}
            if self.context.is_main:
                write_done(self.out, done)
            self.log(f"{self.out}: a run from before identity version 2 with these settings and this recipe, adopted")
        self.log(f"{self.out} is finished already: {done}")
        return done

    def _own_checkpoint(self) -> dict | None:
        """The run folder's checkpoint (None if it has none); a file there that is not one is an error."""
        path = self.out / CHECKPOINT_NAME
        if not path.exists():
            return None
        move = f"move it out of {self.out}, then run the same command to train the run from its start"
        return load_run_checkpoint(path, "the run's own checkpoint, to resume from", damaged=f"it was {DAMAGED}: {move}", advice=move)

    def _start(self) -> _Loop:
        """The model, optimizer, schedule and data of the run, at its checkpoint's position if it has one."""
        cfg, context = self.cfg, self.context
        checkpoint_path = self.out / CHECKPOINT_NAME
        checkpoint = self._own_checkpoint()
        if checkpoint is not None and checkpoint["run_hash"] != self.run_hash and not self._adoptable(checkpoint["run_hash"], checkpoint):
            stored, current = (checkpoint["identity"], self.identity) if "identity" in checkpoint else (checkpoint["run"], cfg.settings())
            raise OtherRunError(self.out, "the checkpoint of an unfinished run", format_differences(differences(stored, current)))

        train_images, val_images = self._data()
        torch.manual_seed(cfg.seed)  # the random init
        model, lr, self.epochs, fine_tune = self._build_model(train_images.classes, checkpoint)
        schedule = self._schedule(lr, len(train_images.classes), fine_tune)
        optimizer = self._optimizer(model, lr)
        loop = _Loop(model=model, network=model, optimizer=optimizer, schedule=schedule, classes=train_images.classes, device=context.device)
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            schedule.load_state_dict(checkpoint["schedule"])
            loop.epoch, loop.step_in_epoch, loop.global_step = checkpoint["epoch"], checkpoint["step_in_epoch"], checkpoint["global_step"]
            loop.read_step = loop.global_step
            loop.totals = EpochTotals(**checkpoint["epoch_totals"])
            if not context.is_main:  # the checkpoint's skipped images are every rank's, listed once by rank 0
                loop.totals.skipped = []
            _restore_rng(checkpoint["rng"])
            if context.is_main:
                truncate_metrics(self.out, loop.epoch - 1)
            self.log(f"resuming {self.out} at epoch {loop.epoch}, step {loop.step_in_epoch} of the epoch")

        device = loop.device
        model.to(device, memory_format=MEMORY_FORMAT)
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.to(device)
        if cfg.compile:
            loop.network = torch.compile(loop.network)
        if context.distributed:
            loop.network = DistributedDataParallel(loop.network, device_ids=[device.index] if device.type == "cuda" else None)
        loop.pending = torch.zeros(5, dtype=torch.float64, device=device)

        transform = TrainTransform(self.pixel_scale, self.profile.crop)
        loop.sampler = EpochSampler(len(train_images), shuffle=True, seed=cfg.seed, rank=context.rank, world_size=context.world_size)
        workers = cfg.workers if cfg.workers is not None else default_workers(context.local_world_size, device)
        dataset = ImageDataset(train_images, transform, seed=cfg.seed, skip_bad_images=cfg.skip_bad_images, cache_decoded=self.profile.cache_decoded)
        loop.loader = make_loader(dataset, loop.sampler, self.micro_batch, workers, device)
        if decode_path(cfg.decode, device, measure=lambda: self._probe(loop)) == "gpu":  # workers read bytes; the device decodes and augments
            loop.augmenter = DeviceAugmenter(transform, cfg.seed, device, cfg.skip_bad_images)
            loop.loader = make_loader(EncodedDataset(train_images), loop.sampler, self.micro_batch, workers, device, collate_fn=collate_encoded)
        loop.val_dataset = self._val_batches(val_images)
        loop.steps_per_epoch = len(loop.sampler) // (self.micro_batch * cfg.accum)
        if loop.steps_per_epoch == 0:
            raise ValueError(f"{len(train_images)} training images give no full batch of {self.global_batch}; lower --batch-size")
        self.log(
            f"training VGG-{model.config} ({self.profile.name} profile: crop {self.profile.crop}, width 1/{self.profile.width}) "
            f"at S={self.scale} (pixels {self.pixel_scale}), {self.epochs} epochs max, {loop.steps_per_epoch} steps/epoch of "
            f"{self.global_batch} images ({context.world_size} process(es) x {cfg.accum} x {self.micro_batch}), lr {schedule.lr:g}, "
            f"device {device}, run hash {self.run_hash}"
        )
        loop.last_save = time.monotonic()
        return loop

    def _probe(self, loop: _Loop) -> tuple[float, float]:
        """`--decode auto` on CUDA: the CPU loader's images/s and the step's, measured and logged."""
        loader_rate, step_rate = probe_rates(loop.network, loop.model, self.normalization, loop.loader, loop.device)
        self.log(f"--decode auto: the CPU loader delivers {loader_rate:.0f} images/s, a training step takes {step_rate:.0f}")
        return loader_rate, step_rate

    def _schedule(self, lr: float, classes: int, fine_tune: bool) -> PlateauSchedule:
        """The profile's plateau schedule (or its fine-tuning variant) starting at `lr`."""
        profile = self.profile
        return PlateauSchedule(
            lr=lr,
            patience=self.cfg.plateau_patience or profile.plateau_patience,
            threshold=profile.plateau_threshold,
            min_stage_epochs=profile.plateau_min_epochs,
            chance_accuracy=100.0 / classes,
            near_chance=profile.near_chance,
            give_up_epochs=profile.give_up_epochs,
            deadlines=drop_deadline_epochs(profile.drop_deadlines, self.epochs),
            earliest=drop_earliest_epochs(profile.drop_not_before, self.epochs),
            mode=(profile.finetune_schedule or profile.schedule) if fine_tune else profile.schedule,
        )

    def _optimizer(self, model: VGG, lr: float) -> torch.optim.SGD:
        """SGD with momentum and weight decay on the trainable parameters (a new last layer in a
        group of its own when its rate is scaled)."""
        cfg = self.cfg
        if cfg.freeze == "features":
            model.features.requires_grad_(False)
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for _, p in trainable], "lr_mult": 1.0}]
        if cfg.head_lr_mult != 1.0:
            groups = [
                {"params": [p for name, p in trainable if not is_head(name)], "lr_mult": 1.0},
                {"params": [p for name, p in trainable if is_head(name)], "lr_mult": cfg.head_lr_mult},
            ]
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def _save(self, loop: _Loop) -> None:
        """Checkpoint the loop's position (written by the main rank, atomically; every rank calls this
        at the same step, as the epoch's skipped images are gathered from all of them)."""
        # mid-epoch only: at an epoch's end _close_epoch has listed them (every rank takes the same branch)
        skipped = distributed.gather_lists(loop.totals.skipped) if loop.step_in_epoch else []
        if self.context.is_main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "spec": loop.model.spec.to_dict(),
                "normalization": self.normalization.to_dict(),
                "classes": list(loop.classes),
                "profile": self.profile.to_dict(),
                "run": self.cfg.settings(),
                "identity": self.identity,
                "run_hash": self.run_hash,
                "train_scale": str(self.scale),
                "model": clean_state_dict(loop.model.state_dict()),
                "optimizer": loop.optimizer.state_dict(),
                "schedule": loop.schedule.state_dict(),
                "epoch": loop.epoch,
                "max_epochs": self.epochs,
                "step_in_epoch": loop.step_in_epoch,
                "global_step": loop.global_step,
                "epoch_totals": {**asdict(loop.totals), "skipped": skipped},  # every rank's: rank 0 resumes with them
                "rng": _rng_state(),
                "git_commit": git_commit(),
            }
            save_checkpoint(state, self.out / CHECKPOINT_NAME)
        loop.last_save = time.monotonic()

    # ----- epochs ------------------------------------------------------------------
    def _curve_title(self, model: VGG) -> str:
        return f"VGG-{model.config}, S={self.scale}, {self.profile.name} profile"

    def _progress(self, total: int, done: int, epoch: int):
        if not (self.context.is_main and self.cfg.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=done, desc=f"epoch {epoch}", unit="step", mininterval=1.0, file=sys.stderr, leave=False, disable=None)

    @torch.no_grad()
    def _validate(self, model: VGG, dataset: ImageDataset, device: torch.device) -> tuple[float, float, int]:
        """Top-1 and top-5 error (%) of the centre crops of the val subset, and its size (counts summed
        on the device, read back once)."""
        model.eval()
        if self._val_loader is None:  # built once: its workers persist across epochs
            sampler = EpochSampler(len(dataset), shuffle=False, rank=self.context.rank, world_size=self.context.world_size, pad=False)
            workers = self.cfg.workers if self.cfg.workers is not None else default_workers(self.context.local_world_size, device)
            self._val_loader = make_loader(dataset, sampler, max(1, self.micro_batch * 2), workers=workers, device=device)
        counts = torch.zeros(5, dtype=torch.float64, device=device)
        for batch in iterate_epoch(self._val_loader, log=self.log):
            batch = batch.to(device, MEMORY_FORMAT)
            with _autocast(device):
                logits = model(self.normalization(batch.images).contiguous(memory_format=MEMORY_FORMAT))
            counts += batch_sums(torch.zeros((), device=device), logits, batch.labels)
        counts = distributed.all_reduce_sum(counts).cpu()
        total = int(counts[3])
        return error_percent(int(counts[1]), total), error_percent(int(counts[2]), total), total

    def _epoch_row(self, loop: _Loop, skipped: int) -> dict:
        """Validate, step the schedule on the val accuracy, log the epoch and return its metrics row
        (`skipped`: the unreadable training images skipped this epoch, over all ranks)."""
        schedule, totals = loop.schedule, loop.totals
        val_top1, val_top5, val_count = self._validate(loop.model, loop.val_dataset, loop.device)
        lr_used = schedule.lr
        action = schedule.step(100.0 - val_top1)
        row = {
            "epoch": loop.epoch,
            "step": loop.global_step,
            "lr": lr_used,
            "train_loss": round(totals.loss_sum / max(1, totals.seen), 5),
            "train_top1_err": round(error_percent(totals.top1, totals.seen), 3),
            "train_top5_err": round(error_percent(totals.top5, totals.seen), 3),
            "val_top1_err": round(val_top1, 3),
            "val_top5_err": round(val_top5, 3),
            "images_per_s": round(totals.seen / max(totals.elapsed, 1e-9), 1),
            "wall_s": round(totals.elapsed, 2),
            "skipped_images": skipped,
        }
        note = {
            "drop": f"; lr -> {schedule.lr:g}",
            "deadline": f"; lr -> {schedule.lr:g} (drop {schedule.drops} is due after {schedule.epochs} of {self.epochs} epochs)",
            "stop": "; plateau after the last drop: stopping",
            "give up": f"; still at chance after {schedule.epochs} epochs ({max(0.0, schedule.learned_fraction()):.0%} of the way): stopping",
            "hold": f"; plateau, but the lr holds ({max(0.0, schedule.learned_fraction()):.0%} of the way from chance, "
            f"{schedule.stage_epochs} epoch(s) at this rate"
            + (f"; no drop {schedule.drops + 1} before {schedule.earliest[schedule.drops]} epochs)" if schedule.too_early() else ")"),
        }.get(action, "")
        self.log(
            f"epoch {loop.epoch}: train loss {row['train_loss']:.4f}, top-1 err {row['train_top1_err']:.2f}%; "
            f"val ({val_count} images, centre crop at Q={self.val_scale}) top-1 err {val_top1:.2f}%, top-5 err {val_top5:.2f}%; "
            f"{row['images_per_s']:.0f} img/s{note}"
        )
        return row

    def _final_metrics(self, schedule: PlateauSchedule, epochs_run: int, global_step: int) -> dict:
        import pandas as pd

        frame = pd.read_csv(self.out / "metrics.csv")
        last = frame.iloc[-1]
        return {
            "config": self.cfg.config,
            "train_scale": str(self.scale),
            "profile": self.profile.name,
            "epochs": int(epochs_run),
            "steps": int(global_step),
            "images_seen": int(global_step) * self.global_batch,
            "paper_length_ratio": float(f"{global_step * self.global_batch / (PAPER_ITERATIONS * PAPER_BATCH):.4g}"),
            "lr_drops": schedule.drops,
            "drop_epochs": list(schedule.drop_epochs),
            "deadline_drop_epochs": list(schedule.deadline_drop_epochs),
            "final_lr": float(last["lr"]),
            "train_loss": float(last["train_loss"]),
            "stopped": "at chance" if schedule.gave_up else "plateau" if schedule.finished else "max_epochs",
            "val_top1_err": float(last["val_top1_err"]),
            "val_top5_err": float(last["val_top5_err"]),
            "best_val_top1_err": float(frame["val_top1_err"].min()),
            "train_wall_s": round(float(frame["wall_s"].sum()), 1),
            "git_commit": git_commit(),
        }


def train(cfg: TrainConfig, out: Path | str) -> dict:
    """Train (or resume, or skip if finished) the run in `out`; returns its final metrics."""
    with StopRequests() as stop:  # before the process group and the data listing: preemption can come at any time
        try:
            return Trainer(cfg, Path(out)).run(stop)
        finally:
            distributed.teardown()
