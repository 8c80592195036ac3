"""The local runner (`vgg.suite.runner`): catalogue settings reaching the training run, the lock,
skip and resume, the ci-profile chain end to end, from Python and from the make-style command line."""

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import vgg.runtime.precision
from tests.helpers_images import assert_drawn_figure
from vgg.data.datasets import load_split
from vgg.evaluation.evaluate import evaluate
from vgg.evaluation.metrics import read_metrics
from vgg.evaluation.scores import load_scores
from vgg.nets.trained import load_net
from vgg.runtime.checkpoint import read_done
from vgg.suite.plan import load_experiment
from vgg.suite.results_csv import read_rows, upsert_rows
from vgg.suite.runner import ExperimentRunner
from vgg.suite.table_reports import write_results_report


ROOT = Path(__file__).resolve().parent.parent


def test_catalog_settings_reach_the_training_run(ci_data, tmp_path, catalog):
    local = runner(ci_data, tmp_path)
    fc_only = local.train_config(catalog["D-256-512-fc"])
    assert fc_only.freeze == "features" and fc_only.init == f"from:{tmp_path / 'runs' / 'ci' / 'D-384'}"
    assert local.train_config(catalog["D-256-512"]).freeze == "none" and fc_only.run_hash() != local.train_config(catalog["D-256-512"]).run_hash()
    per_n = replace(catalog["A-LRN-256"], lrn_alpha=1e-4)
    assert local.train_config(per_n).lrn_alpha == 1e-4 and local.train_config(per_n).run_hash() != local.train_config(catalog["A-LRN-256"]).run_hash()
    # runs without the new keys keep their settings (and so their legacy hash, by which older runs are adopted)
    assert "freeze" not in local.train_config(catalog["D-256-512"]).settings() and "lrn_alpha" not in local.train_config(catalog["A-LRN-256"]).settings()
    # the LRN constant is identified by its value: given explicitly at the default, it is the same run
    at_default = replace(catalog["A-LRN-256"], lrn_alpha=5e-4)
    assert local.train_config(at_default).run_hash() == local.train_config(catalog["A-LRN-256"]).run_hash()


def runner(ci_data, tmp_path, log=lambda m: None, **kwargs):
    return ExperimentRunner(profile="ci", data=str(ci_data), runs_root=tmp_path / "runs", results_dir=tmp_path / "results", workers=0, progress=False, log=log, **kwargs)


def test_the_lock_refuses_a_second_runner(ci_data, tmp_path):
    first, second = runner(ci_data, tmp_path), runner(ci_data, tmp_path)
    with first.lock():
        with pytest.raises(ValueError, match=rf"another experiment runner \(pid {os.getpid()}\) is using"):
            with second.lock():
                pass
    with second.lock():  # released when the first finishes
        pass


