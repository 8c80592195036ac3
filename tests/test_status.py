"""`python -m vgg status`: every state a run can be in, read from fabricated run folders (no training),
the time left from measured runs, what is missing, and that it writes nothing."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vgg.evaluation.statistics import binomial_interval
from vgg.suite.plan import load_experiment
from vgg.suite.runner import ExperimentRunner
from vgg.suite.status import SuiteStatus
from vgg.training.run_progress import PROGRESS_NAME

NOW = 1_800_000_000.0


def write_run(runs: Path, run: str, progress: dict | None = None, done: dict | None = None, val_errors: tuple = (), checkpoint: bool = False) -> None:
    folder = runs / "ci" / run
    folder.mkdir(parents=True)
    if progress is not None:
        record = {"state": "running", "pid": os.getpid(), "host": socket.gethostname(), "started": NOW - 100, "updated": NOW - 5, "epoch": 0,
                  "epochs": 4, "epoch_seconds": [], "images_per_s": 50.0, "val_images": 100, "error": ""}
        (folder / PROGRESS_NAME).write_text(json.dumps({**record, **progress}))
    if done is not None:
        (folder / "DONE").write_text(json.dumps(done))
    if val_errors:
        rows = ["epoch,val_top1_err,images_per_s", *(f"{epoch},{error},{40 + epoch}" for epoch, error in enumerate(val_errors))]
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    if checkpoint:
        (folder / "checkpoint.pt").write_bytes(b"")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def status(tmp_path) -> SuiteStatus:
    runs = tmp_path / "runs"
    write_run(runs, "A-256", {"state": "finished", "epoch": 2, "epochs": 2, "started": NOW - 160, "updated": NOW - 100}, {"epochs": 2}, (30.0, 25.0))
    write_run(runs, "A-LRN-256", {"epoch": 1, "epochs": 4, "epoch_seconds": [10.0, 12.0]}, val_errors=(40.0,))
    write_run(runs, "B-256", {"pid": dead_pid(), "epoch": 1, "epoch_seconds": [20.0]})
    write_run(runs, "C-256", {"state": "failed", "error": "ValueError: boom"})
    write_run(runs, "D-256", {"host": "another-node", "updated": NOW - 5000, "epoch_seconds": [30.0]})
    write_run(runs, "E-256", {"host": "another-node", "updated": NOW - 10, "epoch": 2, "epoch_seconds": [30.0]})
    write_run(runs, "D-384", checkpoint=True, val_errors=(50.0, 45.0))
    write_run(runs, "D-256-512", checkpoint=True)  # an older suite's run: no PROGRESS.json, its log written a minute ago
    (runs / "ci" / "D-256-512" / "train.log").write_text("epoch 0: ...\n")
    os.utime(runs / "ci" / "D-256-512" / "train.log", (NOW - 60, NOW - 60))
    runner = ExperimentRunner(profile="ci", data=str(tmp_path / "data"), runs_root=runs, results_dir=tmp_path / "results", jobs=1)
    return SuiteStatus(runner, [load_experiment("table3", runner.catalog)], tmp_path / "reports", now=NOW)


def rows_by_run(status: SuiteStatus) -> dict:
    return {row.run: row for row in status.rows}


def test_every_state_of_a_run(status):
    rows = rows_by_run(status)
    low, high = binomial_interval(25.0, 100)
    assert (rows["A-256"].state, rows["A-256"].epoch, rows["A-256"].best_top1) == ("done", "2 of 2", f"25.0% [{low:.1f}, {high:.1f}]")
    assert (rows["A-LRN-256"].state, rows["A-LRN-256"].epoch, rows["A-LRN-256"].images_per_s) == ("running", "1 of 4", "40")
    assert rows["B-256"].state == "killed (the same command resumes it)"
    assert rows["C-256"].state == "failed: ValueError: boom"
    assert rows["D-256"].state == "stale: no news for 83 min" and rows["E-256"].state == "running"
    assert rows["D-384"].state == "stopped (the same command resumes it)" and rows["D-384"].best_top1 == "45.0%"
    assert rows["D-256-512"].state == "running (by its train.log)"
    assert rows["C-384"].state == "waiting on C-256" and rows["E-384"].state == "waiting on E-256"


def test_time_left_from_the_pace_and_from_measured_runs(status):
    rows, runner = rows_by_run(status), status.runner
    assert rows["A-LRN-256"].left_s == pytest.approx(3 * 11.0)  # 3 epochs left at the mean of 10 and 12 s
    assert rows["A-LRN-256"].ends == time.strftime("%H:%M", time.localtime(NOW + 33))
    per_cost = 60.0 / runner.training_cost(next(spec for spec in status.runs if spec.id == "A-256"))  # 60 s, start-up included
    e384 = next(spec for spec in status.runs if spec.id == "E-384")
    assert rows["E-384"].left_s == pytest.approx(per_cost * runner.training_cost(e384))
    assert rows["C-256"].left_s is None  # a failed run is not counted in the time left
    pending = [row for row in status.rows if row.state != "done" and not row.state.startswith("failed")]
    assert status.training_left_s() == pytest.approx(sum(row.left_s for row in pending))
    assert re.fullmatch(r"run 7 of 12: E-384, about \d+ (s|min) \(from the runs measured so far\); \d+ (s|min) of training left in all at 1 run\(s\) at once",
                        status.header(e384, 7))


def test_the_table_and_what_is_missing(status):
    text = status.format()
    lines = text.splitlines()
    assert lines[0].split() == ["run", "state", "epoch", "best", "val", "top-1", "[95%]", "img/s", "time", "left", "ends"]
    assert len([line for line in lines[1:13] if line.strip()]) == 12
    assert "runs: 1 of 12 done (ci profile" in text
    assert "table3: 12 of 12 evaluations to run" in text and "table3: no " in text and "training time left: " in text


def test_status_writes_nothing(status, tmp_path):
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    status.format()
    SuiteStatus(status.runner, status.experiments, tmp_path / "reports", now=NOW).format()
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


def test_the_status_command(tmp_path, capsys):
    from vgg.cli import main

    write_run(tmp_path / "runs", "A-256", {"state": "finished", "epoch": 2, "epochs": 2}, {"epochs": 2}, (30.0, 25.0))
    code = main(["status", "table3", "--profile", "ci", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
                 "--reports", str(tmp_path / "reports"), "--data", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert code == 0 and "A-256" in out and "runs: 1 of 12 done" in out and "{" not in out


def test_the_progress_file_across_a_run(tmp_path):
    """Written at start and each epoch; a resumed run carries its earlier time and pace; a finished
    run stays finished when a stop signal ends the command after it; a failure before the loop is recorded."""
    from vgg.training.run_progress import RunProgress, read_progress, record_failure

    progress = RunProgress(tmp_path, 0, 3, 100, tensorboard=False, started=time.time() - 30)
    assert read_progress(tmp_path)["state"] == "running" and read_progress(tmp_path)["epoch"] == 0
    progress.epoch_closed({"epoch": 0, "images_per_s": 12.5, "val_top1_err": 50.0})
    first = read_progress(tmp_path)
    assert (first["epoch"], first["images_per_s"], len(first["epoch_seconds"])) == (1, 12.5, 1)
    resumed = RunProgress(tmp_path, 1, 3, 100, tensorboard=False, started=time.time())
    record = read_progress(tmp_path)
    assert record["epoch_seconds"] == first["epoch_seconds"] and record["earlier_s"] == pytest.approx(first["updated"] - first["started"], abs=0.01)
    resumed.ended("finished")
    resumed.ended("stopped")
    assert read_progress(tmp_path)["state"] == "finished"
    record_failure(tmp_path / "absent", "ValueError: x")
    assert not (tmp_path / "absent").exists()
    record_failure(tmp_path, "ValueError: no data")
    assert (read_progress(tmp_path)["state"], read_progress(tmp_path)["error"]) == ("failed", "ValueError: no data")


def test_a_first_epoch_on_another_host_is_not_called_stale():
    from vgg.suite.status import running_state

    assert running_state({"host": "another-node", "updated": NOW - 3600, "epoch_seconds": []}, NOW) == "running, in its first epoch (60 min without news)"
    assert running_state({"host": "another-node", "updated": NOW - 3600, "epoch_seconds": [1500.0]}, NOW) == "running"  # within 3 epochs of 25 min
    assert running_state({"host": "another-node", "updated": NOW - 3600, "epoch_seconds": [60.0]}, NOW) == "stale: no news for 60 min"
