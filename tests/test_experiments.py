"""The experiment suite: plan expansion against the paper's tables, skip/resume, upsert keys,
the lock, SLURM submission, report rendering, and the ci-profile chain end to end."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vgg.experiments import TABLES, ExperimentRunner, load_catalog, load_experiment, plan_runs
from vgg.results import read_rows, upsert_rows
from vgg.results_report import write_results_report

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def evaluations(name, catalog):
    return [(e.run, e.method, e.scales) for e in load_experiment(name, catalog).evaluations]


def test_table3_is_the_papers_twelve_rows(catalog):
    assert evaluations("table3", catalog) == [
        ("A-256", "dense", (256,)), ("A-LRN-256", "dense", (256,)), ("B-256", "dense", (256,)),
        ("C-256", "dense", (256,)), ("C-384", "dense", (384,)), ("C-256-512", "dense", (384,)),
        ("D-256", "dense", (256,)), ("D-384", "dense", (384,)), ("D-256-512", "dense", (384,)),
        ("E-256", "dense", (256,)), ("E-384", "dense", (384,)), ("E-256-512", "dense", (384,)),
    ]


def test_table4_and_5_use_the_papers_multi_scale_sets(catalog):
    table4 = {run: scales for run, _, scales in evaluations("table4", catalog)}
    assert table4["B-256"] == (224, 256, 288) and table4["C-384"] == (352, 384, 416) and table4["E-256-512"] == (256, 384, 512)
    assert len(table4) == 10 and all(method == "dense" for _, method, _ in evaluations("table4", catalog))
    table5 = evaluations("table5", catalog)
    assert [(run, method) for run, method, _ in table5] == [
        (run, method) for run in ("D-256-512", "E-256-512") for method in ("dense", "multi-crop", "multi-crop+dense")
    ]
    assert {scales for _, _, scales in table5} == {(256, 384, 512)}


def test_table6_fusions_and_their_members(catalog):
    fusions = load_experiment("table6", catalog).fusions
    assert [len(f.members) for f in fusions] == [7, 2, 2, 2]
    assert [m.run for m in fusions[0].members] == ["D-256", "D-384", "D-256-512", "C-256", "C-384", "E-256", "E-384"]
    assert fusions[0].members[1].scales == (352, 384, 416)
    assert [f.method for f in fusions] == ["dense", "dense", "multi-crop", "multi-crop+dense"]


def test_init_chains_and_training_order(catalog):
    assert catalog["D-256"].parent == "A-256" and catalog["D-384"].parent == "D-256" and catalog["D-256-512"].parent == "D-384"
    assert catalog["A-256"].parent is None and catalog["E-256-gaussian"].init == "gaussian"
    order = [run.id for run in plan_runs(load_experiment("table5", catalog), catalog)]
    assert order == ["A-256", "D-256", "D-384", "D-256-512", "E-256", "E-384", "E-256-512"]
    for name in TABLES:
        runs = plan_runs(load_experiment(name, catalog), catalog)
        ids = [r.id for r in runs]
        assert all(r.parent is None or ids.index(r.parent) < ids.index(r.id) for r in runs), name


def test_bad_experiment_files_are_clear_errors(tmp_path, catalog):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[evaluation]]\nrun = "Z-256"\n')
    with pytest.raises(ValueError, match="unknown run 'Z-256'"):
        load_experiment(bad, catalog)
    bad.write_text('[[evaluation]]\nrun = "A-256"\nscales = "many"\n')
    with pytest.raises(ValueError, match='scales must be "single", "multi"'):
        load_experiment(bad, catalog)
    with pytest.raises(ValueError, match="experiment file .*table9.toml does not exist"):
        load_experiment("table9", catalog)
    runs = tmp_path / "runs.toml"
    runs.write_text('[X]\nconfig = "A"\ntrain_scale = "256"\ninit = "Y"\n[Y]\nconfig = "A"\ntrain_scale = "256"\ninit = "X"\n')
    with pytest.raises(ValueError, match="loops"):
        load_catalog(runs)


def runner(ci_data, tmp_path, **kwargs):
    return ExperimentRunner(profile="ci", data=str(ci_data), runs_root=tmp_path / "runs", results_dir=tmp_path / "results", workers=0, progress=False, log=lambda m: None, **kwargs)


def test_the_lock_refuses_a_second_runner(ci_data, tmp_path):
    first, second = runner(ci_data, tmp_path), runner(ci_data, tmp_path)
    with first.lock():
        with pytest.raises(ValueError, match=rf"another experiment runner \(pid {os.getpid()}\) is using"):
            with second.lock():
                pass
    with second.lock():  # released when the first finishes
        pass


def test_upsert_keys_replace_only_the_same_evaluation(tmp_path):
    path = tmp_path / "t.csv"
    base = {"profile": "smoke", "dataset": "d", "run": "A-256", "method": "dense", "test_scales": "256", "flip": "True", "top1_err": "50"}
    upsert_rows(path, [base, {**base, "profile": "paper"}, {**base, "test_scales": "224|256|288"}, {**base, "flip": "False"}])
    upsert_rows(path, [{**base, "top1_err": "49"}])
    rows = read_rows(path)
    assert len(rows) == 4 and rows[0]["top1_err"] == "49" and [r["top1_err"] for r in rows[1:]] == ["50", "50", "50"]


def test_ci_table3_end_to_end_then_skip_and_resume(ci_data, tmp_path):
    experiment = load_experiment("table3")
    rows = runner(ci_data, tmp_path).run(experiment)
    assert len(rows) == 12 and len(read_rows(tmp_path / "results" / "table3.csv")) == 12
    assert {row["train_scale"] for row in rows} == {"256", "384", "256:512"}
    # lose one run's DONE (as if killed during its last epoch) and a results row: only that is redone
    run_dir = tmp_path / "runs" / "ci" / "E-256-512"
    (run_dir / "DONE").unlink()
    stamps = {p.name: (p / "checkpoint.pt").stat().st_mtime_ns for p in (tmp_path / "runs" / "ci").iterdir() if (p / "DONE").exists()}
    messages = []
    again = ExperimentRunner(profile="ci", data=str(ci_data), runs_root=tmp_path / "runs", results_dir=tmp_path / "results", workers=0, progress=False, log=messages.append)
    again.run(experiment)
    trained = [m for m in messages if "training" in m]
    assert trained == ["[E-256-512] training VGG-E at S=256:512 (init: E-384)"]
    assert {p: (tmp_path / "runs" / "ci" / p / "checkpoint.pt").stat().st_mtime_ns for p in stamps} == stamps
    assert len(read_rows(tmp_path / "results" / "table3.csv")) == 12  # upserted, not duplicated
    report = write_results_report("table3", "ci", tmp_path / "results", tmp_path / "reports")
    text = report.read_text()
    assert text.startswith("> **Toy-scale run (ci profile)") and "| E " in text and (tmp_path / "reports" / "table3.png").stat().st_size > 1000


def test_make_style_cli_run_and_report(ci_data, tmp_path):
    common = ["--profile", "ci", "--data", str(ci_data), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--workers", "0", "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "vgg", "run", "table5", *common], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    report = subprocess.run([sys.executable, "-m", "vgg", "report", "table5", "--profile", "ci", "--results", str(tmp_path / "results"), "--out-dir", str(tmp_path / "reports")], cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "multi-crop+dense" in (tmp_path / "reports" / "table5.md").read_text()


def test_slurm_submission_chains_jobs_after_their_parents(ci_data, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(
        "#!/bin/bash\n"
        f"n=$(($(wc -l < {log} 2>/dev/null || echo 0) + 101))\n"
        f'echo "$n $*" >> {log}\n'
        'echo "$n;cluster"\n'
    )
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    jobs = runner(ci_data, tmp_path, launch="slurm", gpus=4, slurm_args="--partition=gpu --time=72:00:00").submit_slurm(
        load_experiment("table5"), plan_runs(load_experiment("table5"), load_catalog())
    )
    assert jobs == {"A-256": "101", "D-256": "102", "D-384": "103", "D-256-512": "104", "E-256": "105", "E-384": "106", "E-256-512": "107", "evaluate": "108"}
    lines = log.read_text().splitlines()
    assert "--dependency" not in lines[0] and "--dependency=afterok:101 " in lines[1] and "--dependency=afterok:102 " in lines[2]
    assert "--dependency=afterok:101:102:103:104:105:106:107 " in lines[7]
    script = (tmp_path / "runs" / "ci" / "D-384" / "slurm.sh").read_text()
    assert "#SBATCH --gpus-per-node=4" in script and "#SBATCH --partition=gpu" in script and "--signal=USR1@120" in script
    assert "srun " in script and "--init from:" in script and "scontrol requeue" in script
    assert "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))" in script and "#SBATCH --cpus-per-task=8" in script
    # submitting again while the jobs are queued submits only a new evaluation job, chained after the queued ones
    (bin_dir / "squeue").write_text("#!/bin/bash\necho PENDING\n")
    (bin_dir / "squeue").chmod(0o755)
    again = runner(ci_data, tmp_path, launch="slurm").submit_slurm(load_experiment("table5"), plan_runs(load_experiment("table5"), load_catalog()))
    assert again["D-384"] == "103" and again["evaluate"] == "109" and len(log.read_text().splitlines()) == 9


def test_report_rendering_from_a_hand_made_results_csv(tmp_path):
    results = tmp_path / "results"
    rows = []
    for run, config, scale, q, top1, top5 in [("A-256", "A", "256", "256", "31.5", "11.0"), ("D-256-512", "D", "256:512", "384", "25.0", "8.5")]:
        rows.append({"profile": "paper", "dataset": "/data/imagenet", "dataset_images": "50000", "run": run, "config": config, "train_scale": scale,
                     "method": "dense", "test_scales": q, "flip": "True", "top1_err": top1, "top5_err": top5, "git_commit": "abc", "device": "cuda", "date": "2026-11-28T00:00:00Z"})
    upsert_rows(results / "table3.csv", rows)
    text = write_results_report("table3", "paper", results, tmp_path / "reports").read_text()
    assert not text.startswith("> **Toy-scale")
    lines = {line.split("|")[1].strip() + line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| A ") or line.startswith("| D ")}
    assert lines["A256"][4:] == ["31.5", "29.6", "+1.9", "11.0", "10.4", "+0.6"]
    assert lines["D[256;512]"][4:] == ["25.0", "25.6", "-0.6", "8.5", "8.1", "+0.4"]
    assert lines["D256"][4] == "-" and lines["D256"][5] == "27.0"  # not run yet: ours empty, paper shown
    assert "- dataset: `/data/imagenet` (50000 val images)" in text and "- commit: abc" in text
    with pytest.raises(ValueError, match="no smoke-profile results"):
        write_results_report("table3", "smoke", results, tmp_path / "reports")


def test_ablation_findings_state_the_direction(tmp_path):
    results = tmp_path / "results"
    base = {"profile": "smoke", "dataset": "d", "method": "dense", "flip": "True", "top5_err": "5"}
    upsert_rows(results / "ablations.csv", [
        {**base, "run": "A-256", "test_scales": "256", "top1_err": "40.0"},
        {**base, "run": "A-LRN-256", "test_scales": "256", "top1_err": "41.5"},
        {**base, "run": "B-256", "method": "centre-crop", "flip": "False", "test_scales": "256", "top1_err": "30"},
        {**base, "run": "B-5x5-256", "method": "centre-crop", "flip": "False", "test_scales": "256", "top1_err": "28"},
    ])
    text = write_results_report("ablations", "smoke", results, tmp_path / "reports").read_text()
    assert "A-LRN-256 vs A-256: +1.5 top-1, +0.0 top-5 on smoke, paper +0.1 / +0.1 (same direction in top-1)" in text
    assert "B-5x5-256 vs B-256: -2.0 top-1, +0.0 top-5 on smoke, paper +7.0 top-1 (opposite direction)" in text
    assert "D-256-glorot: not run yet" in text


def test_killed_runner_resumes_without_retraining_or_duplicates(ci_data, tmp_path):
    import signal
    import time

    command = [sys.executable, "-m", "vgg", "run", "table3", "--profile", "ci", "--data", str(ci_data), "--runs", str(tmp_path / "runs"),
               "--results", str(tmp_path / "results"), "--workers", "0", "--no-progress"]
    victim = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "runs" / "ci"
    deadline = time.monotonic() + 120
    while len(list(runs.glob("*/DONE"))) < 3 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    finished = {p.parent.name for p in runs.glob("*/DONE")}
    assert 3 <= len(finished) < 12, "the runner should be killed part-way"
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    retrained = {line.split("]")[0][1:] for line in result.stdout.splitlines() if "] training" in line}
    assert retrained.isdisjoint(finished) and len(retrained | finished) == 12
    rows = read_rows(tmp_path / "results" / "table3.csv")
    assert len(rows) == 12 and len({row["run"] for row in rows}) == 12
