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
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vgg import distributed
from vgg.checkpoint import CHECKPOINT_NAME, git_commit, load_checkpoint, read_done, save_checkpoint, write_done
from vgg.datasets import ImageList, load_split
from vgg.initialization import init_from_a
from vgg.loaders import EpochSampler, ImageDataset, default_workers, iterate_epoch, make_loader
from vgg.metrics import append_metrics, error_percent, plot_curves, topk_correct, truncate_metrics
from vgg.configs import has_lrn
from vgg.models import FREEZE_CHOICES, VGG, VGGSpec
from vgg.normalization import Normalization, get_normalization
from vgg.profiles import PAPER_INIT_STD, Profile, get_profile
from vgg.identity import differences, digest, recipe, run_identity
from vgg.schedule import PlateauSchedule, drop_deadline_epochs, drop_earliest_epochs
from vgg.torchvision_compat import clean_state_dict
from vgg.transforms import CentreCropTransform, ScaleRange, TrainTransform

EXIT_PREEMPTED = 75
"""Exit status after a SIGTERM/SIGUSR1 checkpoint (EX_TEMPFAIL): requeue the job and run the same command."""
PAPER_LR = 1e-2
PAPER_ITERATIONS, PAPER_BATCH = 370_000, 256
"""Sect. 3.1: training stopped after 370K iterations (74 epochs) of batches of 256."""
CHECKPOINT_FORMAT = 1
PLOT_EVERY_EPOCH_AFTER_S = 30.0
A_CONFIGS = ("A", "A-LRN")


_LATER_FIELDS = ("weights", "freeze", "head_lr_mult")
_RECIPE_FIELDS = ("lrn_alpha",)  # model constants with a default: part of the identity's recipe, not of the settings
CHECKPOINT_SPEC = "checkpoint:"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops, keeping the last good checkpoint."""


class Preempted(Exception):
    """SIGTERM or SIGUSR1 arrived; a checkpoint was written at the step boundary."""


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Fields above `workers` define the run (and its hash); the rest only how it runs."""

    config: str
    train_scale: str
    data: str
    profile: str = "smoke"
    init: str | None = None  # paper | glorot | from:CHECKPOINT; None: the profile's random init
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dropout: float | None = None  # None: the profile's (paper 0.5)
    seed: int = 0
    accum: int = 1
    normalization: str = "mean-rgb"
    batch_norm: bool = False
    val_images: int | None = None
    plateau_patience: int | None = None
    weights: str | None = None  # fine-tuning: a weight spec (vgg.weights) or "checkpoint:RUN_DIR"
    freeze: str = "none"  # fine-tuning: "features" trains the classifier only
    head_lr_mult: float = 1.0  # fine-tuning: learning-rate multiplier of the new last layer
    lrn_alpha: float | None = None  # nets with LRN: PyTorch's alpha (None: the model's default, vgg.models.LRN_ALPHA_ALEXNET)
    # how it runs, not what it computes:
    workers: int | None = None
    device: str = "auto"
    compile: bool = False
    checkpoint_minutes: float = 10.0
    checkpoint_steps: int = 0
    skip_bad_images: bool = False
    progress: bool = True

    def settings(self) -> dict:
        """The fields that define what the run computes, as given (paths included; fields added
        after the first runs count only when set, so that earlier runs keep their legacy hash). The
        LRN constant is not among them: the identity's recipe holds its value, given or default."""
        names = [f.name for f in fields(self)]
        defaults = {f.name: f.default for f in fields(self)}
        return {
            name: getattr(self, name)
            for name in names[: names.index("workers")]
            if name not in _RECIPE_FIELDS and (name not in _LATER_FIELDS or getattr(self, name) != defaults[name])
        }

    def identity(self) -> dict:
        """The run's identity (`vgg.identity`): its settings with the dataset and the parent by
        content, and its profile's recipe with the LRN constant it trains with."""
        return run_identity(self.settings(), get_profile(self.profile), self.lrn_alpha)

    def run_hash(self) -> str:
        return digest(self.identity())

    def legacy_hash(self) -> str:
        """The hash of runs from before identity version 2 (settings with paths, no recipe)."""
        return digest(self.settings())


