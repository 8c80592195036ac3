"""SLURM submission (vgg.suite.slurm): the same plan as sbatch jobs, each chained after its parents."""

import os

from tests.test_runner import runner
from vgg.suite.plan import load_catalog, load_experiment, plan_runs
from vgg.suite.slurm import submit


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
