"""The experiment suite: plan expansion against the paper's tables, seeds, skip/resume, upsert
keys, the lock, SLURM submission, report rendering, and the ci-profile chain end to end."""

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from tests.helpers_images import assert_drawn_figure
from vgg.checkpoint import read_done
from vgg.suite.comparisons import upsert_comparisons
from vgg.suite.plan import TABLES, load_catalog, load_experiment, plan_runs
from vgg.suite.results_csv import read_rows, upsert_rows
from vgg.suite.table_reports import write_results_report
from vgg.suite.runner import ExperimentRunner, computed_in_bf16
from vgg.suite.slurm import submit

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
    # the submission's multi-scale D was fine-tuned on its FC layers only (Sect. 4.4): D-256-512-fc, not D-256-512
    assert [m.run for m in fusions[0].members] == ["D-256", "D-384", "D-256-512-fc", "C-256", "C-384", "E-256", "E-384"]
    assert catalog["D-256-512-fc"].freeze == "features" and catalog["D-256-512-fc"].parent == "D-384" and catalog["D-256-512"].freeze == "none"
    assert fusions[0].members[2].scales == (256, 384, 512) and [m.run for m in fusions[1].members] == ["D-256-512", "E-256-512"]
    assert fusions[0].members[1].scales == (352, 384, 416)
    assert [f.method for f in fusions] == ["dense", "dense", "multi-crop", "multi-crop+dense"]


