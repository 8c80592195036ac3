"""One training run with the paper's recipe (Sect. 3.1), resumable at the exact step.

The recipe (`vgg.recipe.paper`, as the profile overrides it): SGD with momentum and weight decay,
dropout on FC1/FC2, a global batch split over the ranks (and `accum` micro-batches), a learning
rate divided by 10 as `vgg.training.schedule` says. Sizes in paper units, mapped by the profile.

Per-epoch validation (what drives the learning-rate drops): the central crop x crop crop
of each val image rescaled to the paper's single test scale for this training scale
(Q = S, or (Smin + Smax) / 2 when jittered), no flip, on a fixed subset of the val split
(`val_images` of the profile, the same subset for every run; 0 means all of it).

Determinism: augmentations are seeded per image by (seed, epoch, index) and dropout by
(seed, step), so the same command gives the same weights, and a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from vgg.data.datasets import ImageList, load_split, missing_classes_warning, require_data_folder
from vgg.data.device_decode import DeviceAugmenter, EncodedDataset, collate_encoded, decode_path
from vgg.data.loaders import EpochSampler, default_workers, make_loader, skipped_listing
from vgg.data.normalization import Normalization, get_normalization
from vgg.data.transforms import ScaleRange, TrainTransform
from vgg.localisation.box_data import image_dataset, subset_with_boxes, with_boxes
from vgg.localisation.regression import head_outputs
from vgg.evaluation.metrics import append_metrics, curve_summary, error_percent, plot_curves, set_aside_metrics, truncate_metrics
from vgg.nets.models import VGG, VGGSpec
from vgg.nets.torchvision_compat import clean_state_dict
from vgg.recipe.paper import PAPER
from vgg.recipe.profiles import Profile, get_profile
from vgg.runtime import distributed
from vgg.runtime import precision as arithmetic
from vgg.runtime.checkpoint import CHECKPOINT_NAME, DONE_NAME, git_commit, read_done, save_checkpoint, write_done
from vgg.runtime.stop_signals import Preempted, StopRequests, describe
from vgg.training.identity import differences, digest, format_differences
from vgg.training.run_config import TrainConfig
from vgg.training.run_progress import RunProgress, error_line, record_failure, run_logger
from vgg.training.run_state import (
    CHECKPOINT_FORMAT, EpochTotals, OtherRunError, checkpoint_to_resume, describe_done, own_checkpoint, recorded_precision, restore_rng,
    rng_state,
)
from vgg.training.schedule import profile_schedule
from vgg.training.starting_weights import InitSource, NetOptions, check_net_options, first_weights
from vgg.training.tensorboard_scalars import require_tensorboard
from vgg.training.train_loop import Loop, Steps
from vgg.training.train_step import MEMORY_FORMAT, probe_rates, sgd_optimizer
from vgg.training.validation import Validation

PLOT_EVERY_EPOCH_AFTER_S = 30.0


class Trainer:
    """Holds everything of one run; `run()` trains to the end (or raises Preempted)."""

    def __init__(self, cfg: TrainConfig, out: Path):
        self.cfg, self.out, self.started = cfg, Path(out), time.time()
        if cfg.tensorboard:
            require_tensorboard()  # before the run folder exists
        self.scale = ScaleRange.parse(cfg.train_scale)
        self.scale.check_bounds(cfg.max_scale)  # before the run folder exists
        self.boxes = cfg.regression != "none"  # Appendix A's localisation net: box targets, Euclidean loss
        self.context = distributed.setup(cfg.device)
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = run_logger(self.out, self.context.is_main)
        self.profile: Profile = get_profile(cfg.profile)
        self.pixel_scale = self.scale.scaled(self.profile.size)
        self.val_scale = self.profile.size(self.scale.single_test_scale)
        self.global_batch = cfg.batch_size or self.profile.batch_size
        self.normalization: Normalization = get_normalization(cfg.normalization)
        per_step = self.context.world_size * cfg.accum
        if self.global_batch % per_step:
            raise ValueError(f"the global batch {self.global_batch} does not split evenly over {self.context.world_size} process(es) x {cfg.accum} accumulation step(s)")
        self.micro_batch = self.global_batch // per_step
        self.dropout = cfg.dropout if cfg.dropout is not None else self.profile.dropout
        self.workers = cfg.workers if cfg.workers is not None else default_workers(self.context.local_world_size, self.context.device)
        self.steps = Steps(cfg, self.context, self.normalization, self.micro_batch, self.out, self._save, self.log)

    # ----- the run ------------------------------------------------------------------
    def run(self, stop: StopRequests) -> dict:
        """Train to the end, resuming from the run's checkpoint; a finished run returns its DONE.
        Stop signals (caught by `stop`, installed before the process group and the data listing)
        end it with `Preempted`: at once before its loop starts, after a checkpoint inside it."""
        stop.deferred = self.context.distributed  # no rank may leave a collective call that the others are in
        try:
            loop = self.begin()
            if isinstance(loop, dict):
                return loop
            if self.context.is_main:
                self.progress = RunProgress(self.out, loop.epoch, self.epochs, len(loop.validation.dataset), self.cfg.tensorboard, self.started)
            if self.context.distributed:  # every rank stops here, or none does
                self.steps.agree_on_stop(stop, torch.zeros(0, dtype=torch.float64))
                if stop.raised:
                    raise Preempted(stop.signum, saved=False)
            stop.deferred = stop.in_loop = True
            while loop.epoch < self.epochs and not loop.schedule.finished:
                self.steps.run_epoch(loop, stop)
                self._close_epoch(loop)
            final = self._finish(loop)
            if stop.raised:  # asked after the last read-back: the run is complete, but the command stops
                self.log(f"{describe(stop.signum)}: the run had finished ({DONE_NAME} written); exit {stop.exit_code}")
                raise Preempted(stop.signum)
            return final
        except Preempted as stopped:
            self._progress_ended("stopped")
            if not stopped.reported:
                self._log_unsaved_stop(stopped, stop.in_loop)
                stopped.reported = True
            raise
        except Exception as error:
            self._progress_ended("failed", error_line(error))
            raise

    def _progress_ended(self, state: str, error: str = "") -> None:
        if getattr(self, "progress", None) is not None:
            self.progress.ended(state, error)
        elif state == "failed" and self.context.is_main:
            record_failure(self.out, error)

    def begin(self) -> Loop | dict:
        """The run's loop, at its start or at its checkpoint's position; the DONE of a finished run."""
        require_data_folder(self.cfg.data)  # first: a missing dataset would read as a change of settings
        self.splits = self._list_data()
        self.cfg = self._decide_precision()
        self.identity = self.cfg.identity(splits=list(self.splits))
        self.run_hash = digest(self.identity)
        done = self._finished_already()
        return done if done is not None else self._start()

    @cached_property
    def own_checkpoint(self) -> dict | None:
        """The run folder's checkpoint, read once (`vgg.training.run_state.own_checkpoint`)."""
        return own_checkpoint(self.out)

    def _decide_precision(self) -> TrainConfig:
        """The run's config with `--precision auto` decided once per run: as its DONE or checkpoint
        recorded it, or else now, for this device (`vgg.runtime.precision`; rank 0's decision for every rank)."""
        cfg = recorded_precision(self.cfg, read_done(self.out))
        if cfg.precision == "auto":  # the checkpoint read only when the DONE does not say
            cfg = recorded_precision(cfg, self.own_checkpoint)
        if cfg.precision != "auto":
            if self.cfg.precision == "auto":
                self.log(f"--precision auto: {cfg.precision}, as decided when the run started")
            return cfg
        # rank 0 alone probes (ranks probing together would slow each other's measurement)
        decided = arithmetic.resolve("auto", self.context.device) if self.context.is_main else "fp32"
        if self.context.distributed:
            rank0_bf16 = torch.tensor([float(self.context.is_main and decided == "bf16")], dtype=torch.float64)
            decided = "bf16" if distributed.all_reduce_sum(rank0_bf16)[0] > 0 else "fp32"
        self.log(f"--precision auto: {arithmetic.describe_auto(self.context.device) if self.context.is_main else decided}")
        return replace(cfg, precision=decided)

    def _log_unsaved_stop(self, stopped: Preempted, in_loop: bool) -> None:
        what, code = describe(stopped.signum), stopped.exit_code
        if not in_loop:
            self.log(f"{what} during start-up, before training began: nothing to save; exit {code} (run the same command to start again)")
        else:
            self.log(f"{what} again: stopped at once; the last checkpoint ({self.out / CHECKPOINT_NAME}) is kept; exit {code} (run the same command to resume from it)")

    def _close_epoch(self, loop: Loop) -> None:
        """Validate, let the schedule act on it, log the epoch's row, then checkpoint the next epoch's start."""
        skipped = distributed.gather_lists(loop.totals.skipped)
        if skipped:
            self.log(skipped_listing(skipped, f"in epoch {loop.epoch}"))
        row = self._epoch_row(loop, len(skipped))
        if self.context.is_main:  # the row first: a kill before the checkpoint leaves a row that resume truncates
            append_metrics(self.out, row)
            self.progress.epoch_closed(row)
            if row["wall_s"] > PLOT_EVERY_EPOCH_AFTER_S:  # long epochs: keep the curve current
                plot_curves(self.out, self._curve_title(loop.model))
        loop.epoch, loop.step_in_epoch, loop.totals = loop.epoch + 1, 0, EpochTotals()
        self._save(loop)

    def _epoch_row(self, loop: Loop, skipped: int) -> dict:
        """Validate, step the schedule on the val accuracy, log the epoch and return its metrics row
        (`skipped`: the unreadable training images skipped this epoch, over all ranks)."""
        schedule, totals = loop.schedule, loop.totals
        val_top1, val_top5, val_count = loop.validation.errors(loop.model, loop.device)
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
        error, counted = ("box err (IoU <= 0.5)", "crops with a box") if self.boxes else ("top-1 err", "images")
        self.log(f"epoch {loop.epoch}: train loss {row['train_loss']:.4f}, {error} {row['train_top1_err']:.2f}%; val ({val_count} {counted}, centre crop at "
                 f"Q={self.val_scale}) {error} {val_top1:.2f}%{'' if self.boxes else f', top-5 err {val_top5:.2f}%'}; {row['images_per_s']:.0f} img/s{schedule.describe(action, self.epochs)}")
        return row

    def _finish(self, loop: Loop) -> dict:
        if not self.context.is_main:
            return {"rank": self.context.rank, "epochs": loop.epoch, "steps": loop.global_step}
        schedule, steps = loop.schedule, loop.global_step
        final = {
            "config": self.cfg.config, "train_scale": str(self.scale), "profile": self.profile.name, "epochs": int(loop.epoch),
            "steps": int(steps), "images_seen": int(steps) * self.global_batch,
            "paper_length_ratio": float(f"{steps * self.global_batch / (PAPER.iterations * PAPER.batch_size):.4g}"),
            "lr_drops": schedule.drops, "drop_epochs": list(schedule.drop_epochs), "deadline_drop_epochs": list(schedule.deadline_drop_epochs),
            "stopped": "at chance" if schedule.gave_up else "plateau" if schedule.finished else "max_epochs",
            **curve_summary(self.out), "git_commit": git_commit(), "run_hash": self.run_hash, "identity": self.identity,
        }
        plot_curves(self.out, self._curve_title(loop.model))
        write_done(self.out, final)
        self.progress.ended("finished")
        self.log(f"finished: {describe_done(final, self.out)}")
        return final

    # ----- start, resume, save ------------------------------------------------------
    def _finished_already(self) -> dict | None:
        """The DONE of a finished run with these settings, None for a run to train; a finished run
        with other settings is an error."""
        done = read_done(self.out)
        if done is None:
            return None
        if done.get("run_hash") != self.run_hash:
            changed = format_differences(differences(done.get("identity", {}), self.identity)) if "identity" in done else "it predates the recorded identity"
            raise OtherRunError(self.out, "a finished run", changed)
        self.log(f"finished already: {describe_done(done, self.out)}")
        return done

    def _start(self) -> Loop:
        """The model, optimizer, schedule and data of the run, at its checkpoint's position if it has one."""
        checkpoint = checkpoint_to_resume(self.out, self.cfg, self.identity, self.run_hash, self.own_checkpoint)
        self.__dict__.pop("own_checkpoint", None)  # not kept for the whole run: weights and momentum, a GB for VGG-E
        train_images, val_images = self.splits
        self._log_data(train_images, val_images)
        train_images, self.train_boxes = with_boxes(train_images, self.cfg.data, self.boxes, self.log)  # boxes: those with one only
        val_images, self.val_boxes = with_boxes(val_images, self.cfg.data, self.boxes, self.log)
        torch.manual_seed(self.cfg.seed)  # the random init
        model, lr, fine_tune = self._first_net(train_images, checkpoint)
        schedule = profile_schedule(self.profile, lr, len(train_images.classes), self.epochs, fine_tune, self.cfg.plateau_patience, self.boxes)
        optimizer = sgd_optimizer(model, lr, self.cfg.momentum, self.cfg.weight_decay, self.cfg.head_lr_mult, self.cfg.freeze == "features")
        loop = Loop(
            model=model, network=model, optimizer=optimizer, schedule=schedule, classes=train_images.classes, device=self.context.device,
            precision=self.cfg.precision,
        )
        if checkpoint is not None:
            self._resume(loop, checkpoint)
        elif self.context.is_main and (earlier := set_aside_metrics(self.out)) is not None:
            self.log(f"starting from scratch: the metrics of an earlier start without a checkpoint are kept as {earlier}")
        self._place(loop)
        self._loaders(loop, train_images, val_images, checkpoint)
        self.log(
            f"training VGG-{model.config} ({self.profile.name} profile: crop {self.profile.crop}, width 1/{self.profile.width}) "
            f"at S={self.scale} (pixels {self.pixel_scale}), {self.epochs} epochs max, {loop.steps_per_epoch} steps/epoch of "
            f"{self.global_batch} images ({self.context.world_size} process(es) x {self.cfg.accum} x {self.micro_batch}), lr {schedule.lr:g}, "
            f"device {loop.device}, {loop.precision}, run hash {self.run_hash}"
        )
        loop.last_save = time.monotonic()
        return loop

    def _list_data(self) -> tuple[ImageList, ImageList]:
        """The train and val lists, listed once per run: the run's identity fingerprints them too."""
        train_images, val_images = load_split(self.cfg.data, "train"), load_split(self.cfg.data, "val")
        if val_images.classes != train_images.classes:
            raise ValueError(f"{self.cfg.data}: val classes differ from train classes")
        return train_images, val_images

    def _log_data(self, train_images: ImageList, val_images: ImageList) -> None:
        self.log(train_images.describe())
        self.log(val_images.describe())
        if warning := missing_classes_warning(val_images):
            self.log(warning)

    def _first_net(self, train_images: ImageList, checkpoint: dict | None) -> tuple[VGG, float, bool]:
        """The network with its first weights (`vgg.training.starting_weights`), its initial learning rate and
        whether it fine-tunes a trained net (the profile's finetune_* recipe); sets `self.epochs`. A
        resumed run's net is built from its checkpoint's spec (no source is read again): the
        checkpoint's weights, optimizer and schedule then replace the rate and recipe given here."""
        cfg, profile = self.cfg, self.profile
        options = NetOptions(cfg.config, cfg.batch_norm, self.dropout, cfg.lrn_alpha, cfg.freeze, cfg.head_lr_mult)
        source = InitSource.of_run(cfg.init, cfg.weights)
        if checkpoint is not None:
            check_net_options(options, source)
            self.epochs = checkpoint["max_epochs"]
            return VGG.from_spec(VGGSpec(**checkpoint["spec"])), PAPER.lr, source.kind == "weights"
        outputs = head_outputs(cfg.regression, len(train_images.classes)) if self.boxes else None
        first = first_weights(source, options, profile, self.normalization, train_images.classes, log=self.log, outputs=outputs)
        lr = cfg.lr if cfg.lr is not None else (profile.box_lr or profile.finetune_lr) if self.boxes else profile.finetune_lr if first.fine_tune else PAPER.lr
        self.epochs = cfg.epochs if cfg.epochs is not None else profile.epoch_limit(first.fine_tune, len(train_images), self.boxes)
        return first.model, lr, first.fine_tune

    def _resume(self, loop: Loop, checkpoint: dict) -> None:
        """Put the loop at its checkpoint's position: weights, optimizer, schedule, step, totals, generators."""
        loop.model.load_state_dict(checkpoint["model"])
        loop.optimizer.load_state_dict(checkpoint["optimizer"])
        loop.schedule.load_state_dict(checkpoint["schedule"])
        loop.epoch, loop.step_in_epoch, loop.global_step = checkpoint["epoch"], checkpoint["step_in_epoch"], checkpoint["global_step"]
        loop.read_step = loop.global_step
        loop.totals = EpochTotals(**checkpoint["epoch_totals"])
        if not self.context.is_main:  # the checkpoint's skipped images are every rank's, listed once by rank 0
            loop.totals.skipped = []
        restore_rng(checkpoint["rng"])
        if self.context.is_main:
            truncate_metrics(self.out, loop.epoch - 1)
        self.log(f"resuming {self.out} at epoch {loop.epoch}, step {loop.step_in_epoch} of the epoch")

    def _place(self, loop: Loop) -> None:
        """The model and the optimizer's state on the device; the network compiled and/or in DDP."""
        device = loop.device
        loop.model.to(device, memory_format=MEMORY_FORMAT)
        for state in loop.optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.to(device)
        if self.cfg.compile:
            loop.network = torch.compile(loop.network)
        if self.context.distributed:
            loop.network = DistributedDataParallel(loop.network, device_ids=[device.index] if device.type == "cuda" else None)
        loop.pending = torch.zeros(5, dtype=torch.float64, device=device)

    def _loaders(self, loop: Loop, train_images: ImageList, val_images: ImageList, checkpoint: dict | None) -> None:
        """The training loader (decoding on the CPU or on the device: `_decode`) and the validation."""
        cfg, context, profile = self.cfg, self.context, self.profile
        transform = TrainTransform(self.pixel_scale, profile.crop)
        loop.sampler = EpochSampler(len(train_images), shuffle=True, seed=cfg.seed, rank=context.rank, world_size=context.world_size)
        dataset = image_dataset(train_images, self.train_boxes, transform, profile.crop, cfg.seed, cfg.skip_bad_images, profile.cache_decoded)
        cpu_loader = lambda: make_loader(dataset, loop.sampler, self.micro_batch, self.workers, loop.device)  # noqa: E731
        if self._decode(loop, cpu_loader, checkpoint) == "gpu":  # workers read bytes; the device decodes and augments
            loop.augmenter = DeviceAugmenter(transform, cfg.seed, loop.device, cfg.skip_bad_images)
            loop.loader = make_loader(EncodedDataset(train_images), loop.sampler, self.micro_batch, self.workers, loop.device, collate_fn=collate_encoded)
        elif loop.loader is None:
            loop.loader = cpu_loader()
        limit = cfg.val_images if cfg.val_images is not None else profile.val_images
        loop.validation = Validation(
            *subset_with_boxes(val_images, self.val_boxes, limit), self.val_scale, profile.crop, self.normalization, context, max(1, self.micro_batch * 2), self.workers,
            cfg.skip_bad_images, profile.cache_decoded, self.log, loop.precision,
        )
        loop.steps_per_epoch = len(loop.sampler) // (self.micro_batch * cfg.accum)
        if loop.steps_per_epoch == 0:
            raise ValueError(f"{len(train_images)} training images give no full batch of {self.global_batch}; lower --batch-size")

    def _decode(self, loop: Loop, cpu_loader, checkpoint: dict | None) -> str:
        """Where to decode (`vgg.data.device_decode.decode_path`). `--decode auto` on CUDA measures the CPU
        loader (kept in `loop.loader` if it is chosen) against the step once: the choice is kept in
        the run's checkpoints, and with several ranks rank 0's measurement decides for all."""
        if self.boxes:
            return "cpu"
        if self.cfg.decode == "auto" and checkpoint is not None and "decode" in checkpoint:
            self.log(f"--decode auto: {checkpoint['decode']}, as decided when the run started")
            return checkpoint["decode"]

        def measure() -> tuple[float, float]:
            loop.loader = cpu_loader()
            loader_rate, step_rate = probe_rates(loop.network, loop.model, self.normalization, loop.loader, loop.device, loop.precision == "bf16")
            self.log(f"--decode auto: the CPU loader delivers {loader_rate:.0f} images/s, a training step takes {step_rate:.0f}")
            return loader_rate, step_rate

        choice = decode_path(self.cfg.decode, loop.device, measure=measure)
        if self.cfg.decode == "auto" and self.context.distributed:
            rank0_gpu = torch.tensor([float(self.context.is_main and choice == "gpu")], dtype=torch.float64)
            choice = "gpu" if distributed.all_reduce_sum(rank0_gpu)[0] > 0 else "cpu"
        return choice

    def _save(self, loop: Loop) -> None:
        """Checkpoint the loop's position (written by the main rank, atomically; every rank calls this
        at the same step, as the epoch's skipped images are gathered from all of them)."""
        # mid-epoch only: at an epoch's end _close_epoch has listed them (every rank takes the same branch)
        skipped = distributed.gather_lists(loop.totals.skipped) if loop.step_in_epoch else []
        if self.context.is_main:
            state = {
                "format": CHECKPOINT_FORMAT, "spec": loop.model.spec.to_dict(), "normalization": self.normalization.to_dict(),
                "classes": list(loop.classes), "profile": self.profile.to_dict(), "run": self.cfg.settings(), "identity": self.identity,
                "run_hash": self.run_hash, "train_scale": str(self.scale), "model": clean_state_dict(loop.model.state_dict()),
                "optimizer": loop.optimizer.state_dict(), "schedule": loop.schedule.state_dict(), "epoch": loop.epoch,
                "max_epochs": self.epochs, "step_in_epoch": loop.step_in_epoch, "global_step": loop.global_step,
                "epoch_totals": {**asdict(loop.totals), "skipped": skipped},  # every rank's: rank 0 resumes with them
                "decode": loop.decode, "rng": rng_state(), "git_commit": git_commit(),
            }
            save_checkpoint(state, self.out / CHECKPOINT_NAME)
        loop.last_save = time.monotonic()

    def _curve_title(self, model: VGG) -> str:
        return f"VGG-{model.config}{f' box regressor ({self.cfg.regression.upper()})' if self.boxes else ''}, S={self.scale}, {self.profile.name} profile"


def train(cfg: TrainConfig, out: Path | str) -> dict:
    """Train (or resume, or skip if finished) the run in `out`; returns its final metrics."""
    with StopRequests() as stop:  # before the process group and the data listing: preemption can come at any time
        try:
            return Trainer(cfg, Path(out)).run(stop)
        finally:
            distributed.teardown()