@dataclass
class EpochTotals:
    """Running sums over the current epoch (kept in checkpoints for exact mid-epoch resume)."""

    loss_sum: float = 0.0
    top1: int = 0
    top5: int = 0
    seen: int = 0
    elapsed: float = 0.0


class _PreemptionFlag:
    def __init__(self) -> None:
        self.raised = False
        self._previous = {}

    def __enter__(self) -> _PreemptionFlag:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _log_to(run_dir: Path, enabled: bool):
    def log(message: str) -> None:
        if not enabled:
            return
        print(message, flush=True)
        with open(run_dir / "train.log", "a") as handle:
            handle.write(message + "\n")

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
        head = "classifier.6."
        state = {key: value for key, value in source.model.state_dict().items() if not key.startswith(head)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(key.startswith(head) for key in missing), (missing, unexpected)
        # The new layer starts small (N(0, 0.01^2), as torchvision and the paper init FC layers): a
        # Glorot-sized head on a trained net's large activations saturates the soft-max at once.
        with torch.no_grad():
            model.classifier[6].weight.normal_(0.0, PAPER_INIT_STD)
            model.classifier[6].bias.zero_()
        trained = "the FC layers only (features frozen)" if self.cfg.freeze == "features" else "every layer"
        self.log(f"fine-tuning VGG-{model.config} from {self.cfg.weights}: every layer but a new {model.spec.num_classes}-way last layer "
                 f"comes from the weights; training {trained}, the new layer at {self.cfg.head_lr_mult:g}x the learning rate")

    def _init_from(self, model: VGG, path: Path, classes: tuple[str, ...]) -> bool:
        """Initialise from a parent run; True when fine-tuning a net of the same configuration."""
        parent_state = load_checkpoint(path)
        if read_done(path if path.is_dir() else path.parent) is None:
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
    def run(self) -> dict:
        cfg, context = self.cfg, self.context
        self.out.mkdir(parents=True, exist_ok=True)
        identity = cfg.identity()
        run_hash = digest(identity)
        checkpoint_path = self.out / CHECKPOINT_NAME
        done = read_done(self.out)
        if done is not None:
            if done.get("run_hash") != run_hash:
                checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
                if not self._adoptable(done.get("run_hash"), checkpoint):
                    changed = differences(done.get("identity", {}), identity) if "identity" in done else "it predates the recorded identity"
                    raise ValueError(f"{self.out} holds a finished run with other settings ({changed}); choose another --out or remove it")
                done = {**done, "run_hash": run_hash, "identity": identity}
                if context.is_main:
                    write_done(self.out, done)
                self.log(f"{self.out}: a run from before identity version 2 with these settings and this recipe, adopted")
            self.log(f"{self.out} is finished already: {done}")
            return done
        checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
        if checkpoint is not None and checkpoint["run_hash"] != run_hash and not self._adoptable(checkpoint["run_hash"], checkpoint):
            stored, current = (checkpoint["identity"], identity) if "identity" in checkpoint else (checkpoint["run"], cfg.settings())
            raise ValueError(f"{checkpoint_path} belongs to a run with other settings ({differences(stored, current)}); choose another --out or remove it")

        train_images, val_images = self._data()
        torch.manual_seed(cfg.seed)  # the random init
        model, lr, self.epochs, fine_tune = self._build_model(train_images.classes, checkpoint)
        schedule = PlateauSchedule(
            lr=lr,
            patience=cfg.plateau_patience or self.profile.plateau_patience,
            threshold=self.profile.plateau_threshold,
            min_stage_epochs=self.profile.plateau_min_epochs,
            chance_accuracy=100.0 / len(train_images.classes),
            near_chance=self.profile.near_chance,
            give_up_epochs=self.profile.give_up_epochs,
            deadlines=drop_deadline_epochs(self.profile.drop_deadlines, self.epochs),
            earliest=drop_earliest_epochs(self.profile.drop_not_before, self.epochs),
            mode=(self.profile.finetune_schedule or self.profile.schedule) if fine_tune else self.profile.schedule,
        )
        if cfg.freeze == "features":
            model.features.requires_grad_(False)
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for _, p in trainable], "lr_mult": 1.0}]
        if cfg.head_lr_mult != 1.0:  # the new last layer in a group of its own
            groups = [
                {"params": [p for name, p in trainable if not name.startswith("classifier.6.")], "lr_mult": 1.0},
                {"params": [p for name, p in trainable if name.startswith("classifier.6.")], "lr_mult": cfg.head_lr_mult},
            ]
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        epoch, step_in_epoch, global_step, totals = 0, 0, 0, EpochTotals()
        if checkpoint is not None:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            schedule.load_state_dict(checkpoint["schedule"])
            epoch, step_in_epoch, global_step = checkpoint["epoch"], checkpoint["step_in_epoch"], checkpoint["global_step"]
            totals = EpochTotals(**checkpoint["epoch_totals"])
            _restore_rng(checkpoint["rng"])
            if context.is_main:
                truncate_metrics(self.out, epoch - 1)
            self.log(f"resuming {self.out} at epoch {epoch}, step {step_in_epoch} of the epoch")

        device = context.device
        memory_format = torch.channels_last
        model = model.to(device, memory_format=memory_format)
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.to(device)
        network: nn.Module = model
        if cfg.compile:
            network = torch.compile(network)
        if context.distributed:
            network = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

        transform = TrainTransform(self.pixel_scale, self.profile.crop)
        dataset = ImageDataset(train_images, transform, seed=cfg.seed, skip_bad_images=cfg.skip_bad_images, cache_decoded=self.profile.cache_decoded)
        sampler = EpochSampler(len(dataset), shuffle=True, seed=cfg.seed, rank=context.rank, world_size=context.world_size)
        workers = cfg.workers if cfg.workers is not None else default_workers(context.local_world_size, device)
        loader = make_loader(dataset, sampler, self.micro_batch, workers, device)
        val_dataset = self._val_batches(val_images)
        steps_per_epoch = len(sampler) // (self.micro_batch * cfg.accum)
        if steps_per_epoch == 0:
            raise ValueError(f"{len(dataset)} training images give no full batch of {self.global_batch}; lower --batch-size")
        self.log(
            f"training VGG-{model.config} ({self.profile.name} profile: crop {self.profile.crop}, width 1/{self.profile.width}) "
            f"at S={self.scale} (pixels {self.pixel_scale}), {self.epochs} epochs max, {steps_per_epoch} steps/epoch of "
            f"{self.global_batch} images ({context.world_size} process(es) x {cfg.accum} x {self.micro_batch}), lr {schedule.lr:g}, "
            f"device {device}, run hash {run_hash}"
        )
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

        def save(epoch_: int, step_: int) -> None:
            if context.is_main:
                state = {
                    "format": CHECKPOINT_FORMAT,
                    "spec": model.spec.to_dict(),
                    "normalization": self.normalization.to_dict(),
                    "classes": list(train_images.classes),
                    "profile": self.profile.to_dict(),
                    "run": cfg.settings(),
                    "identity": identity,
                    "run_hash": run_hash,
                    "train_scale": str(self.scale),
                    "model": clean_state_dict(model.state_dict()),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "epoch": epoch_,
                    "max_epochs": self.epochs,
                    "step_in_epoch": step_,
                    "global_step": global_step,
                    "epoch_totals": asdict(totals),
                    "rng": _rng_state(),
                    "git_commit": git_commit(),
                }
                save_checkpoint(state, checkpoint_path)

        last_save = time.monotonic()
        with _PreemptionFlag() as preemption:
            while epoch < self.epochs and not schedule.finished:
                sampler.set_epoch(epoch, start=step_in_epoch * self.micro_batch * cfg.accum)
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr * group["lr_mult"]
                network.train()
                if cfg.freeze == "features":
                    model.features.eval()  # frozen: batch-norm statistics stay the source's too
                started = time.perf_counter() - totals.elapsed
                progress = self._progress(steps_per_epoch, step_in_epoch, epoch)
                micro_batches = iter(iterate_epoch(loader, log=self.log))
                while step_in_epoch < steps_per_epoch:
                    step_stats = torch.zeros(5, dtype=torch.float64)  # loss sum, top1, top5, seen, non-finite
                    for micro in range(cfg.accum):
                        batch = next(micro_batches).to(device, memory_format)
                        # dropout masks from (seed, step) alone; seeded after fetching the batch, since
                        # creating a loader iterator draws from the global generator
                        torch.manual_seed(_step_seed(cfg.seed, (global_step * cfg.accum + micro) * context.world_size + context.rank))
                        sync = nullcontext() if (micro == cfg.accum - 1 or not context.distributed) else network.no_sync()
                        with sync:
                            with autocast:
                                inputs = self.normalization(batch.images, batch.offsets).contiguous(memory_format=memory_format)
                                logits = network(inputs)
                                loss = F.cross_entropy(logits.float(), batch.labels)
                            (loss / cfg.accum).backward()
                        top1, top5 = topk_correct(logits.detach(), batch.labels)
                        loss_value = float(loss.detach())
                        step_stats += torch.tensor([loss_value * len(batch), top1, top5, len(batch), float(not np.isfinite(loss_value))], dtype=torch.float64)
                    flags = torch.tensor([step_stats[4], float(preemption.raised)], dtype=torch.float64)
                    if context.distributed:
                        flags = distributed.all_reduce_sum(flags)
                        step_stats = distributed.all_reduce_sum(step_stats)
                    if flags[0] > 0:
                        raise NonFiniteLossError(
                            f"the loss became NaN or infinite at step {global_step} (epoch {epoch}, step {step_in_epoch} of it) "
                            f"with learning rate {schedule.lr:g}; training stopped. The last good checkpoint "
                            f"({checkpoint_path}) is kept. VGG without batch norm diverges at high rates (0.1): "
                            f"lower --lr (the paper uses 1e-2 at batch 256)"
                        )
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    step_in_epoch += 1
                    global_step += 1
                    totals.loss_sum += float(step_stats[0])
                    totals.top1 += int(step_stats[1])
                    totals.top5 += int(step_stats[2])
                    totals.seen += int(step_stats[3])
                    totals.elapsed = time.perf_counter() - started
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(loss=f"{totals.loss_sum / max(1, totals.seen):.3f}", img_s=f"{totals.seen / max(totals.elapsed, 1e-9):.0f}")
                    due = (cfg.checkpoint_steps and global_step % cfg.checkpoint_steps == 0) or (
                        time.monotonic() - last_save > cfg.checkpoint_minutes * 60
                    )
                    if flags[1] > 0 or (due and step_in_epoch < steps_per_epoch):
                        save(epoch, step_in_epoch)
                        last_save = time.monotonic()
                        if flags[1] > 0:
                            self.log(f"preempted: checkpoint at epoch {epoch}, step {step_in_epoch}; exit {EXIT_PREEMPTED} (run the same command to resume)")
                            raise Preempted()
                if progress is not None:
                    progress.close()
                del micro_batches
                row = self._end_epoch(network, model, val_dataset, schedule, epoch, global_step, totals, device, memory_format)
                if context.is_main:  # the row first: a kill before the checkpoint leaves a row that resume truncates
                    append_metrics(self.out, row)
                    if row["wall_s"] > PLOT_EVERY_EPOCH_AFTER_S:  # long epochs: keep the curve current
                        plot_curves(self.out, self._curve_title(model))
                epoch, step_in_epoch, totals = epoch + 1, 0, EpochTotals()
                save(epoch, 0)
                last_save = time.monotonic()

        if not context.is_main:
            return {"rank": context.rank, "epochs": epoch, "steps": global_step}
        final = {**self._final_metrics(schedule, epoch, global_step), "run_hash": run_hash, "identity": identity}
        plot_curves(self.out, self._curve_title(model))
        write_done(self.out, final)
        self.log(f"finished: {final}")
        return final

    def _curve_title(self, model: VGG) -> str:
        return f"VGG-{model.config}, S={self.scale}, {self.profile.name} profile"

    def _progress(self, total: int, done: int, epoch: int):
        if not (self.context.is_main and self.cfg.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=done, desc=f"epoch {epoch}", unit="step", mininterval=1.0, file=sys.stderr, leave=False, disable=None)

    @torch.no_grad()
    def _validate(self, model: VGG, dataset: ImageDataset, device: torch.device, memory_format) -> tuple[float, float, int]:
        model.eval()
        if self._val_loader is None:  # built once: its workers persist across epochs
            sampler = EpochSampler(len(dataset), shuffle=False, rank=self.context.rank, world_size=self.context.world_size, pad=False)
            workers = self.cfg.workers if self.cfg.workers is not None else default_workers(self.context.local_world_size, device)
            self._val_loader = make_loader(dataset, sampler, max(1, self.micro_batch * 2), workers=workers, device=device)
        loader = self._val_loader
        counts = torch.zeros(3, dtype=torch.float64)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        for batch in iterate_epoch(loader, log=self.log):
            batch = batch.to(device, memory_format)
            with autocast:
                logits = model(self.normalization(batch.images).contiguous(memory_format=memory_format))
            top1, top5 = topk_correct(logits, batch.labels)
            counts += torch.tensor([top1, top5, len(batch)], dtype=torch.float64)
        counts = distributed.all_reduce_sum(counts)
        total = int(counts[2])
        return error_percent(int(counts[0]), total), error_percent(int(counts[1]), total), total

    def _end_epoch(self, network, model, val_dataset, schedule, epoch, global_step, totals, device, memory_format) -> dict:
        val_top1, val_top5, val_count = self._validate(model, val_dataset, device, memory_format)
        lr_used = schedule.lr
        action = schedule.step(100.0 - val_top1)
        row = {
            "epoch": epoch,
            "step": global_step,
            "lr": lr_used,
            "train_loss": round(totals.loss_sum / max(1, totals.seen), 5),
            "train_top1_err": round(error_percent(totals.top1, totals.seen), 3),
            "train_top5_err": round(error_percent(totals.top5, totals.seen), 3),
            "val_top1_err": round(val_top1, 3),
            "val_top5_err": round(val_top5, 3),
            "images_per_s": round(totals.seen / max(totals.elapsed, 1e-9), 1),
            "wall_s": round(totals.elapsed, 2),
        }
        self.last_row = row
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
            f"epoch {epoch}: train loss {row['train_loss']:.4f}, top-1 err {row['train_top1_err']:.2f}%; "
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


_FLAGS = {"batch_norm": "--batch-norm", "compile": "--compile", "skip_bad_images": "--skip-bad-images"}


def train_command(cfg: TrainConfig, out: Path | str) -> list[str]:
    """The `python -m vgg train` command line of `cfg` (for torchrun and SLURM jobs)."""
    command = [sys.executable, "-m", "vgg", "train", "--out", str(out)]
    for item in fields(cfg):
        value = getattr(cfg, item.name)
        if value == item.default or value is None:
            continue
        if item.name in _FLAGS:
            command.append(_FLAGS[item.name])
        elif item.name == "progress":
            command.append("--no-progress")
        else:
            command.extend([f"--{item.name.replace('_', '-')}", str(value)])
    return command


def train(cfg: TrainConfig, out: Path | str) -> dict:
    """Train (or resume, or skip if finished) the run in `out`; returns its final metrics."""
    try:
        return Trainer(cfg, Path(out)).run()
    finally:
        distributed.teardown()
