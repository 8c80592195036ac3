"""Training several runs of an experiment at once on a CPU, each in a child process with its share of
the cores' threads, parents before the runs that start from them.

Measured on 2 cores at smoke scale: VGG-C trained at 740 images/s beside D (1 thread each), 1,150
alone with 2 threads: 1.3x the images per second together; A beside A-LRN gained nothing (263 and
324 s, 142 and 184 s one after the other with 2 threads).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from vgg.data.loaders import available_cpus
from vgg.runtime.stop_signals import die_with_parent
from vgg.suite.plan import RunSpec

POLL_S = 0.2


@dataclass
class Job:
    """A run training in a child process, its output going to `console`."""

    spec: RunSpec
    process: subprocess.Popen
    console: Path
    started: float


def concurrent_jobs(jobs: int | None, on_cpu: bool, gpus: int) -> int:
    """How many runs train at once: `jobs` when given; otherwise 2 on a CPU of 2 or more cores and
    1 on GPUs (or under torchrun), where one run fills the device."""
    if jobs is not None:
        if jobs < 1:
            raise ValueError(f"JOBS must be at least 1, got {jobs}")
        return jobs
    return 2 if on_cpu and gpus <= 1 and available_cpus() >= 2 else 1


def threads_per_job(jobs: int) -> int:
    """Each child's torch threads: the CPUs this process may use, shared evenly."""
    return max(1, available_cpus() // jobs)


def start_job(spec: RunSpec, command: list[str], console: Path, threads: int) -> Job:
    """Start `command` with `threads` torch threads, its output appended to `console`. The child gets
    SIGTERM if this process dies (so a killed runner leaves no orphan training), which the trainer
    answers like any stop signal: it checkpoints and exits, and the next run resumes it."""
    console.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(console, "a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_terminate_with_parent)
    return Job(spec, process, console, time.monotonic())


def _terminate_with_parent() -> None:
    die_with_parent(signal.SIGTERM)  # not on Linux: a killed runner's children finish on their own


def run_jobs(runs: list[RunSpec], jobs: int, start: Callable[[RunSpec], Job | None], finished: Callable[[Job], None],
             cost: Callable[[RunSpec], float] = lambda spec: 1.0) -> None:
    """Train `runs` (in plan order, parents first), up to `jobs` at once, the runs heading the
    costliest chains first (`cost`: a run's relative training time). `start` starts a run's job
    (None: nothing to train); `finished` takes an ended job and raises if it failed. On any error
    or stop signal the jobs still running are stopped (SIGTERM: each checkpoints) and waited for."""
    pending, running = sorted(runs, key=_costliest_chain_first(runs, cost)), []
    try:
        while pending or running:
            for job in [job for job in running if job.process.poll() is not None]:
                running.remove(job)
                finished(job)
            busy = {spec.id for spec in pending} | {job.spec.id for job in running}
            while len(running) < jobs:
                ready = next((spec for spec in pending if spec.parent not in busy), None)
                if ready is None:
                    break
                pending.remove(ready)
                job = start(ready)
                if job is None:
                    busy.discard(ready.id)
                else:
                    running.append(job)
            if running:
                time.sleep(POLL_S)
            elif pending:
                raise RuntimeError(f"runs waiting for parents that are not planned: {', '.join(spec.id for spec in pending)}")
    finally:
        for job in running:
            if job.process.poll() is None:
                job.process.send_signal(signal.SIGTERM)
        for job in running:
            job.process.wait()


def _costliest_chain_first(runs: list[RunSpec], cost: Callable[[RunSpec], float]) -> Callable[[RunSpec], tuple[float, int]]:
    """A sort key: runs heading the costliest chain of runs that start from them first (critical
    path first: E-256 before B-256, whose net is cheaper and which no run waits for, so that no
    long run is left alone at the end on its share of the cores), plan order among equals. A
    parent sorts before its children: its chain holds theirs."""
    children: dict[str | None, list[RunSpec]] = {}
    for spec in runs:
        children.setdefault(spec.parent, []).append(spec)

    by_id = {spec.id: spec for spec in runs}

    @cache
    def chain(run_id: str) -> float:
        return cost(by_id[run_id]) + max((chain(child.id) for child in children.get(run_id, [])), default=0.0)

    order = {spec.id: position for position, spec in enumerate(runs)}
    return lambda spec: (-chain(spec.id), order[spec.id])


def console_tail(job: Job, lines: int = 15) -> str:
    """The last lines a job printed, for an error message."""
    text = job.console.read_text(errors="replace") if job.console.exists() else ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
