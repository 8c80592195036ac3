"""`python -m vgg status` (`make status`): where a suite run stands, from its files alone (no lock
taken, safe beside a working runner, locally or on SLURM with a shared runs folder).

One row per run of the plan: its state (done, running, waiting on its parent, stopped, failed with
its error's line, killed, not started), epoch n of N, best val top-1 with its 95% interval, images/s
and the time left. A running run's time left is its remaining epochs at its recent pace (PROGRESS.json);
a run not yet started is estimated from the runs measured so far, in proportion to its training cost
(multiply-adds per image x length, `ExperimentRunner.training_cost`). Then the evaluations and
reports still missing, and the total training time left at the runner's concurrency."""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vgg.evaluation.metrics import METRICS_NAME, read_metrics
from vgg.evaluation.statistics import binomial_interval
from vgg.runtime.checkpoint import CHECKPOINT_NAME, read_done
from vgg.suite.plan import Experiment, RunSpec, plan_runs
from vgg.training.run_progress import read_progress

VAL_IMAGES = re.compile(r"; val \((\d+) images")
"""train.log's epoch lines: `epoch 3: ...; val (1000 images, centre crop at Q=73) ...`."""
STALE_AFTER_S = 600.0
"""A run on another host whose PROGRESS.json has not moved for this long (or 3 epochs, if longer) is stale."""


@dataclass
class RunRow:
    """One run's line of the status table."""

    run: str
    state: str
    epoch: str = "-"
    best_top1: str = "-"
    images_per_s: str = "-"
    left_s: float | None = None
    ends: str = "-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def metrics_rows(run_dir: Path) -> list[dict]:
    """A run's metrics.csv rows so far ([] before its first epoch, or while unreadable)."""
    try:
        return read_metrics(run_dir / METRICS_NAME)
    except OSError:
        return []


def val_images_of(run_dir: Path, progress: dict | None) -> int | None:
    """The per-epoch validation's size: from PROGRESS.json, or from train.log's epoch lines (older runs)."""
    if progress and progress.get("val_images"):
        return int(progress["val_images"])
    try:
        found = VAL_IMAGES.findall((run_dir / "train.log").read_text(errors="replace"))
    except OSError:
        return None
    return int(found[-1]) if found else None


def best_val_top1(rows: list[dict], val_images: int | None) -> str:
    """The best per-epoch val top-1 error, with its 95% interval (Wilson's) when the val size is known."""
    try:
        best = min(float(row["val_top1_err"]) for row in rows)
    except (KeyError, ValueError):  # no rows, or a row being written
        return "-"
    if not val_images:
        return f"{best:.1f}%"
    low, high = binomial_interval(best, val_images)
    return f"{best:.1f}% [{low:.1f}, {high:.1f}]"


def last_rate(rows: list[dict]) -> str:
    try:
        return f"{float(rows[-1]['images_per_s']):.0f}"
    except (IndexError, KeyError, ValueError):
        return "-"


def running_state(progress: dict, now: float) -> str:
    """running, killed (its process is gone: same host) or stale (no news: another host)."""
    if progress.get("host") == socket.gethostname():
        return "running" if _alive(int(progress.get("pid", 0))) else "killed (the same command resumes it)"
    epoch_s = _mean(progress.get("epoch_seconds", []))
    silent = now - float(progress.get("updated", now))
    if epoch_s is None:  # news comes at each epoch's end: before the first, silence says nothing
        return "running" if silent < STALE_AFTER_S else f"running, in its first epoch ({silent / 60:.0f} min without news)"
    return "running" if silent < max(STALE_AFTER_S, 3 * epoch_s) else f"stale: no news for {silent / 60:.0f} min"


