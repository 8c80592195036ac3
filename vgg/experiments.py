"""Experiments as data: expand `experiments/<table>.toml` into training runs (a DAG through
their init parents) and evaluations, run what is missing, and upsert results rows.

`experiments/runs.toml` is the one catalogue of training runs; table files name the runs
they evaluate. Each run trains once per profile into RUNS/<profile>/<run id>, whatever
tables need it; a finished run (DONE with the same settings) is skipped and an interrupted
one resumes. Every evaluation saves its per-image posteriors to
RUNS/<profile>/scores/, so re-running reuses them (and fusion needs them); rows go to
results/<table>.csv keyed by (profile, dataset, run, method, test scales, flip).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vgg.checkpoint import CHECKPOINT_NAME, read_done
from vgg.configs import get_config
from vgg.profiles import PROFILES_FILE, Profile, get_profile, tomllib
from vgg.results import upsert_rows
from vgg.transforms import ScaleRange

EXPERIMENTS_DIR = PROFILES_FILE.parent
RUNS_FILE = EXPERIMENTS_DIR / "runs.toml"
TABLES = ("table3", "table4", "table5", "table6", "table7", "ablations")
RANDOM_INITS = {"random": None, "gaussian": "paper", "glorot": "glorot"}
SLURM_CPUS_PER_GPU = 8
"""Default #SBATCH --cpus-per-task (loader workers per GPU); SLURM_ARGS can override it."""
SLURM_JOB_FILE = "slurm-job"
"""init keywords of runs.toml -> TrainConfig.init (None: the profile's random init)."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of the catalogue."""

    id: str
    config: str
    train_scale: str
    init: str

    @property
    def parent(self) -> str | None:
        return None if self.init in RANDOM_INITS else self.init

    @property
    def scale(self) -> ScaleRange:
        return ScaleRange.parse(self.train_scale)


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation: a run, a method, test scales in paper units, flips."""

    run: str
    method: str
    scales: tuple[int, ...]
    flip: bool = True
    label: str = ""
    paper_row: str = ""

    @property
    def key(self) -> str:
        """A file-name-safe identity, for the score file."""
        return f"{self.run}__{self.method}__{'-'.join(map(str, self.scales))}__{'flip' if self.flip else 'noflip'}"

    @property
    def test_scales(self) -> str:
        return "|".join(map(str, self.scales))


@dataclass(frozen=True)
class FusionSpec:
    """Posteriors of several evaluations averaged (Table 6)."""

    label: str
    members: tuple[EvalSpec, ...]
    method: str
    paper_row: str = ""

    @property
    def run(self) -> str:
        return "+".join(member.run for member in self.members)


@dataclass(frozen=True)
class AblationSpec:
    name: str
    question: str
    paper: str
    evaluations: tuple[EvalSpec, ...]
    paper_top1_difference: float | None = None


@dataclass
class Experiment:
    name: str
    title: str
    description: str
    paper_table: int | None
    evaluations: list[EvalSpec] = field(default_factory=list)
    fusions: list[FusionSpec] = field(default_factory=list)
    ablations: list[AblationSpec] = field(default_factory=list)

    def all_evaluations(self) -> list[EvalSpec]:
        """Every evaluation this experiment needs (fusion members and ablation entries too), once each."""
        found: dict[str, EvalSpec] = {}
        for spec in [
            *self.evaluations,
            *(m for fusion in self.fusions for m in fusion.members),
            *(e for ablation in self.ablations for e in ablation.evaluations),
        ]:
            found.setdefault(spec.key, spec)
        return list(found.values())


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"experiment file {path} does not exist; known: {', '.join(TABLES)} in {EXPERIMENTS_DIR}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path} is not valid TOML: {error}") from None


def load_catalog(path: Path = RUNS_FILE) -> dict[str, RunSpec]:
    """The training runs of runs.toml, checked: known configurations, scales and parents, no cycles."""
    catalog = {}
    for run_id, fields in _read_toml(path).items():
        spec = RunSpec(run_id, fields["config"], str(fields["train_scale"]), fields.get("init", "random"))
        get_config(spec.config)
        spec.scale  # noqa: B018  (validates the scale)
        catalog[run_id] = spec
    for spec in catalog.values():
        if spec.parent is not None and spec.parent not in catalog:
            raise ValueError(f"{path}: run {spec.id} starts from {spec.parent!r}, which is neither a run nor one of {', '.join(RANDOM_INITS)}")
        seen, current = {spec.id}, spec
        while current.parent is not None:
            if current.parent in seen:
                raise ValueError(f"{path}: the init chain of {spec.id} loops through {current.parent}")
            seen.add(current.parent)
            current = catalog[current.parent]
    return catalog


def resolve_scales(kind, run: RunSpec) -> tuple[int, ...]:
    """Test scales in paper units: "single" and "multi" are the paper's sets for the run's training scale."""
    if kind == "single":
        return (run.scale.single_test_scale,)
    if kind == "multi":
        return run.scale.multi_test_scales
    if isinstance(kind, list) and kind and all(isinstance(q, int) for q in kind):
        return tuple(kind)
    raise ValueError(f"scales must be \"single\", \"multi\" or a list of integers, got {kind!r}")


def _eval_spec(entry: dict, defaults: dict, catalog: dict[str, RunSpec], where: str) -> EvalSpec:
    fields = {**defaults, **entry}
    run_id = fields.get("run")
    if run_id not in catalog:
        raise ValueError(f"{where}: unknown run {run_id!r}; runs are defined in {RUNS_FILE}")
    from vgg.evaluate import METHODS

    method = fields.get("method", "dense")
    if method not in METHODS:
        raise ValueError(f"{where}: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return EvalSpec(
        run=run_id,
        method=method,
        scales=resolve_scales(fields.get("scales", "single"), catalog[run_id]),
        flip=bool(fields.get("flip", True)),
        label=fields.get("label", ""),
        paper_row=fields.get("paper_row", ""),
    )


def load_experiment(name_or_path: str | Path, catalog: dict[str, RunSpec] | None = None) -> Experiment:
    """An experiment file by table name ("table3") or path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = EXPERIMENTS_DIR / f"{name_or_path}.toml"
    catalog = catalog if catalog is not None else load_catalog()
    data = _read_toml(path)
    defaults = data.get("defaults", {})
    where = str(path)
    experiment = Experiment(path.stem, data.get("title", path.stem), data.get("description", ""), data.get("paper_table"))
    experiment.evaluations = [_eval_spec(entry, defaults, catalog, where) for entry in data.get("evaluation", [])]
    for entry in data.get("fusion", []):
        fields = {**defaults, **entry}
        members = tuple(_eval_spec({**fields, "run": run_id, "label": "", "paper_row": ""}, {}, catalog, where) for run_id in fields["runs"])
        if len(members) < 2:
            raise ValueError(f"{where}: fusion {fields.get('label')!r} needs at least two runs")
        experiment.fusions.append(FusionSpec(fields.get("label", "+".join(fields["runs"])), members, members[0].method, fields.get("paper_row", "")))
    for entry in data.get("ablation", []):
        evaluations = tuple(_eval_spec(e, defaults, catalog, where) for e in entry["evaluation"])
        experiment.ablations.append(
            AblationSpec(entry["name"], entry.get("question", ""), entry.get("paper", ""), evaluations, entry.get("paper_top1_difference"))
        )
    return experiment


