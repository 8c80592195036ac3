"""The steps of a training run's epoch (Sect. 3.1): SGD steps on the global batch, the device-side
sums read back every `sync_every` steps (one host sync and one all-reduce, which also carries the
ranks' stop requests), mid-epoch checkpoints, and stops at the next checkpoint (`vgg.runtime.stop_signals`).

`Loop` is the live state of a run (model, optimizer, schedule, loaders, position); `Steps` runs
an epoch of it. `vgg.training.train` builds both, validates after each epoch and saves the checkpoints.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vgg.data.device_decode import DeviceAugmenter
from vgg.data.loaders import EpochSampler, iterate_epoch
from vgg.data.normalization import Normalization
from vgg.nets.models import VGG
from vgg.runtime import distributed
from vgg.runtime.checkpoint import CHECKPOINT_NAME
from vgg.runtime.distributed import DistributedContext
from vgg.runtime.stop_signals import Preempted, StopRequests, describe
from vgg.training.run_config import TrainConfig
from vgg.training.run_state import EpochTotals
from vgg.training.schedule import PlateauSchedule
from vgg.training.train_step import forward_backward
from vgg.training.validation import Validation


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite: training stops, keeping the last good checkpoint. A
    ValueError: the settings (most often the learning rate) are what to change."""


@dataclass
class Loop:
    """A training loop's live objects and its position (epoch, step, the epoch's totals so far)."""

    model: VGG
    network: nn.Module  # the model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    schedule: PlateauSchedule
    classes: tuple[str, ...]
    device: torch.device
    precision: str = "fp32"  # the arithmetic of the forward and backward passes: fp32 or bf16 (autocast)
    loader: object = None
    augmenter: DeviceAugmenter | None = None  # --decode gpu: decodes and augments the loader's files on the device
    sampler: EpochSampler | None = None
    validation: Validation | None = None
    steps_per_epoch: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    read_step: int = 0  # global_step at the last read-back
    totals: EpochTotals = field(default_factory=EpochTotals)
    pending: torch.Tensor | None = None  # on the device, since the last read-back: see vgg.evaluation.metrics.batch_sums
    started: float = 0.0  # perf_counter at the epoch's start, less its time before a resume
    last_save: float = 0.0

    @property
    def decode(self) -> str:
        """Where training images are decoded: "gpu" (the device) or "cpu" (the loader's workers);
        checkpoints keep it, so that --decode auto decides once per run."""
        return "cpu" if self.augmenter is None else "gpu"


def _step_seed(seed: int, global_step: int) -> int:
    return (seed * 1_000_003 + global_step) % (2**63)