def test_the_makefile_has_a_target_for_each_experiment_file():
    made = subprocess.run(["make", "--no-print-directory", "--eval", "tables: ; @echo $(RESULT_TABLES)", "tables"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tuple(made.stdout.split()) == TABLES == ("table3", "table4", "table5", "table6", "table7", "ablations")


def test_init_chains_and_training_order(catalog):
    assert catalog["D-256"].parent == "A-256" and catalog["D-384"].parent == "D-256" and catalog["D-256-512"].parent == "D-384"
    assert catalog["A-256"].parent is None and catalog["E-256-gaussian"].init == "paper" and catalog["D-256"].init == "from:A-256"
    order = [run.id for run in plan_runs(load_experiment("table5", catalog), catalog)]
    assert order == ["A-256", "D-256", "D-384", "D-256-512", "E-256", "E-384", "E-256-512"]
    for name in TABLES:
        runs = plan_runs(load_experiment(name, catalog), catalog)
        ids = [r.id for r in runs]
        assert all(r.parent is None or ids.index(r.parent) < ids.index(r.id) for r in runs), name


def test_seeds_expand_into_runs_with_their_own_init_chains(ci_data, tmp_path, catalog):
    experiment = load_experiment("table5", catalog)
    assert plan_runs(experiment, catalog, seeds=1) == plan_runs(experiment, catalog)
    runs = plan_runs(experiment, catalog, seeds=3)
    assert [r.id for r in runs[:7]] == ["A-256", "D-256", "D-384", "D-256-512", "E-256", "E-384", "E-256-512"]
    assert [r.id for r in runs[7:14]] == ["A-256-seed1", "D-256-seed1", "D-384-seed1", "D-256-512-seed1", "E-256-seed1", "E-384-seed1", "E-256-512-seed1"]
    seeded = {r.id: r for r in runs}
    assert seeded["D-384-seed2"].parent == "D-256-seed2" and seeded["D-256-seed2"].parent == "A-256-seed2" and seeded["A-256-seed2"].init == "random"
    assert seeded["D-384-seed2"].catalog_id == "D-384" and seeded["D-384-seed2"].seed == 2 and seeded["D-384"].seed == 0
    ids = [r.id for r in runs]
    assert all(r.parent is None or ids.index(r.parent) < ids.index(r.id) for r in runs)
    # seed 0 trains exactly as before seeds existed (same folder, same run hash); seed k trains with seed k from its own parent
    local = runner(ci_data, tmp_path, seeds=3)
    first, second = local.train_config(seeded["D-384"]), local.train_config(seeded["D-384-seed2"])
    assert local.run_dir("D-384") == tmp_path / "runs" / "ci" / "D-384" and first.seed == 0 and first.init == f"from:{tmp_path / 'runs' / 'ci' / 'D-256'}"
    assert first.run_hash() == runner(ci_data, tmp_path).train_config(catalog["D-384"]).run_hash()
    assert second.seed == 2 and second.init == f"from:{tmp_path / 'runs' / 'ci' / 'D-256-seed2'}" and second.run_hash() != first.run_hash()
    spec = experiment.evaluations[0]
    assert local.scores_path(spec).name == f"{spec.key}.pt" and local.scores_path(spec, 2).name == f"{spec.key}__seed2.pt"
    with pytest.raises(ValueError, match="at least 1"):
        plan_runs(experiment, catalog, seeds=0)


def test_ablations_cover_the_papers_comparisons(catalog):
    ablations = {a.name: a for a in load_experiment("ablations", catalog).ablations}
    pairs = {name: [p.label for p in a.pairs()] for name, a in ablations.items()}
    assert pairs["depth"] == ["B-256 vs A-256", "D-256 vs B-256", "E-256 vs D-256"]
    assert pairs["1x1 vs 3x3"] == ["D-256 vs C-256", "D-384 vs C-384", "D-256-512 vs C-256-512"]
    assert pairs["extra non-linearity (C vs B)"] == ["C-256 vs B-256"]
    assert pairs["training scale"] == [f"{x}-256-512 vs {x}-{s}" for x in "CDE" for s in ("256", "384")]
    assert len(pairs["test scale"]) == 10 and pairs["test scale"][0] == "B-256 Q=224,256,288 vs B-256 Q=256"
    assert pairs["evaluation method"][:3] == [
        "D-256-512 multi-crop vs D-256-512 dense", "D-256-512 multi-crop+dense vs D-256-512 dense", "D-256-512 multi-crop+dense vs D-256-512 multi-crop",
    ]
    assert pairs["fusion"][1] == "post-submission D+E, dense vs its best member" and len(pairs["fusion"]) == 4
    # B-5x5 (random init) against B from the same init, and against B-256 (from A: confounded)
    assert pairs["B vs B-5x5"] == ["B-5x5-256 vs B-256-glorot", "B-5x5-256 vs B-256"]
    assert catalog["B-256-glorot"].init == "glorot" == catalog["B-5x5-256"].init and catalog["B-256"].parent == "A-256"
    assert sum(map(len, pairs.values())) == 40
    fusion = ablations["fusion"].entries[0]
    assert [m.run for m in fusion.members] == ["D-256", "D-384", "D-256-512-fc", "C-256", "C-384", "E-256", "E-384"] and fusion.members[1].scales == (352, 384, 416)


def test_bad_experiment_files_are_clear_errors(tmp_path, catalog):
    bad = tmp_path / "bad.toml"
    cases = [
        ('[[evaluation]]\nrun = "Z-256"\n', "unknown run 'Z-256'"),
        ('[[evaluation]]\nrun = "A-256"\nscales = "many"\n', 'scales must be "single", "multi"'),
        ('[[ablation]]\nname = "x"\npairs = "random"\nevaluation = [{ run = "A-256" }, { run = "B-256" }]\n', "pairs must be one of baseline, successive, all, best-member"),
        ('[[ablation]]\nname = "x"\npairs = "best-member"\nevaluation = [{ run = "A-256" }]\n', "every entry must be a fusion"),
        ('[[ablation]]\nname = "x"\ngroups = [[{ run = "A-256" }]]\n', "at least two entries"),
    ]
    for text, message in cases:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_experiment(bad, catalog)
    with pytest.raises(ValueError, match="experiment file .*table9.toml does not exist"):
        load_experiment("table9", catalog)
    runs = tmp_path / "runs.toml"
    run_x = '[X]\nconfig = "A"\ntrain_scale = "256"\n'
    catalog_cases = [
        (run_x + 'init = "from:Y"\n[Y]\nconfig = "A"\ntrain_scale = "256"\ninit = "from:X"\n', "loops"),
        (run_x + 'init = "Y"\n', "run X has init = 'Y'; init is random, paper, glorot or from:<run id> \\(a parent run is written from:Y\\)"),
        (run_x + 'init = "from:Y"\n', "run X starts from 'from:Y', but 'Y' is not a run of runs.toml"),
        (run_x + 'init = "weights:torchvision:vgg16"\n', "run X has init = 'weights:torchvision:vgg16'; a catalogue run's init is random"),
        (run_x + 'freez = "features"\n', "run X has unknown key\\(s\\) freez; known: config, train_scale, init, freeze, lrn_alpha"),
        (run_x + 'freeze = "conv"\n', "run X has freeze = 'conv'; choose one of none, features"),
        ('[A]\nconfig = "A"\ntrain_scale = "256"\n[X]\nconfig = "B"\ntrain_scale = "256"\ninit = "from:A"\nfreeze = "features"\n',
         "run X has freeze = 'features', which fine-tunes a trained net: its init must be a run of configuration B"),
        (run_x + "lrn_alpha = 1e-4\n", "run X sets lrn_alpha, but configuration A has no LRN"),
    ]
    for text, message in catalog_cases:
        runs.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_catalog(runs)


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
    others = [{**base, name: value} for name, value in (("profile", "paper"), ("dataset", "d2"), ("run", "B-256"), ("method", "multi-crop"),
                                                         ("test_scales", "224|256|288"), ("flip", "False"), ("seed", "1"))]
    upsert_rows(path, [base, *others])
    upsert_rows(path, [{**base, "top1_err": "49"}])
    rows = read_rows(path)
    assert len(rows) == 8 and rows[0]["top1_err"] == "49" and [r["top1_err"] for r in rows[1:]] == ["50"] * 7
    # a row from before seeds (no seed column) is seed 0's; other seeds and the mean are rows of their own
    old = tmp_path / "old.csv"
    old.write_text("profile,dataset,run,method,test_scales,flip,top1_err\nsmoke,d,A-256,dense,256,True,50\n")
    upsert_rows(old, [{**base, "seed": 0, "top1_err": "48"}, {**base, "seed": 1, "top1_err": "47"}, {**base, "seed": "mean", "top1_err": "47.5"}])
    assert [(r["seed"], r["top1_err"]) for r in read_rows(old)] == [("0", "48"), ("1", "47"), ("mean", "47.5")]


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
    assert trained == ["[E-256-512] training VGG-E at S=256:512 (init: from:E-384)"]
    assert {p: (tmp_path / "runs" / "ci" / p / "checkpoint.pt").stat().st_mtime_ns for p in stamps} == stamps
    assert len(read_rows(tmp_path / "results" / "table3.csv")) == 12  # upserted, not duplicated
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
    jobs = submit(
        runner(ci_data, tmp_path, launch="slurm", gpus=4, slurm_args="--partition=gpu --time=72:00:00"),
        load_experiment("table5"), plan_runs(load_experiment("table5"), load_catalog()),
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
    again = submit(runner(ci_data, tmp_path, launch="slurm"), load_experiment("table5"), plan_runs(load_experiment("table5"), load_catalog()))
    assert again["D-384"] == "103" and again["evaluate"] == "109" and len(log.read_text().splitlines()) == 9
    # with seeds, each seed's chain waits on its own parents, and the evaluation job runs every seed
    seeded = submit(runner(ci_data, tmp_path / "seeded", launch="slurm", seeds=2), load_experiment("table5"),
                    plan_runs(load_experiment("table5"), load_catalog(), seeds=2))
    assert list(seeded)[7:] == ["A-256-seed1", "D-256-seed1", "D-384-seed1", "D-256-512-seed1", "E-256-seed1", "E-384-seed1", "E-256-512-seed1", "evaluate"]
    lines = {line.split()[0]: line for line in log.read_text().splitlines()}
    assert f"--dependency=afterok:{seeded['A-256-seed1']} " in lines[seeded["D-256-seed1"]]
    assert f"--dependency=afterok:{seeded['D-256-seed1']} " in lines[seeded["D-384-seed1"]]
    script = (tmp_path / "seeded" / "runs" / "ci" / "D-384-seed1" / "slurm.sh").read_text()
    assert "--seed 1" in script and f"--init from:{tmp_path / 'seeded' / 'runs' / 'ci' / 'D-256-seed1'}" in script
    assert "--seeds 2" in (tmp_path / "seeded" / "runs" / "ci" / "evaluate-table5.sh").read_text()
    assert "--precision fp32" in (tmp_path / "seeded" / "runs" / "ci" / "evaluate-table5.sh").read_text()  # the profile's


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
    base = {"profile": "smoke", "dataset": "d", "method": "dense", "flip": "True", "top5_err": "5", "classes": "50"}
    upsert_rows(results / "ablations.csv", [
        {**base, "run": "A-256", "test_scales": "256", "top1_err": "40.0", "top1_err_lo": "38.0", "top1_err_hi": "42.0"},
        {**base, "run": "A-LRN-256", "test_scales": "256", "top1_err": "41.5"},
        {**base, "run": "B-256", "method": "centre-crop", "flip": "False", "test_scales": "256", "top1_err": "30"},
        {**base, "run": "B-5x5-256", "method": "centre-crop", "flip": "False", "test_scales": "256", "top1_err": "28"},
    ])
    pair = {"profile": "smoke", "dataset": "d", "seed": "0", "seeds": "1", "top5_diff": "0.0", "top5_diff_lo": "-0.4", "top5_diff_hi": "0.4"}
    upsert_comparisons(results, [
        {**pair, "comparison": "LRN", "pair": "A-LRN-256 vs A-256", "top1_diff": "1.5", "top1_diff_lo": "0.3", "top1_diff_hi": "2.7"},
        {**pair, "comparison": "B vs B-5x5", "pair": "B-5x5-256 vs B-256", "top1_diff": "-2.0", "top1_diff_lo": "-3.1", "top1_diff_hi": "-0.9"},
        {**pair, "comparison": "depth", "pair": "B-256 vs A-256", "top1_diff": "-0.5", "top1_diff_lo": "-1.5", "top1_diff_hi": "0.5"},
        {**pair, "comparison": "initialisation (D)", "pair": "D-256-glorot vs D-256", "top1_diff": "3.0", "top1_diff_lo": "1.0", "top1_diff_hi": "5.0"},
        {**pair, "comparison": "fusion", "pair": "post-submission D+E, dense vs its best member", "reference": "E-256-512",
         "top1_diff": "-1.0", "top1_diff_lo": "-2.0", "top1_diff_hi": "-0.1"},
    ])
    text = write_results_report("ablations", "smoke", results, tmp_path / "reports").read_text()
    assert text.startswith("> **Toy-scale run (smoke profile)") and "Chance: 98.0% top-1, 90.0% top-5 error (50 classes)." in text.splitlines()[0]
    summary = text[text.index("## Summary"):text.index("## LRN")]
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in summary.splitlines() if line.startswith("| "))}
    assert rows["A-LRN-256 vs A-256"] == ["LRN", "A-LRN-256 vs A-256", "+1.5 [+0.3, +2.7]", "+0.1", "agrees with the paper",
                                          "+0.0 [-0.4, +0.4]", "+0.1", "inconclusive at this size"]
    assert rows["B-5x5-256 vs B-256"][2:] == ["-2.0 [-3.1, -0.9]", "+7.0", "opposite to the paper", "+0.0 [-0.4, +0.4]", "-", "no paper figure"]
    assert rows["B-256 vs A-256"][4] == "inconclusive at this size" and rows["D-256-glorot vs D-256"][3:5] == ["-", "no paper figure"]
    # the best member named; the paper's difference: D+E dense 24.0 (Table 6) - E multi-scale dense 24.8 (Table 4)
    assert rows["post-submission D+E, dense vs its best member (E-256-512)"][3:5] == ["-0.8", "agrees with the paper"]
    assert rows["D-256 vs B-256"][2:] == ["not run yet", "-1.7", "not run yet", "not run yet", "-1.1", "not run yet"]
    assert "  - A-LRN-256 vs A-256: top-1 +1.5 [+0.3, +2.7], paper +0.1: agrees with the paper; top-5 +0.0 [-0.4, +0.4], paper +0.1: inconclusive" in text
    assert "| A-256     | dense    | 256      | 40.0 [38.0, 42.0] " in text


def test_reports_show_intervals_and_aggregate_seeds(tmp_path):
    results = tmp_path / "results"
    base = {"profile": "paper", "dataset": "/data/imagenet", "dataset_images": "50000", "classes": "1000", "method": "dense", "flip": "True",
            "git_commit": "abc", "device": "cuda", "date": "2026-11-28T00:00:00Z"}
    a256 = {**base, "run": "A-256", "config": "A", "train_scale": "256", "test_scales": "256"}
    upsert_rows(results / "table3.csv", [
        {**a256, "seed": "0", "top1_err": "31.0", "top5_err": "11.0", "top1_err_lo": "30.6", "top1_err_hi": "31.4", "top5_err_lo": "10.7", "top5_err_hi": "11.3"},
        {**a256, "seed": "1", "top1_err": "32.0", "top5_err": "11.2", "top1_err_lo": "31.6", "top1_err_hi": "32.4", "top5_err_lo": "10.9", "top5_err_hi": "11.5"},
        {**a256, "seed": "mean", "seeds": "2", "top1_err": "31.5", "top5_err": "11.1", "top1_err_std": "0.71", "top5_err_std": "0.14",
         "top1_err_lo": "30.7", "top1_err_hi": "32.3", "top5_err_lo": "10.8", "top5_err_hi": "11.4"},
        {**base, "run": "D-256", "config": "D", "train_scale": "256", "test_scales": "256", "seed": "0", "top1_err": "27.0", "top5_err": "8.8",
         "top1_err_lo": "26.6", "top1_err_hi": "27.4", "top5_err_lo": "8.5", "top5_err_hi": "9.1"},
    ])
    text = write_results_report("table3", "paper", results, tmp_path / "reports").read_text()
    lines = {line.split("|")[1].strip() + line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")}
    assert lines["A256"][4:] == ["31.5 [30.7, 32.3] ± 0.7 (2 seeds)", "29.6", "+1.9", "11.1 [10.8, 11.4] ± 0.1 (2 seeds)", "10.4", "+0.7"]
    assert lines["D256"][4:7] == ["27.0 [26.6, 27.4]", "27.0", "+0.0"]
    assert "- chance: 99.9% top-1, 99.5% top-5 error (1000 classes)" in text and "- seeds: 2; each of our errors is the mean over the seeds" in text
    assert_drawn_figure(tmp_path / "reports" / "table3.png")


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


def test_the_training_table_marks_the_drops_a_deadline_forced(tmp_path):
    from vgg.checkpoint import write_done

    runner = ExperimentRunner(profile="smoke", data=str(tmp_path), runs_root=tmp_path / "runs", results_dir=tmp_path / "results", workers=0, progress=False)
    run_dir = runner.run_dir("C-256")
    run_dir.mkdir(parents=True)
    write_done(run_dir, {"epochs": 24, "steps": 3744, "drop_epochs": [17, 20, 22], "deadline_drop_epochs": [17, 20], "final_lr": 1e-5,
                         "train_loss": 0.5, "stopped": "max_epochs", "paper_length_ratio": 0.00253})
    summary = runner.training_summary("C-256")
    assert summary["drop_epochs"] == "17*|20*|22" and summary["paper_length_ratio"] == 0.00253
    row = {"profile": "smoke", "dataset": "d", "run": "C-256", "config": "C", "train_scale": "256", "method": "dense", "test_scales": "256",
           "flip": "True", "top1_err": "20.0", "top5_err": "1.0", "classes": "50", **{k: str(v) for k, v in summary.items()}}
    upsert_rows(tmp_path / "results" / "table3.csv", [row])
    training = write_results_report("table3", "smoke", tmp_path / "results", tmp_path / "reports").read_text().split("## How each net trained")[1]
    assert "| 17*, 20*, 22 " in training and "A drop marked * was forced by the profile's drop deadline" in training
    assert "× paper's 370K x 256 images" in training and "| 0.00253 " in training
    upsert_rows(tmp_path / "results" / "ablations.csv", [row])  # the ablations report lists how its nets trained too
    ablations = write_results_report("ablations", "smoke", tmp_path / "results", tmp_path / "reports").read_text()
    assert "| 17*, 20*, 22 " in ablations.split("## How each net trained")[1]


def test_table7_prints_googlenets_one_number_in_both_top5_columns(tmp_path):
    results = tmp_path / "results"
    upsert_rows(results / "table7.csv", [{"profile": "paper", "dataset": "/data/imagenet", "dataset_images": "50000", "run": "E-256-512", "config": "E",
                                          "train_scale": "256:512", "method": "multi-crop+dense", "test_scales": "256|384|512", "flip": "True",
                                          "top1_err": "24.0", "top5_err": "7.0", "git_commit": "abc", "device": "cuda", "date": "2026-11-28T00:00:00Z"}])
    text = write_results_report("table7", "paper", results, tmp_path / "reports").read_text()
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| "))}
    assert rows["GoogLeNet (Szegedy et al. 2014) 1 net"][3:] == ["7.9†", "7.9†"]
    assert rows["GoogLeNet (Szegedy et al. 2014) 7 nets"][3:] == ["6.7†", "6.7†"]
    assert rows["MSRA (He et al. 2014) 1 net"][3:] == ["9.1", "9.1"]  # separate figures stay as printed
    assert "† one number in the paper, printed across its top-5 val. and test columns." in text


def test_score_files_made_in_bf16_are_recognised_for_redoing_in_fp32():
    assert computed_in_bf16({"precision": "bf16", "device": "cuda:0"})
    assert not computed_in_bf16({"precision": "fp32", "device": "cuda:0"})
    assert computed_in_bf16({"device": "cuda:0"})  # before the precision was recorded, CUDA evaluation was always bf16
    assert not computed_in_bf16({"device": "cpu"})