def test_a_read_only_archive_of_finished_runs_is_reported_into_another_results_folder(ci_data, tmp_path, monkeypatch):
    import builtins
    import errno

    import vgg.suite.runner as runner_module

    experiment_file = tmp_path / "one.toml"
    experiment_file.write_text('[[evaluation]]\nrun = "A-256"\n')
    experiment = load_experiment(experiment_file)
    written = runner(ci_data, tmp_path).run(experiment)
    runs = tmp_path / "runs"

    def read_only_open(path, mode="r", *args, **kwargs):  # the runs folder on a read-only disk
        if Path(path).is_relative_to(runs) and any(flag in mode for flag in "wa+x"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(runner_module, "open", read_only_open, raising=False)
    logged = []
    archive = ExperimentRunner(profile="ci", data=str(ci_data), runs_root=runs, results_dir=tmp_path / "elsewhere", workers=0, progress=False,
                               log=logged.append)
    rows = archive.run(experiment)
    assert [float(row["top1_err"]) for row in rows] == [float(row["top1_err"]) for row in written]
    assert read_rows(tmp_path / "elsewhere" / "one.csv")[0]["run"] == "A-256"
    assert any("is read-only: its finished runs and score files are read" in line for line in logged)


def test_a_folder_the_command_may_not_write_is_named_with_what_to_do():
    import errno

    from vgg.cli import _os_error_line

    line = _os_error_line(OSError(errno.EROFS, "Read-only file system", "runs/ci/.lock"))
    assert line == ("cannot write or open runs/ci/.lock: Read-only file system; make its folder writable, or point the command at one that is "
                    "(--runs, --results, --out, --out-dir)")


def test_ci_table3_end_to_end_then_skip_and_resume(ci_data, tmp_path):
    experiment = load_experiment("table3")
    rows = runner(ci_data, tmp_path).run(experiment)
    assert len(rows) == 12 and len(read_rows(tmp_path / "results" / "table3.csv")) == 12
    assert {row["train_scale"] for row in rows} == {"256", "384", "256:512"}
    # rows an earlier run over more seeds left (another seed's, the aggregate) go when this 1-seed run writes its own
    upsert_rows(tmp_path / "results" / "table3.csv", [{**rows[0], "seed": seed, "top1_err": "99"} for seed in ("1", "mean")])
    # lose one run's DONE (as if killed during its last epoch) and a results row: only that is redone
    run_dir = tmp_path / "runs" / "ci" / "E-256-512"
    (run_dir / "DONE").unlink()
    stamps = {p.name: (p / "checkpoint.pt").stat().st_mtime_ns for p in (tmp_path / "runs" / "ci").iterdir() if (p / "DONE").exists()}
    # a score file of an earlier evaluation version (dense read the top-left of the image) is computed again
    [old_scores] = (tmp_path / "runs" / "ci" / "scores").glob("A-256*.pt")
    state = torch.load(old_scores, weights_only=True)
    state["provenance"]["evaluation_version"] = "1"
    torch.save(state, old_scores)
    messages = []
    again = ExperimentRunner(profile="ci", data=str(ci_data), runs_root=tmp_path / "runs", results_dir=tmp_path / "results", workers=0, progress=False, log=messages.append)
    again.run(experiment)
    trained = [m for m in messages if "] training" in m]
    assert trained == ["[E-256-512] training VGG-E at S=256:512 (init: from:E-384)"]
    assert [m.split(",")[0] for m in messages if m.startswith("run ")] == ["run 12 of 12: E-256-512"]  # no header for the 11 finished runs
    # every other score file matches its checkpoint's hash and the evaluation version: none is redone
    assert [m.split(":")[0] for m in messages if "evaluating" in m] == ["[A-256] evaluating"]
    assert {p: (tmp_path / "runs" / "ci" / p / "checkpoint.pt").stat().st_mtime_ns for p in stamps} == stamps
    assert len(read_rows(tmp_path / "results" / "table3.csv")) == 12  # upserted, not duplicated; the stale seeds dropped
    report = write_results_report("table3", "ci", tmp_path / "results", tmp_path / "reports")
    text = report.read_text()
    assert text.startswith("> **Toy-scale run (ci profile)") and "| E " in text
    assert_drawn_figure(tmp_path / "reports" / "table3.png")
    # how each net trained, from its DONE: the ci profile trains 2 epochs (1 when fine-tuning) of 6 steps
    a_row = next(row for row in read_rows(tmp_path / "results" / "table3.csv") if row["run"] == "A-256")
    done = read_done(tmp_path / "runs" / "ci" / "A-256")
    assert (a_row["epochs"], a_row["steps"], float(a_row["train_loss"])) == ("2", "12", done["train_loss"])
    training = text.split("## How each net trained")[1]
    assert "| A-256 " in training and "| E-256-512 " in training and "(chance 1.39)" in training  # ln 4 classes
    # every net's learning curve, from its metrics.csv, in results/curves.csv and the report's figure
    curves = read_rows(tmp_path / "results" / "curves.csv")
    assert {row["run"] for row in curves} == {row["run"] for row in rows}
    a_curve = [row for row in curves if row["run"] == "A-256"]
    assert [(row["epoch"], row["train_loss"]) for row in a_curve] == [(m["epoch"], m["train_loss"]) for m in read_metrics(tmp_path / "runs" / "ci" / "A-256" / "metrics.csv")]
    assert "(table3-curves.png)" in training
    assert_drawn_figure(tmp_path / "reports" / "table3-curves.png")
    check_averaged_evaluations_reuse_each_scale_and_method_once(ci_data, tmp_path)


def check_averaged_evaluations_reuse_each_scale_and_method_once(ci_data, tmp_path):
    """Dense at several scales and multi-crop+dense are averages of single-scale evaluations kept in
    their own score files: a scale that Table 3 evaluated (A-256 at Q = 256) is not evaluated again for Table 4."""
    averaged = tmp_path / "averaged.toml"
    averaged.write_text(
        'title = "averaged"\n[[evaluation]]\nrun = "A-256"\nscales = [224, 256, 288]\n'
        '[[evaluation]]\nrun = "A-256"\nmethod = "multi-crop+dense"\nscales = [224, 256]\n'
    )
    messages = []
    rows = runner(ci_data, tmp_path, log=messages.append).run(load_experiment(averaged))
    evaluated = [m.split(": ", 1)[1] for m in messages if "evaluating" in m]
    assert evaluated == ["dense at Q=224 with flips", "dense at Q=288 with flips", "multi-crop at Q=224 with flips", "multi-crop at Q=256 with flips"]
    net, val = load_net(checkpoint=tmp_path / "runs" / "ci" / "A-256" / "checkpoint.pt"), load_split(ci_data, "val")
    assert len(rows) == 2
    for row, (method, scales) in zip(rows, [("dense", [224, 256, 288]), ("multi-crop+dense", [224, 256])]):
        direct = evaluate(net, val, method, scales, workers=0)
        scores = load_scores(tmp_path / "runs" / "ci" / "scores" / f"A-256__{method}__{'-'.join(map(str, scales))}__flip.pt")
        torch.testing.assert_close(scores["posteriors"], direct.posteriors, rtol=1e-5, atol=1e-6)
        assert float(row["top1_err"]) == round(direct.top1_err, 3) and row["test_scales"] == "|".join(map(str, scales))


def test_make_style_cli_run_and_report(ci_data, tmp_path):
    common = ["--profile", "ci", "--data", str(ci_data), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--workers", "0", "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "vgg", "run", "table5", *common, "--jobs", "1"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    report = subprocess.run([sys.executable, "-m", "vgg", "report", "table5", "--profile", "ci", "--results", str(tmp_path / "results"), "--out-dir", str(tmp_path / "reports")], cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "multi-crop+dense" in (tmp_path / "reports" / "table5.md").read_text()
    terminal = result.stdout + result.stderr + report.stdout + report.stderr
    assert PYTHON_REPR.findall(terminal) == [], "no Python dict, list or dataclass repr on the terminal"
    headers = [line for line in result.stdout.splitlines() if line.startswith("run ")]
    trained = [line for line in result.stdout.splitlines() if "] training VGG" in line]
    assert len(headers) == len(trained) > 0 and re.fullmatch(r"run 1 of \d+: \S+, about \? \(from the runs measured so far\); \? of training .*", headers[0])
    duration = r"(\d+ s|\d+ min|\d+\.\d h)"
    assert all(re.fullmatch(rf"run {k} of \d+: \S+, about {duration} .*; {duration} of training left in all at 1 run\(s\) at once", line)
               for k, line in enumerate(headers[1:], 2))
    finished = [line for line in result.stdout.splitlines() if line.startswith("finished: ")]
    assert finished and all(re.fullmatch(r"finished: VGG-\S+ at S=\S+: \d+ epochs?, \d+ rate drops?.*; val top-1 .*% \(best .*%\), top-5 .*%, "
                                         r"train loss \S+; \d+\.\d min of training\. Full record: \S+/DONE", line) for line in finished)


PYTHON_REPR = re.compile(r"\{'|\['|'\]|\{\}|\[\]|\b[A-Z]\w+\(\w+=")
"""What a dict, list or dataclass repr looks like in text: {'key', ['item', [], {}, Spec(field=."""


def test_the_repr_pattern_catches_what_it_looks_for():
    assert [bool(PYTHON_REPR.search(text)) for text in (
        "finished: {'config': 'A'}", "drops [14, 17] ['a']", "none: []", "SynthSpec(classes=4, seed=0)", "val top-1 28.2% [26.4, 30.0]", "(after epoch 14, 17)",
    )] == [True, True, True, True, False, False]


def test_killed_runner_resumes_without_retraining_or_duplicates(ci_data, tmp_path):
    import signal
    import time

    experiment = tmp_path / "five.toml"  # five of Table 3's nets, A first: B-E start from it (table3's twelve took 70-115 s)
    experiment.write_text("".join(f'[[evaluation]]\nrun = "{run}"\n' for run in ("A-256", "B-256", "C-256", "D-256", "E-256")))
    command = [sys.executable, "-m", "vgg", "run", str(experiment), "--profile", "ci", "--data", str(ci_data), "--runs", str(tmp_path / "runs"),
               "--results", str(tmp_path / "results"), "--workers", "0", "--no-progress", "--jobs", "2"]
    victim = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs" / "ci"
    deadline = time.monotonic() + 120
    while len(list(runs.glob("*/DONE"))) < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    finished = {p.parent.name for p in runs.glob("*/DONE")}
    assert 2 <= len(finished) < 5, "the runner should be killed part-way"
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    retrained = {line.split("]")[0][1:] for line in result.stdout.splitlines() if "] training" in line}
    skipped = {line.split("]")[0][1:] for line in result.stdout.splitlines() if "] finished already" in line}
    # runs training beside the killed one got SIGTERM with it: each ended checkpointed, or finished
    assert finished <= skipped and retrained.isdisjoint(skipped) and len(retrained | skipped) == 5
    rows = read_rows(tmp_path / "results" / "five.csv")
    assert len(rows) == 5 and len({row["run"] for row in rows}) == 5


CATALOGUE_HASHES = {
    "A-256": "6859a73fff90354c", "D-384": "17cce9c38a8e693b", "E-256-gaussian": "f39168b2b4894261",
    "B-256-glorot": "c13cfa8fb68d0b5e", "D-256-512-fc": "bdc2b82aaed48e3a", "A-LRN-256": "84bca2f790ed5b69",
}
"""Run hashes of catalogue runs on the paper profile (dataset and runs folder absent: identified by
path), at identity version 3: a change to runs.toml's wording (its init words, say) must not
change them, or finished runs would be trained again."""


def test_catalogue_runs_keep_their_run_hashes(catalog, monkeypatch):
    monkeypatch.setattr(vgg.runtime.precision, "cpu_bf16_speedup", lambda: 1.0)  # a CPU without fast bf16: --precision auto trains in fp32
    local = ExperimentRunner(profile="paper", data="/nonexistent-imagenet", runs_root=Path("/runs"), results_dir=Path("/results"), workers=0, progress=False)
    assert {run: local.train_config(catalog[run]).run_hash() for run in CATALOGUE_HASHES} == CATALOGUE_HASHES


def test_concurrent_runs_get_the_runners_precision_unless_they_resume_a_checkpoint(ci_data, tmp_path, monkeypatch):
    # a started run must resume in the precision its checkpoint recorded, whatever the runner decides now
    import vgg.suite.runner as runner_module
    from vgg.runtime.checkpoint import CHECKPOINT_NAME
    from vgg.suite.plan import plan_runs

    commands = {}
    monkeypatch.setattr(runner_module, "start_job", lambda spec, command, console, threads: commands.setdefault(spec.id, command) and None)
    monkeypatch.setattr(vgg.runtime.precision, "resolve", lambda precision, device: "bf16")
    local = runner(ci_data, tmp_path, jobs=2)
    runs = plan_runs(load_experiment("table3", local.catalog), local.catalog, 1)
    started = local.run_dir("B-256")
    started.mkdir(parents=True)
    (started / CHECKPOINT_NAME).write_bytes(b"")
    local.train_all(runs)
    assert len(commands) == 12
    assert all("--precision" not in command if run == "B-256" else "bf16" == command[command.index("--precision") + 1] for run, command in commands.items())


def test_a_finished_run_is_one_human_line():
    from vgg.training.run_state import describe_done

    done = {"config": "D", "train_scale": "256", "epochs": 20, "drop_epochs": [14, 17], "stopped": "max_epochs", "val_top1_err": 21.2,
            "best_val_top1_err": 20.9, "val_top5_err": 6.6, "train_loss": 0.7187, "train_wall_s": 504.0, "identity": {"seed": 0}}
    assert describe_done(done, Path("runs/smoke/D-256")) == (
        "VGG-D at S=256: 20 epochs, 2 rate drops (after epoch 14, 17), stopped at its epoch limit; val top-1 21.2% (best 20.9%), "
        "top-5 6.6%, train loss 0.7187; 8.4 min of training. Full record: runs/smoke/D-256/DONE")
    one = describe_done({**done, "epochs": 1, "drop_epochs": [], "stopped": "at chance"}, Path("r"))
    assert one.startswith("VGG-D at S=256: 1 epoch, 0 rate drops, given up at chance;")
