"""The local experiment runner: train what an experiment needs (parents first, each seed's
chain), evaluate, fuse, and upsert results rows; with several seeds, one aggregate row per
evaluation and fusion; with ablations, the paired comparisons into results/comparisons.csv.

A finished run (DONE with the same settings) is skipped and an interrupted one resumes. Every
evaluation saves its per-image posteriors to RUNS/<profile>/scores/ (seed k >= 1:
`<key>__seed<k>.pt`), so re-running reuses them, and fusion, seed aggregates and comparisons
read them. Rows go to results/<table>.csv keyed by (profile, dataset, run, method, test
scales, flip, seed).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import cache
from pathlib import Path

import torch

from vgg.data.datasets import SYNTHETIC_COMPLETE, load_split, require_data_folder
from vgg.data.loaders import default_workers
from vgg.data.synthetic import SynthSpec, generate
from vgg.evaluation.evaluate import EVALUATION_VERSION, average_results, evaluate, provenance_row
from vgg.evaluation.metrics import interval_fields
from vgg.evaluation.protocols import averaged_parts
from vgg.evaluation.scores import EvalResult, computed_in_bf16, fusion_row, load_scores, save_scores, scores_result
from vgg.nets.complexity import summarize
from vgg.nets.models import VGGSpec
from vgg.nets.trained import file_sha256, load_net
from vgg.recipe.profiles import Profile, get_profile
from vgg.runtime import precision as arithmetic
from vgg.runtime.checkpoint import CHECKPOINT_NAME, read_done
from vgg.runtime.stop_signals import EXIT_BAD_INPUT
from vgg.suite.comparisons import SeedErrors, aggregate_row, comparison_rows, load_errors, upsert_comparisons
from vgg.suite.concurrent_training import Job, concurrent_jobs, console_tail, run_jobs, start_job, threads_per_job
from vgg.suite.curves import curve_rows, write_curves
from vgg.suite.localisation_runs import LocalisationRunner
from vgg.suite.transfer_runs import TransferRunner
from vgg.suite.plan import Entry, EvalSpec, Experiment, FusionSpec, RunSpec, load_catalog, plan_runs, seeded_id
from vgg.suite.results_csv import drop_other_seeds, upsert_rows
from vgg.suite.slurm import submit
from vgg.suite.status import SuiteStatus
from vgg.training.run_config import TrainConfig, train_command
from vgg.training.run_state import recorded_precision
from vgg.training.starting_weights import PARENT_PREFIX
from vgg.training.train import train


CONSOLE_NAME = "console.log"
"""A run trained in a child process: what it printed (its train.log has the epochs)."""


READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class ExperimentRunner:
    """Runs experiments for one profile and dataset: trains, evaluates, writes results rows."""

    def __init__(
        self,
        profile: str = "smoke",
        data: str | None = None,
        runs_root: Path | str = "runs",
        results_dir: Path | str = "results",
        gpus: int = 0,
        launch: str = "local",
        workers: int | None = None,
        device: str = "auto",
        slurm_args: str = "",
        progress: bool = True,
        log: Callable[[str], None] = print,
        seeds: int = 1,
        precision: str | None = None,
        jobs: int | None = 1,
        tensorboard: bool = False,
        transfer_roots: dict[str, str] | None = None,
        weights_dir: Path | str | None = None,
    ):
        if launch not in ("local", "slurm"):
            raise ValueError(f"LAUNCH must be local or slurm, got {launch!r}")
        if seeds < 1:
            raise ValueError(f"SEEDS must be at least 1, got {seeds}")
        self.profile: Profile = get_profile(profile)
        self.data = str(Path(data or self.profile.data)) if (data or self.profile.data) else ""  # "" is an error where a run needs it
        self.runs_root, self.results_dir = Path(runs_root), Path(results_dir)
        self.gpus, self.launch, self.workers, self.device = gpus, launch, workers, device
        self.slurm_args, self.progress, self.log, self.seeds, self.tensorboard = slurm_args, progress, log, seeds, tensorboard
        self.precision = precision or self.profile.eval_precision  # the test protocols' arithmetic (auto: decided where they run)
        on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        self.jobs = concurrent_jobs(jobs, on_cpu, gpus)  # runs training at once (None: 2 on a CPU, 1 on GPUs)
        self.catalog = load_catalog()
        self.transfer_roots = dict(transfer_roots or {})  # Appendix B's dataset roots by name (VOC2007=DIR, ...)
        self.weights_dir = weights_dir  # the paper profile's transfer nets: a folder of torchvision's vgg16/vgg19 files

    @property
    def protocol_device(self) -> torch.device:
        """Where the appendices' protocols (boxes, descriptors) run: the GPU when there is one and --device allows it."""
        return torch.device("cuda" if torch.cuda.is_available() and self.device != "cpu" else "cpu")

    @property
    def loader_workers(self) -> int:
        """Loader processes decoding the images a protocol reads: --workers, else one per CPU (`default_workers`)."""
        return self.workers if self.workers is not None else default_workers()

    # ----- paths --------------------------------------------------------------------
    @property
    def profile_dir(self) -> Path:
        return self.runs_root / self.profile.name

    def run_dir(self, run_id: str) -> Path:
        """RUNS/<profile>/<run id> (a seeded id for seeds >= 1: `<run>-seed<k>`)."""
        return self.profile_dir / run_id

    def scores_path(self, spec: EvalSpec, seed: int = 0) -> Path:
        """Where an evaluation of seed `seed`'s run keeps its per-image posteriors."""
        return self.profile_dir / "scores" / (f"{spec.key}.pt" if seed == 0 else f"{spec.key}__seed{seed}.pt")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One runner per runs folder and profile: a second is refused, a killed one frees the lock. A
        read-only runs folder (an archive of finished runs) takes no lock: nothing can be written
        there, so its finished runs and current score files can be reported into another --results."""
        path = self.profile_dir / ".lock"
        try:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+")
        except OSError as error:
            if error.errno not in READ_ONLY_ERRNOS:
                raise
            self.log(f"{self.profile_dir} is read-only: its finished runs and score files are read; a run to train or an "
                     "evaluation to compute there will fail")
            yield
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ValueError(
                f"another experiment runner (pid {holder}) is using {self.profile_dir}; wait for it to finish "
                f"(runs are shared, so it may be training what you need), or use another RUNS folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    # ----- the pieces ---------------------------------------------------------------
    def ensure_data(self) -> None:
        """Generate the synthetic dataset when the profile's default is asked for and absent (a folder
        holding one of other parameters, from an older version, is an error that says to remove it)."""
        if self.data != self.profile.data or not self.profile.synthetic:
            return

        if not (Path(self.data) / SYNTHETIC_COMPLETE).exists():
            self.log(f"generating the synthetic dataset into {self.data}")
        generate(Path(self.data), SynthSpec(**self.profile.synthetic))

    def train_config(self, spec: RunSpec) -> TrainConfig:
        """The TrainConfig of a (seeded) run: its seed, and init from its parent's folder of the same seed."""
        init = spec.init if spec.parent is None else f"{PARENT_PREFIX}{self.run_dir(spec.parent)}"  # "random" is TrainConfig's None
        return TrainConfig(
            config=spec.config,
            train_scale=spec.train_scale,
            data=self.data,
            profile=self.profile.name,
            init=init,
            seed=spec.seed,
            freeze=spec.freeze,
            lrn_alpha=spec.lrn_alpha,
            regression=spec.regression,
            workers=self.workers,
            device=self.device,
            progress=self.progress,
            tensorboard=self.tensorboard,
        )

    def is_done(self, spec: RunSpec) -> dict | None:
        """The run's final metrics if it finished with the settings it would train with now."""
        done = read_done(self.run_dir(spec.id))
        if done is None:
            return None
        return done if done.get("run_hash") == recorded_precision(self.train_config(spec), done).run_hash() else None

    def train(self, spec: RunSpec) -> dict:
        """Train (or resume, or skip when finished) one run."""
        cfg = self.train_config(spec)
        done = self.is_done(spec)
        if done is not None:
            self.log(f"[{spec.id}] finished already: val top-1 {done['val_top1_err']}%, top-5 {done['val_top5_err']}%")
            return done
        self.log(f"[{spec.id}] training VGG-{spec.config} at S={spec.train_scale} (init: {spec.init})")
        if self.gpus > 1:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.gpus}", *train_command(cfg, self.run_dir(spec.id))[1:]]
            result = subprocess.run(command)
            if result.returncode != 0:
                raise ValueError(f"training {spec.id} failed (exit {result.returncode}); see {self.run_dir(spec.id) / 'train.log'}")
            return read_done(self.run_dir(spec.id))
        return train(cfg, self.run_dir(spec.id))

    def train_all(self, runs: list[RunSpec]) -> None:
        """Train (or resume, or skip) `runs`, parents first: in this process one at a time, or with
        `jobs` > 1 up to that many at once in child processes (`vgg.suite.concurrent_training`)."""
        reached = itertools.count(1)  # "run k of n": in the order runs are reached, done ones too
        if self.jobs <= 1:
            for spec in runs:
                self.announce(spec, runs, next(reached))
                self.train(spec)
            return
        threads = threads_per_job(self.jobs)
        # decided once, here, before any run loads the CPU: each child's own `auto` probe would
        # measure beside the other runs and could choose otherwise
        precision = arithmetic.resolve("auto", "cpu")

        def start(spec: RunSpec) -> Job | None:
            self.announce(spec, runs, next(reached))
            done = self.is_done(spec)
            if done is not None:
                self.log(f"[{spec.id}] finished already: val top-1 {done['val_top1_err']}%, top-5 {done['val_top5_err']}%")
                return None
            cfg = replace(self.train_config(spec), progress=False)
            if not (self.run_dir(spec.id) / CHECKPOINT_NAME).exists():  # a started run resumes in the precision it recorded
                cfg = replace(cfg, precision=precision)
            self.log(f"[{spec.id}] training VGG-{spec.config} at S={spec.train_scale} (init: {spec.init}) in a process of {threads} "
                     f"thread(s), {self.jobs} runs at once; its log: {self.run_dir(spec.id) / 'train.log'}")
            return start_job(spec, train_command(cfg, self.run_dir(spec.id)), self.run_dir(spec.id) / CONSOLE_NAME, threads)

        def finished(job: Job) -> None:
            done = read_done(self.run_dir(job.spec.id))
            last = console_tail(job, 1)
            if job.process.returncode == EXIT_BAD_INPUT and last.startswith("error: "):  # its one line says what to do
                raise ValueError(last.removeprefix("error: "))
            if job.process.returncode != 0 or done is None:
                raise ValueError(f"training {job.spec.id} failed (exit {job.process.returncode}); its last lines:\n{console_tail(job)}")
            self.log(f"[{job.spec.id}] finished in {time.monotonic() - job.started:.0f} s: val top-1 {done['val_top1_err']}%, top-5 {done['val_top5_err']}%")

        run_jobs(runs, self.jobs, start, finished, cost=self.training_cost)

    def announce(self, spec: RunSpec, runs: list[RunSpec], number: int) -> None:
        """The 'run k of n' line before a run that is not finished, with its estimated time
        (`vgg.suite.status`: from the runs measured so far) and the training left in all."""
        if read_done(self.run_dir(spec.id)) is None:
            self.log(SuiteStatus(self, [], runs=runs).header(spec, number))

    def training_cost(self, spec: RunSpec) -> float:
        """A run's relative training time: its net's multiply-adds per image times its length
        (a fine-tune, from a net of its own configuration, is shorter)."""
        parent = None if spec.parent is None else self.catalog.get(spec.parent.removesuffix(f"-seed{spec.seed}") if spec.seed else spec.parent)
        fine_tune = parent is not None and parent.config == spec.config
        macs = summarize(VGGSpec(config=spec.config, crop=self.profile.crop, width=self.profile.width)).macs
        return macs * self.profile.epoch_limit(fine_tune, 1, spec.regression != "none")

    def training_summary(self, run_id: str) -> dict:
        """How a finished run trained, for its results rows (the report's training section): epochs,
        steps, its length as a fraction of the paper's 370K iterations of 256 images, the epochs at
        which the rate dropped ("17*": forced by a drop deadline), the final rate, the last epoch's
        train loss, and what stopped it."""
        done = read_done(self.run_dir(run_id)) or {}
        fields = ("epochs", "steps", "paper_length_ratio", "final_lr", "train_loss", "stopped")
        summary = {name: done[name] for name in fields if name in done}
        if "drop_epochs" in done:
            forced = set(done.get("deadline_drop_epochs", []))
            summary["drop_epochs"] = "|".join(f"{epoch}*" if epoch in forced else str(epoch) for epoch in done["drop_epochs"])
        return summary

    def evaluate(self, spec: EvalSpec, seed: int = 0) -> dict:
        """The results row of an evaluation of seed `seed`'s run, from its score file when that is current."""
        path = self.scores_path(spec, seed)
        checkpoint = self.run_dir(seeded_id(spec.run, seed)) / CHECKPOINT_NAME
        identity = {"run": spec.run, "seed": seed, **self.training_summary(seeded_id(spec.run, seed))}
        if path.exists():
            scores = load_scores(path)
            provenance = scores["provenance"]
            current = (
                provenance.get("checkpoint_sha256") == file_sha256(checkpoint) and provenance.get("dataset") == self.data
                and provenance.get("evaluation_version") == str(EVALUATION_VERSION)
            )
            if current and not (self.precision == "fp32" and computed_in_bf16(provenance)):  # fp32 scores serve a bf16 request
                intervals = {} if "top1_err_lo" in provenance else interval_fields(scores["posteriors"], scores["labels"])
                return {**provenance, **intervals, **identity}
        parts = [replace(spec, method=method, scales=scales, label="", paper_row="") for method, scales in averaged_parts(spec.method, spec.scales)]
        if parts:  # each part evaluated once into its own score file, whichever tables ask for it
            result = average_results([self._part_result(part, seed) for part in parts])
            self.log(f"[{seeded_id(spec.run, seed)}] {spec.method} at Q={spec.test_scales}: the average of {', '.join(p.key for p in parts)}")
        elif self.gpus > 1:
            self._evaluate_by_torchrun(spec, seed, checkpoint, path)  # it writes the score file
            return {**load_scores(path)["provenance"], **identity}
        net, images = load_net(checkpoint=checkpoint), load_split(self.data, "val")
        if not parts:
            self.log(f"[{seeded_id(spec.run, seed)}] evaluating: {spec.method} at Q={spec.test_scales}{' with flips' if spec.flip else ''}")
            result = evaluate(net, images, spec.method, list(spec.scales), spec.flip, workers=self.workers, precision=self.precision)
        row = {**provenance_row(net, self.data, spec.method, list(spec.scales), spec.flip, "after-average", result, len(images)), **identity}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_scores(path, result, images, row)
        return row

    def _part_result(self, part: EvalSpec, seed: int) -> EvalResult:
        """The posteriors of a part of an averaged evaluation, from its score file (evaluated first where not current)."""
        self.evaluate(part, seed)
        return scores_result(load_scores(self.scores_path(part, seed)))

    def _evaluate_by_torchrun(self, spec: EvalSpec, seed: int, checkpoint: Path, path: Path) -> None:
        """Evaluate `spec` on several GPUs (torchrun) into its score file."""
        self.log(f"[{seeded_id(spec.run, seed)}] evaluating: {spec.method} at Q={spec.test_scales}{' with flips' if spec.flip else ''}")
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.gpus}", "-m", "vgg", "evaluate",
            "--checkpoint", str(checkpoint), "--data", self.data, "--method", spec.method, "--scales", ",".join(map(str, spec.scales)),
            "--save-scores", str(path), "--precision", self.precision, *([] if spec.flip else ["--no-flip"]),
        ]
        if subprocess.run(command).returncode != 0:
            raise ValueError(f"evaluating {spec.key} failed")

    def run_all(self, experiments: list[Experiment]) -> list[dict]:
        """Run several experiments in turn (`vgg run table3 table4 ...`)."""
        return [row for experiment in experiments for row in self.run(experiment)]

    def fuse(self, fusion: FusionSpec, seed: int = 0) -> dict:
        """The results row of a fusion of seed `seed`'s evaluations of its members."""
        for member in fusion.members:
            self.evaluate(member, seed)
        row = fusion_row([self.scores_path(member, seed) for member in fusion.members])
        return {**row, "label": fusion.label, "run": fusion.run, "seed": seed}

    def errors(self, entry: Entry) -> SeedErrors:
        """An evaluation's or fusion's per-image errors over the runner's seeds, from the score files."""
        members = entry.members if isinstance(entry, FusionSpec) else (entry,)
        return load_errors([[self.scores_path(member, seed) for member in members] for seed in range(self.seeds)])

    # ----- the whole experiment --------------------------------------------------------
    def run(self, experiment: Experiment) -> list[dict]:
        """Train what is missing (parents first), evaluate, and upsert rows into results/<name>.csv
        (and the ablations' paired comparisons into results/comparisons.csv)."""
        with self.lock():
            runs = plan_runs(experiment, self.catalog, self.seeds, self.profile.name)
            if runs or experiment.all_evaluations() or experiment.localisations:
                if not self.data:
                    raise ValueError(f"the {self.profile.name} profile has no default dataset: pass --data DIR (make ... DATA=DIR)")
                self.ensure_data()
                require_data_folder(self.data)
            if self.launch == "slurm":
                submit(self, experiment, runs)
                return []
            self.train_all(runs)
            results = self.results_dir / f"{experiment.name}.csv"
            entries: list[Entry] = [*experiment.all_evaluations(), *experiment.all_fusions()]
            by_entry: dict[int, list[dict]] = {i: [] for i in range(len(entries))}
            for seed in range(self.seeds):
                for i, entry in enumerate(entries):
                    if isinstance(entry, FusionSpec):
                        row = self.fuse(entry, seed)
                    else:
                        row = {**self.evaluate(entry, seed), "label": entry.label}
                    upsert_rows(results, [row])
                    by_entry[i].append(row)
            rows = [row for seed_rows in by_entry.values() for row in seed_rows]
            errors = cache(self.errors)
            if self.seeds > 1:
                aggregates = [aggregate_row(by_entry[i], errors(entry)) for i, entry in enumerate(entries)]
                upsert_rows(results, aggregates)
                rows += aggregates
            if experiment.localisations:
                rows += LocalisationRunner(self, experiment).run(results)
            drop_other_seeds(results, rows, self.seeds)
            if experiment.transfer:
                rows += TransferRunner(self, experiment).run(results)
            curves = [row for run in runs for row in curve_rows(run, self.run_dir(run.id), self.profile.name, self.data)]
            if curves:
                write_curves(self.results_dir, curves)
            self.log(f"{experiment.name}: {len(rows)} result rows in {results}")
            if experiment.ablations:
                compared = comparison_rows(experiment, errors, {"profile": self.profile.name, "dataset": self.data}, self.catalog)
                path = upsert_comparisons(self.results_dir, compared)
                self.log(f"{experiment.name}: {len(compared)} paired comparisons in {path}")
            return rows