def plan_runs(experiment: Experiment, catalog: dict[str, RunSpec]) -> list[RunSpec]:
    """The training runs the experiment needs, parents included, parents first."""
    ordered: list[RunSpec] = []

    def visit(run_id: str) -> None:
        spec = catalog[run_id]
        if spec.parent is not None:
            visit(spec.parent)
        if spec not in ordered:
            ordered.append(spec)

    for evaluation in experiment.all_evaluations():
        visit(evaluation.run)
    return ordered


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
        log=print,
    ):
        if launch not in ("local", "slurm"):
            raise ValueError(f"LAUNCH must be local or slurm, got {launch!r}")
        self.profile: Profile = get_profile(profile)
        self.data = str(Path(data or self.profile.data)) if (data or self.profile.data) else ""
        if not self.data:
            raise ValueError(f"the {profile} profile has no default dataset: pass --data DIR (make ... DATA=DIR)")
        self.runs_root, self.results_dir = Path(runs_root), Path(results_dir)
        self.gpus, self.launch, self.workers, self.device = gpus, launch, workers, device
        self.slurm_args, self.progress, self.log = slurm_args, progress, log
        self.catalog = load_catalog()

    # ----- paths --------------------------------------------------------------------
    @property
    def profile_dir(self) -> Path:
        return self.runs_root / self.profile.name

    def run_dir(self, run_id: str) -> Path:
        return self.profile_dir / run_id

    def scores_path(self, spec: EvalSpec) -> Path:
        return self.profile_dir / "scores" / f"{spec.key}.pt"

    @contextmanager
    def lock(self):
        """One runner per runs folder and profile: a second is refused, a killed one frees the lock."""
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        path = self.profile_dir / ".lock"
        handle = open(path, "a+")
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
        """Generate the synthetic dataset when the profile's default is asked for and absent."""
        if Path(self.data).exists() or self.data != self.profile.data or not self.profile.synthetic:
            return
        from vgg.synthetic import SynthSpec, generate

        self.log(f"generating the synthetic dataset into {self.data}")
        generate(Path(self.data), SynthSpec(**self.profile.synthetic))

    def train_config(self, spec: RunSpec):
        from vgg.train import TrainConfig

        init = RANDOM_INITS[spec.init] if spec.parent is None else f"from:{self.run_dir(spec.parent)}"
        return TrainConfig(
            config=spec.config,
            train_scale=spec.train_scale,
            data=self.data,
            profile=self.profile.name,
            init=init,
            workers=self.workers,
            device=self.device,
            progress=self.progress,
        )

    def train(self, spec: RunSpec) -> dict:
        from vgg.train import train, train_command

        cfg = self.train_config(spec)
        done = read_done(self.run_dir(spec.id))
        if done is not None and done.get("run_hash") == cfg.run_hash():
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

    def evaluate(self, spec: EvalSpec) -> dict:
        """The results row of an evaluation, from its score file when that is current."""
        from vgg.evaluate import load_net, load_scores

        path = self.scores_path(spec)
        checkpoint = self.run_dir(spec.run) / CHECKPOINT_NAME
        net = load_net(checkpoint=checkpoint)
        sha = net.sha256()
        if path.exists():
            provenance = load_scores(path)["provenance"]
            if provenance.get("checkpoint_sha256") == sha and provenance.get("dataset") == self.data:
                return dict(provenance)
        self.log(f"[{spec.run}] evaluating: {spec.method} at Q={spec.test_scales}{' with flips' if spec.flip else ''}")
        if self.gpus > 1:
            command = [
                sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.gpus}", "-m", "vgg", "evaluate",
                "--checkpoint", str(checkpoint), "--data", self.data, "--method", spec.method, "--scales", ",".join(map(str, spec.scales)),
                "--save-scores", str(path), *([] if spec.flip else ["--no-flip"]),
            ]
            if subprocess.run(command).returncode != 0:
                raise ValueError(f"evaluating {spec.key} failed")
            return dict(load_scores(path)["provenance"])
        from vgg.datasets import load_split
        from vgg.evaluate import evaluate, provenance_row, save_scores

        images = load_split(self.data, "val")
        result = evaluate(net, images, spec.method, list(spec.scales), spec.flip, workers=self.workers)
        row = provenance_row(net, self.data, spec.method, list(spec.scales), spec.flip, "after-average", result, len(images))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_scores(path, result, images, row)
        return row

    def fuse(self, fusion: FusionSpec) -> dict:
        from vgg.evaluate import fusion_row

        paths = []
        for member in fusion.members:
            self.evaluate(member)
            paths.append(self.scores_path(member))
        return {**fusion_row(paths), "label": fusion.label}

    # ----- the whole experiment --------------------------------------------------------
    def run(self, experiment: Experiment) -> list[dict]:
        """Train what is missing (parents first), evaluate, and upsert rows into results/<name>.csv."""
        with self.lock():
            self.ensure_data()
            runs = plan_runs(experiment, self.catalog)
            if self.launch == "slurm":
                self.submit_slurm(experiment, runs)
                return []
            for spec in runs:
                self.train(spec)
            results = self.results_dir / f"{experiment.name}.csv"
            rows = []
            for spec in experiment.all_evaluations():
                row = {**self.evaluate(spec), "label": spec.label}
                upsert_rows(results, [row])
                rows.append(row)
            for fusion in experiment.fusions:
                row = self.fuse(fusion)
                upsert_rows(results, [row])
                rows.append(row)
            self.log(f"{experiment.name}: {len(rows)} result rows in {results}")
            return rows

    # ----- SLURM --------------------------------------------------------------------
    def slurm_script(self, body: str, name: str, log_dir: Path) -> str:
        from vgg.train import EXIT_PREEMPTED

        gpus = max(self.gpus, 1)
        return "\n".join(
            [
                "#!/bin/bash",
                f"#SBATCH --job-name=vgg-{self.profile.name}-{name}",
                f"#SBATCH --output={log_dir}/slurm-%j.out",
                f"#SBATCH --ntasks-per-node={gpus}",
                f"#SBATCH --gpus-per-node={gpus}",
                f"#SBATCH --cpus-per-task={SLURM_CPUS_PER_GPU}",
                "#SBATCH --signal=USR1@120",
                "#SBATCH --requeue",
                *(f"#SBATCH {arg}" for arg in shlex.split(self.slurm_args)),
                "export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)",
                "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # jobs sharing a node must not share a port",
                f"cd {shlex.quote(str(Path.cwd()))}",
                body,
                "status=$?",
                f"if [ $status -eq {EXIT_PREEMPTED} ]; then scontrol requeue \"$SLURM_JOB_ID\"; fi",
                "exit $status",
                "",
            ]
        )

    def submit_slurm(self, experiment: Experiment, runs: list[RunSpec]) -> dict[str, str]:
        """Submit each unfinished run as a job that waits (afterok) for its parent's, then one evaluation job."""
        from vgg.train import train_command

        jobs: dict[str, str] = {}
        for spec in runs:
            cfg = self.train_config(spec)
            done = read_done(self.run_dir(spec.id))
            if done is not None and done.get("run_hash") == cfg.run_hash():
                continue
            run_dir = self.run_dir(spec.id)
            run_dir.mkdir(parents=True, exist_ok=True)
            queued = _queued_job(run_dir / SLURM_JOB_FILE)
            if queued is not None:  # submitted by an earlier `make ... LAUNCH=slurm` and still waiting or running
                jobs[spec.id] = queued
                self.log(f"[{spec.id}] already queued as job {queued}")
                continue
            body = "srun " + shlex.join(train_command(cfg, run_dir))
            script = run_dir / "slurm.sh"
            script.write_text(self.slurm_script(body, spec.id, run_dir))
            parents = [jobs[spec.parent]] if spec.parent in jobs else []
            jobs[spec.id] = _sbatch(script, parents)
            (run_dir / SLURM_JOB_FILE).write_text(jobs[spec.id] + "\n")
            self.log(f"[{spec.id}] submitted as job {jobs[spec.id]}" + (f" after {parents[0]}" if parents else ""))
        body = shlex.join(
            [sys.executable, "-m", "vgg", "run", experiment.name, "--profile", self.profile.name, "--data", self.data, "--runs", str(self.runs_root), "--results", str(self.results_dir)]
        )
        script = self.profile_dir / f"evaluate-{experiment.name}.sh"
        script.write_text(self.slurm_script(body, f"evaluate-{experiment.name}", self.profile_dir))
        jobs["evaluate"] = _sbatch(script, list(jobs.values()))
        self.log(f"[{experiment.name}] evaluation and results submitted as job {jobs['evaluate']}")
        return jobs


def _queued_job(record: Path) -> str | None:
    """The job id recorded in `record` if SLURM still knows it as pending or running."""
    if not record.exists():
        return None
    job = record.read_text().strip()
    try:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    except FileNotFoundError:
        return None
    return job if state in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "SUSPENDED") else None


def _sbatch(script: Path, after: list[str]) -> str:
    command = ["sbatch", "--parsable"]
    if after:
        command.append("--dependency=afterok:" + ":".join(after))
    try:
        result = subprocess.run([*command, str(script)], capture_output=True, text=True)
    except FileNotFoundError:
        raise ValueError("LAUNCH=slurm needs sbatch on the PATH (run it on the cluster's login node)") from None
    if result.returncode != 0:
        raise ValueError(f"sbatch refused {script}: {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]
