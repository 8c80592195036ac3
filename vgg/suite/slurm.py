"""LAUNCH=slurm: each unfinished training run (of every seed) as an sbatch job that waits
(afterok) for its parent's job, then one job that evaluates and writes the results by running
the experiment again locally once every run is done.

A preempted job checkpoints on SIGUSR1, exits 75 and is requeued; a job id is recorded in the
run folder (`slurm-job`), so submitting again while it is queued does not submit it twice.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vgg.runtime.stop_signals import EXIT_PREEMPTED
from vgg.suite.plan import Experiment, RunSpec
from vgg.training.run_config import train_command

if TYPE_CHECKING:
    from vgg.suite.runner import ExperimentRunner

SLURM_CPUS_PER_GPU = 8
"""Default #SBATCH --cpus-per-task (loader workers per GPU); SLURM_ARGS can override it."""
SLURM_JOB_FILE = "slurm-job"
QUEUED_STATES = ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "SUSPENDED")


def slurm_script(runner: ExperimentRunner, body: str, name: str, log_dir: Path) -> str:
    """An sbatch script running `body` on the runner's GPUs, requeued when preempted."""
    gpus = max(runner.gpus, 1)
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --job-name=vgg-{runner.profile.name}-{name}",
            f"#SBATCH --output={log_dir}/slurm-%j.out",
            f"#SBATCH --ntasks-per-node={gpus}",
            f"#SBATCH --gpus-per-node={gpus}",
            f"#SBATCH --cpus-per-task={SLURM_CPUS_PER_GPU}",
            "#SBATCH --signal=USR1@120",
            "#SBATCH --requeue",
            *(f"#SBATCH {arg}" for arg in shlex.split(runner.slurm_args)),
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


def submit(runner: ExperimentRunner, experiment: Experiment, runs: list[RunSpec]) -> dict[str, str]:
    """Submit each unfinished run as a job that waits (afterok) for its parent's, then one evaluation job.
    `runs` come from `plan_runs` (seeded ids: each seed's chain waits on its own parents). Returns
    the job id of each run id, and of "evaluate"."""
    jobs: dict[str, str] = {}
    for spec in runs:
        if runner.is_done(spec) is not None:
            continue
        run_dir = runner.run_dir(spec.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        queued = _queued_job(run_dir / SLURM_JOB_FILE)
        if queued is not None:  # submitted by an earlier `make ... LAUNCH=slurm` and still waiting or running
            jobs[spec.id] = queued
            runner.log(f"[{spec.id}] already queued as job {queued}")
            continue
        body = "srun " + shlex.join(train_command(runner.train_config(spec), run_dir))
        script = run_dir / "slurm.sh"
        script.write_text(slurm_script(runner, body, spec.id, run_dir))
        parents = [jobs[spec.parent]] if spec.parent in jobs else []
        jobs[spec.id] = _sbatch(script, parents)
        (run_dir / SLURM_JOB_FILE).write_text(jobs[spec.id] + "\n")
        runner.log(f"[{spec.id}] submitted as job {jobs[spec.id]}" + (f" after {parents[0]}" if parents else ""))
    command = [
        sys.executable, "-m", "vgg", "run", experiment.name, "--profile", runner.profile.name, *(["--data", runner.data] if runner.data else []),
        "--runs", str(runner.runs_root), "--results", str(runner.results_dir), "--precision", runner.precision,
    ]
    if runner.seeds > 1:
        command += ["--seeds", str(runner.seeds)]
    for name, root in runner.transfer_roots.items():  # Appendix B's datasets and weights
        command += ["--transfer-data", f"{name}={root}"]
    if runner.weights_dir:
        command += ["--weights-dir", str(runner.weights_dir)]
    script = runner.profile_dir / f"evaluate-{experiment.name}.sh"
    script.write_text(slurm_script(runner, shlex.join(command), f"evaluate-{experiment.name}", runner.profile_dir))
    jobs["evaluate"] = _sbatch(script, list(jobs.values()))
    runner.log(f"[{experiment.name}] evaluation and results submitted as job {jobs['evaluate']}")
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
    return job if state in QUEUED_STATES else None


def _sbatch(script: Path, after: list[str]) -> str:
    """Submit `script` (after the jobs `after` succeed); its job id."""
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
