"""Several runs training at once (vgg.suite.concurrent_training): parents first, at most `jobs` at
once, the longest chains first, and a failure stops the others."""

import signal
import sys
import time

import pytest

from vgg.suite import concurrent_training
from vgg.suite.concurrent_training import concurrent_jobs, run_jobs, start_job
from vgg.suite.plan import RunSpec


def spec(run_id: str, parent: str | None = None) -> RunSpec:
    return RunSpec(run_id, "A", "256", f"from:{parent}" if parent else "random")


@pytest.mark.parametrize("b_cost", [1.0, 10.0])
def test_runs_start_after_their_parents_at_most_jobs_at_once_costliest_chains_first(tmp_path, b_cost):
    runs = [spec("A"), spec("B", "A"), spec("C", "A"), spec("C-384", "C"), spec("C-jit", "C-384"), spec("L")]
    events, live = [], set()

    def start(run):
        live.add(run.id)
        events.append(("start", run.id, len(live)))
        return start_job(run, [sys.executable, "-c", "import time; time.sleep(0.3)"], tmp_path / f"{run.id}.log", threads=1)

    def finished(job):
        live.discard(job.spec.id)
        events.append(("end", job.spec.id, len(live)))

    run_jobs(runs, 2, start, finished, cost=lambda run: b_cost if run.id == "B" else 1.0)
    order = [(kind, run) for kind, run, _ in events]
    assert max(count for _, _, count in events) == 2
    for child, parent in (("B", "A"), ("C", "A"), ("C-384", "C"), ("C-jit", "C-384")):
        assert order.index(("start", child)) > order.index(("end", parent))
    c_first = order.index(("start", "C")) < order.index(("start", "B"))
    assert c_first == (b_cost < 3)  # C heads a chain of 3 runs of cost 1, B is alone
    assert sorted(run for kind, run in order if kind == "end") == sorted(run.id for run in runs)


def test_a_failed_run_stops_the_runs_still_training(tmp_path):
    started = {}

    def start(run):
        code = "import sys; sys.exit(3)" if run.id == "bad" else "import time; time.sleep(60)"
        job = start_job(run, [sys.executable, "-c", code], tmp_path / f"{run.id}.log", threads=1)
        started[run.id] = job
        return job

    def finished(job):
        if job.process.returncode != 0:
            raise ValueError(f"training {job.spec.id} failed")

    began = time.monotonic()
    with pytest.raises(ValueError, match="training bad failed"):
        run_jobs([spec("slow"), spec("bad")], 2, start, finished)
    assert started["slow"].process.returncode == -signal.SIGTERM and time.monotonic() - began < 30


def test_two_runs_at_once_on_a_cpu_and_one_on_gpus(monkeypatch):
    monkeypatch.setattr(concurrent_training, "available_cpus", lambda: 2)
    assert concurrent_jobs(None, on_cpu=True, gpus=0) == 2 and concurrent_training.threads_per_job(2) == 1
    assert concurrent_jobs(None, on_cpu=False, gpus=0) == 1 and concurrent_jobs(None, on_cpu=True, gpus=4) == 1
    assert concurrent_jobs(3, on_cpu=False, gpus=0) == 3
    with pytest.raises(ValueError, match="JOBS must be at least 1"):
        concurrent_jobs(0, on_cpu=True, gpus=0)


ORPHANS_A_SLEEPER = """
import sys
from pathlib import Path
from vgg.suite.concurrent_training import start_job
from vgg.suite.plan import RunSpec
job = start_job(RunSpec("A", "A", "256", "random"), [sys.executable, "-c", "import time; time.sleep(60)"], Path(sys.argv[1]), threads=1)
print(job.process.pid, flush=True)
"""


def test_a_child_does_not_outlive_the_runner_that_started_it(tmp_path):
    import subprocess

    runner = subprocess.run([sys.executable, "-c", ORPHANS_A_SLEEPER, str(tmp_path / "console.log")], capture_output=True, text=True, timeout=60)
    child = int(runner.stdout.strip())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)  # without PR_SET_PDEATHSIG it would sleep its 60 s


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False