class SuiteStatus:
    """The status of the runs, evaluations and reports of `experiments` for one runner's folders."""

    def __init__(self, runner, experiments: list[Experiment], reports_dir: Path = Path("reports"), now: float | None = None,
                 runs: list[RunSpec] | None = None):
        """`runs`: the runs to show (default: the experiments' plan)."""
        self.runner, self.experiments, self.reports_dir = runner, experiments, Path(reports_dir)
        self.now = time.time() if now is None else now
        planned: dict[str, RunSpec] = {}
        for experiment in experiments:
            for spec in plan_runs(experiment, runner.catalog, runner.seeds, runner.profile.name):
                planned.setdefault(spec.id, spec)
        self.runs = list(planned.values()) if runs is None else runs
        self._records: dict[str, tuple[dict | None, dict | None]] = {}
        self.rows = [self._row(spec) for spec in self.runs]
        self._estimate_unstarted()

    def _record(self, run_id: str) -> tuple[dict | None, dict | None]:
        """A run's DONE and PROGRESS.json, each read once per status."""
        if run_id not in self._records:
            run_dir = self.runner.run_dir(run_id)
            self._records[run_id] = read_done(run_dir), read_progress(run_dir)
        return self._records[run_id]

    def _row(self, spec: RunSpec) -> RunRow:
        run_dir = self.runner.run_dir(spec.id)
        (done, progress), rows = self._record(spec.id), metrics_rows(run_dir)
        best, rate = best_val_top1(rows, val_images_of(run_dir, progress)), last_rate(rows)
        if done is not None:
            epochs = done.get("epochs", "?")
            return RunRow(spec.id, "done", f"{epochs} of {epochs}", best, rate)
        if progress is None:  # not started, or trained by a version of the suite without PROGRESS.json
            if self._log_moved_lately(run_dir):
                return RunRow(spec.id, "running (by its train.log)", f"{len(rows)} of ?", best, rate)
            if (run_dir / CHECKPOINT_NAME).exists():
                return RunRow(spec.id, "stopped (the same command resumes it)", f"{len(rows)} of ?", best, rate)
            parent = spec.parent
            if parent is not None and self._record(parent)[0] is None:
                return RunRow(spec.id, f"waiting on {parent}")
            return RunRow(spec.id, "not started")
        state = progress.get("state", "running")
        if state == "running":
            state = running_state(progress, self.now)
        elif state == "stopped":
            state = "stopped (the same command resumes it)"
        elif state == "failed":
            state = f"failed: {progress.get('error', '')}"
        row = RunRow(spec.id, state, f"{progress.get('epoch', 0)} of {progress.get('epochs', '?')}", best, rate)
        epoch_s = _mean(progress.get("epoch_seconds", []))
        if epoch_s is not None and not state.startswith("failed"):
            row.left_s = max(0, int(progress.get("epochs", 0)) - int(progress.get("epoch", 0))) * epoch_s
            if state == "running":
                row.ends = time.strftime("%H:%M", time.localtime(self.now + row.left_s))
        return row

    def _log_moved_lately(self, run_dir: Path) -> bool:
        try:
            return self.now - (run_dir / "train.log").stat().st_mtime < STALE_AFTER_S
        except OSError:
            return False

    def _measured_seconds(self, spec: RunSpec) -> float | None:
        """A finished run's whole time, start-up included (PROGRESS.json: from its process's start to
        its end, plus its earlier sessions' if it was resumed), or else its DONE's training time (older
        runs: without validation or start-up). None for a run not finished."""
        done, progress = self._record(spec.id)
        if done is None:
            return None
        if progress and progress.get("state") == "finished":
            return float(progress.get("earlier_s", 0.0)) + float(progress["updated"]) - float(progress["started"])
        return float(done["train_wall_s"]) if "train_wall_s" in done else None

    def _estimate_unstarted(self) -> None:
        measured = [(seconds, self.runner.training_cost(spec)) for spec in self.runs if (seconds := self._measured_seconds(spec)) is not None]
        per_cost = sum(s for s, _ in measured) / sum(c for _, c in measured) if measured else None
        for spec, row in zip(self.runs, self.rows):
            if row.left_s is None and row.state != "done" and not row.state.startswith("failed") and per_cost is not None:
                row.left_s = per_cost * self.runner.training_cost(spec)

    def missing_evaluations(self) -> list[str]:
        """Per experiment: how many of its evaluations (per seed) have no score file yet."""
        lines = []
        for experiment in self.experiments:
            wanted = [(spec, seed) for seed in range(self.runner.seeds) for spec in experiment.all_evaluations()]
            missing = sum(not self.runner.scores_path(spec, seed).exists() for spec, seed in wanted)
            if missing:
                lines.append(f"{experiment.name}: {missing} of {len(wanted)} evaluations to run")
        return lines

    def missing_reports(self) -> list[str]:
        """Results CSVs not written yet, and reports absent or older than their results."""
        lines = []
        for experiment in self.experiments:
            results = self.runner.results_dir / f"{experiment.name}.csv"
            report = self.reports_dir / f"{experiment.name}.md"
            if not results.exists():
                lines.append(f"{experiment.name}: no {results} yet")
            elif not report.exists() or report.stat().st_mtime < results.stat().st_mtime:
                lines.append(f"{experiment.name}: {report} to write (make report)")
        return lines

    def training_left_s(self) -> float | None:
        """The training time left at the runner's concurrency (runs at once), None when nothing is measured yet."""
        pending = [row for row in self.rows if row.state != "done" and not row.state.startswith("failed")]
        if any(row.left_s is None for row in pending):
            return None
        return sum(row.left_s for row in pending) / max(1, self.runner.jobs)

    def header(self, spec: RunSpec, number: int) -> str:
        """The runner's line before run `spec` trains: run k of n, its estimate and the training left in all."""
        row = next(row for run, row in zip(self.runs, self.rows) if run.id == spec.id)
        left = self.training_left_s()
        return (f"run {number} of {len(self.runs)}: {spec.id}, about {_duration(row.left_s)} (from the runs measured so far); "
                f"{_duration(left)} of training left in all at {self.runner.jobs} run(s) at once")

    def format(self) -> str:
        """The status as text: the run table, then what is missing, then the total."""
        header = ("run", "state", "epoch", "best val top-1 [95%]", "img/s", "time left", "ends")
        table = [header, *[(r.run, r.state, r.epoch, r.best_top1, r.images_per_s, _duration(r.left_s) if r.state != "done" else "-", r.ends) for r in self.rows]]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header) - 1)]
        lines = ["  ".join(f"{str(cell):<{widths[i]}}" for i, cell in enumerate(line[:-1])) + f"  {line[-1]}" for line in table]
        done = sum(row.state == "done" for row in self.rows)
        lines += ["", f"runs: {done} of {len(self.rows)} done ({self.runner.profile.name} profile, {self.runner.profile_dir})"]
        lines += self.missing_evaluations() or ["evaluations: none missing"]
        lines += self.missing_reports() or ["reports: up to date"]
        left = self.training_left_s()
        lines.append(f"training time left: {_duration(left) if left is not None else 'unknown until a run has trained an epoch'}"
                     f" at {self.runner.jobs} run(s) at once (evaluations not included)")
        return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