class Steps:
    """Runs a `Loop`'s epochs step by step for one rank: `cfg`'s accumulation, read-back and
    checkpoint cadences, `save(loop)` writing its checkpoints."""

    def __init__(
        self, cfg: TrainConfig, context: DistributedContext, normalization: Normalization, micro_batch: int, out: Path,
        save: Callable[[Loop], None], log: Callable[[str], None],
    ):
        self.cfg, self.context, self.normalization, self.micro_batch = cfg, context, normalization, micro_batch
        self.out, self.save, self.log = out, save, log

    def agree_on_stop(self, stop: StopRequests, sums: torch.Tensor) -> torch.Tensor:
        """All-reduce `sums` (float64, on the loop's device or the CPU) with this rank's stop request,
        so that every rank learns of a stop asked of any (Ctrl-C on any making it an interruption
        everywhere), and return the reduced `sums`."""
        flags = torch.tensor([float(stop.raised), float(stop.signum == signal.SIGINT)], dtype=torch.float64, device=sums.device)
        reduced = distributed.all_reduce_sum(torch.cat([sums, flags])).cpu()
        stop.agree(stopped=bool(reduced[-2] > 0), interrupted=bool(reduced[-1] > 0))
        return reduced[:-2]

    def run_epoch(self, loop: Loop, stop: StopRequests) -> None:
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

    def _step(self, loop: Loop, micro_batches) -> None:
        """One SGD step on the global batch (`accum` micro-batches per rank). Its loss and top-k
        counts are added to `loop.pending` on the device: nothing here waits for the device."""
        cfg, context = self.cfg, self.context
        for micro in range(cfg.accum):
            batch = next(micro_batches).to(loop.device)  # uint8 NCHW: normalised, then made channels-last (the cheaper order)
            # dropout masks from (seed, step) alone; seeded after fetching the batch, since
            # creating a loader iterator draws from the global generator
            torch.manual_seed(_step_seed(cfg.seed, (loop.global_step * cfg.accum + micro) * context.world_size + context.rank))
            sync = nullcontext() if (micro == cfg.accum - 1 or not context.distributed) else loop.network.no_sync()
            with sync:
                loop.pending += forward_backward(loop.network, self.normalization, batch, loop.device, cfg.accum, loop.precision == "bf16")
        loop.optimizer.step()
        loop.optimizer.zero_grad(set_to_none=True)
        loop.step_in_epoch += 1
        loop.global_step += 1

    def _read_back_due(self, loop: Loop, stop: StopRequests) -> bool:
        """At the epoch's end, every `sync_every` steps, at every `checkpoint_steps` step, and (one
        process) at once after a stop signal: ranks must read back at the same steps, so several
        processes wait for the next `sync_every` step."""
        every = [self.cfg.sync_every, self.cfg.checkpoint_steps]
        stop_now = stop.raised and not self.context.distributed
        return stop_now or loop.step_in_epoch == loop.steps_per_epoch or any(n and loop.global_step % n == 0 for n in every)

    def _read_back(self, loop: Loop, stop: StopRequests, progress) -> bool:
        """Move the device-side sums into the epoch's totals: one host sync and one all-reduce across
        ranks, which also carries the stop requests and the main rank's clock (so that every rank
        checkpoints at the same step). Raises on a non-finite loss; returns whether the
        `checkpoint_minutes` are up."""
        time_due = self.context.is_main and time.monotonic() - loop.last_save > self.cfg.checkpoint_minutes * 60
        clock = torch.full_like(loop.pending[:1], float(time_due))
        sums = self.agree_on_stop(stop, torch.cat([loop.pending, clock]))
        loop.pending.zero_()
        first, last = loop.read_step, loop.global_step - 1  # the steps these sums cover, counted from 0
        where = f"at step {last}" if first == last else f"in steps {first}-{last}"
        loop.read_step = loop.global_step
        if sums[4] > 0:
            checkpoint = self.out / CHECKPOINT_NAME
            kept = (
                f"The last good checkpoint ({checkpoint}) is kept" if checkpoint.exists()
                else "No checkpoint had been written yet: the run starts again from its beginning"
            )
            raise NonFiniteLossError(
                f"the loss became NaN or infinite {where} (epoch {loop.epoch}) with learning rate {loop.schedule.lr:g}; "
                f"training stopped. {kept}. VGG without batch norm diverges at high rates (0.1): "
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

    def _checkpoint_if_due(self, loop: Loop, stop: StopRequests, time_due: bool) -> None:
        """A mid-epoch checkpoint every `checkpoint_steps` steps or `checkpoint_minutes` (`time_due`),
        and when a rank was asked to stop (then exit through Preempted). Only at read-backs, so a
        checkpoint's totals are complete, and at the same step on every rank."""
        due = (self.cfg.checkpoint_steps and loop.global_step % self.cfg.checkpoint_steps == 0) or time_due
        if stop.raised or (due and loop.step_in_epoch < loop.steps_per_epoch):
            self.save(loop)
            if stop.raised:
                self.log(f"{describe(stop.signum)}: checkpoint at epoch {loop.epoch}, step {loop.step_in_epoch}; exit {stop.exit_code} (run the same command to resume)")
                raise Preempted(stop.signum)

    def _progress(self, total: int, done: int, epoch: int):
        if not (self.context.is_main and self.cfg.progress):
            return None
        from tqdm import tqdm  # here: importing it costs python -m vgg's other commands start-up time

        return tqdm(total=total, initial=done, desc=f"epoch {epoch}", unit="step", mininterval=1.0, file=sys.stderr, leave=False, disable=None)
