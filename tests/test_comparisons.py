"""Paired comparisons and verdicts: the verdict rule, a verdict that flips with the nets, and
`vgg run ablations --profile ci` end to end (comparisons.csv, seeds, the verdict table)."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vgg.evaluation.metrics import per_image_errors
from vgg.runtime.checkpoint import load_checkpoint
from vgg.suite.ablation_report import UNFINISHED_MARK, Finding, summary_table, unfinished_training
from vgg.suite.comparisons import AGREES, INCONCLUSIVE, NO_PAPER, OPPOSITE, SeedErrors, pair_rows, verdict
from vgg.suite.plan import ComparisonPair, EvalSpec
from vgg.suite.results_csv import read_rows
from tests.helpers_images import assert_drawn_figure

ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny nets: threads only contend (40x slower on a busy 2-core machine)


def test_verdict_rule():
    assert verdict(-2.0, -1.0, -1.7) == AGREES
    assert verdict(1.0, 2.0, -1.7) == OPPOSITE
    assert verdict(-1.0, 1.0, -1.7) == INCONCLUSIVE
    assert verdict(0.0, 2.0, 0.4) == INCONCLUSIVE  # an interval ending at 0 does not exclude it
    assert verdict(1.0, 2.0, None) == NO_PAPER and verdict(1.0, 2.0, 0.0) == NO_PAPER


def seed_errors(posteriors: torch.Tensor, labels: torch.Tensor) -> SeedErrors:
    top1, top5 = per_image_errors(posteriors, labels)
    return SeedErrors(top1[None], top5[None], [str(i) for i in range(len(labels))])


def test_a_paired_verdict_flips_when_the_nets_are_swapped():
    generator = torch.Generator().manual_seed(0)
    images, classes = 600, 10
    labels = torch.randint(0, classes, (images,), generator=generator)
    noise = torch.rand(images, classes, generator=generator)
    better, worse = noise.clone(), noise.clone()  # the same noise: the two nets' errors are correlated
    better[torch.arange(images), labels] += 0.9
    worse[torch.arange(images), labels] += 0.5
    pair = ComparisonPair("depth", EvalSpec("D-256", "dense", (256,)), EvalSpec("B-256", "dense", (256,)))
    paper = -1.7  # the paper: D's error is lower than B's
    papers = {"top1": paper, "top5": None}
    (row,) = pair_rows(pair, pair.reference, seed_errors(better, labels), seed_errors(worse, labels), {}, papers)
    assert row["top1_diff_lo"] <= row["top1_diff"] < row["top1_diff_hi"] < 0
    assert verdict(row["top1_diff_lo"], row["top1_diff_hi"], paper) == AGREES == row["top1_verdict"]
    assert (row["paper_top1_diff"], row["top5_verdict"], row["provisional"]) == (paper, NO_PAPER, True)  # one seed: provisional
    (swapped,) = pair_rows(pair, pair.reference, seed_errors(worse, labels), seed_errors(better, labels), {}, papers)
    assert swapped["top1_diff"] == -row["top1_diff"] and swapped["top1_diff_lo"] > 0
    assert verdict(swapped["top1_diff_lo"], swapped["top1_diff_hi"], paper) == OPPOSITE == swapped["top1_verdict"]
    assert row["entry"] == "D-256" and row["reference"] == "B-256" and row["seed"] == "0" and row["images"] == images
    with pytest.raises(ValueError, match="other images"):
        pair_rows(pair, pair.reference, seed_errors(better, labels), seed_errors(worse[:-1], labels[:-1]), {}, papers)


def test_a_pair_with_a_net_that_did_not_finish_training_is_marked_in_the_summary():
    trained = {
        "A-256": {"epochs": "24", "drop_epochs": "17|20", "stopped": "max_epochs"},
        "B-256": {"epochs": "24", "drop_epochs": "16|20|23", "stopped": "max_epochs"},
        "B-5x5-256": {"epochs": "24", "drop_epochs": "", "stopped": "max_epochs"},
        "D-256-glorot": {"epochs": "6", "drop_epochs": "", "stopped": "at chance"},
    }

    class View:
        def find_entry(self, entry):
            return trained.get(entry.run)

    def finding(entry: str, reference: str) -> tuple[SimpleNamespace, Finding]:
        pair = ComparisonPair("c", EvalSpec(entry, "dense", (256,)), EvalSpec(reference, "dense", (256,)))
        return SimpleNamespace(name="c"), Finding(pair, None, {"top1": None, "top5": None})

    assert unfinished_training(trained["A-256"]) is None and unfinished_training({"epochs": ""}) is None  # no training columns: not judged
    assert unfinished_training(trained["D-256-glorot"]) == "stopped at chance"
    table = summary_table([finding("B-256", "A-256"), finding("B-5x5-256", "B-256"), finding("D-256-glorot", "A-256")], View())
    rows = [line for line in table.splitlines() if line.startswith("| ") and " vs " in line]
    assert [UNFINISHED_MARK in row for row in rows] == [False, True, True]
    assert "B-5x5-256 never left its first learning rate in 24 epochs; D-256-glorot stopped at chance" in table


MINI = """title = "two seeds"
[[ablation]]
name = "LRN, two seeds"
evaluation = [{ run = "A-256" }, { run = "A-LRN-256" }]
[[ablation]]
name = "fusion, two seeds"
pairs = "best-member"
evaluation = [{ fusion = ["A-256", "A-LRN-256"], method = "dense", scales = "single" }]
"""


def test_ci_ablations_end_to_end_write_comparisons_and_the_verdict_table(ci_data, tmp_path):
    common = ["--profile", "ci", "--data", str(ci_data), "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--workers", "0", "--no-progress"]
    result = subprocess.run([sys.executable, "-m", "vgg", "run", "ablations", *common, "--jobs", "1"], cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    comparisons = read_rows(tmp_path / "results" / "comparisons.csv")
    assert len(comparisons) == 40 and {row["seed"] for row in comparisons} == {"0"} and {row["images"] for row in comparisons} == {"24"}
    assert {row["provisional"] for row in comparisons} == {"True"}  # one seed: every verdict provisional
    depth = next(row for row in comparisons if row["pair"] == "D-256 vs B-256")
    assert depth["paper_top1_diff"] == "-1.7" and depth["top1_verdict"] == verdict(float(depth["top1_diff_lo"]), float(depth["top1_diff_hi"]), -1.7)
    for row in comparisons:
        for metric in ("top1", "top5"):
            assert float(row[f"{metric}_diff_lo"]) <= float(row[f"{metric}_diff"]) <= float(row[f"{metric}_diff_hi"]), row
            assert float(row[f"{metric}_diff"]) == pytest.approx(float(row[f"entry_{metric}_err"]) - float(row[f"reference_{metric}_err"]), abs=2e-3)
    results = read_rows(tmp_path / "results" / "ablations.csv")
    assert {(r["run"], r["method"]) for r in results} >= {("D-256-512", "multi-crop"), ("E-256-512", "multi-crop+dense"), ("D-256-512+E-256-512", "dense")}
    assert "D-256+D-384+D-256-512-fc+C-256+C-384+E-256+E-384" in {r["run"] for r in results}  # the 7 nets, with the FC-only D
    fc_only, parent, all_layers = (load_checkpoint(tmp_path / "runs" / "ci" / run)["model"] for run in ("D-256-512-fc", "D-384", "D-256-512"))
    assert all(torch.equal(fc_only[key], parent[key]) for key in parent if key.startswith("features."))  # its conv layers are D-384's
    assert not torch.equal(fc_only["classifier.0.weight"], parent["classifier.0.weight"]) and not torch.equal(all_layers["features.0.weight"], parent["features.0.weight"])
    assert all(float(r["top1_err_lo"]) <= float(r["top1_err"]) <= float(r["top1_err_hi"]) for r in results)
    best = next(r for r in comparisons if r["pair"] == "post-submission D+E, multi-crop vs its best member")
    members = {r["run"]: float(r["top1_err"]) for r in results if r["method"] == "multi-crop" and r["run"] in ("D-256-512", "E-256-512")}
    assert best["reference"] == min(members, key=members.get) and float(best["reference_top1_err"]) == members[best["reference"]]

    report = subprocess.run([sys.executable, "-m", "vgg", "report", "ablations", "--profile", "ci", "--results", str(tmp_path / "results"),
                             "--out-dir", str(tmp_path / "reports")], cwd=ROOT, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "reports" / "ablations.md").read_text()
    first_section = text.index("\n## ", text.index("## Summary") + 1)
    summary = [line for line in text[:first_section].splitlines() if line.startswith("| ")]
    assert text.index("## Summary") < first_section and "verdict (top-1)" in summary[0] and len(summary) == 1 + 40
    # every verdict provisional; "no paper figure" is no verdict to confirm
    assert all(any(f"{v} (provisional)" in line for v in (AGREES, OPPOSITE, INCONCLUSIVE)) or line.count(NO_PAPER) == 2 for line in summary[1:])
    assert f"{NO_PAPER} (provisional)" not in text
    assert "every verdict is **provisional**" in text and "![our paired differences" in text
    assert_drawn_figure(tmp_path / "reports" / "ablations.png")

    # a second seed: only the seed-1 runs train (from their own seed's parents); aggregate rows and comparisons over both seeds appear
    (tmp_path / "mini.toml").write_text(MINI)
    seeded = subprocess.run([sys.executable, "-m", "vgg", "run", str(tmp_path / "mini.toml"), *common, "--seeds", "2", "--jobs", "1"], cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD, timeout=600)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    trained = sorted(line.split("]")[0][1:] for line in seeded.stdout.splitlines() if "] training" in line)
    assert trained == ["A-256-seed1", "A-LRN-256-seed1"]
    rows = {(r["run"], r["seed"]): r for r in read_rows(tmp_path / "results" / "mini.csv")}
    mean = rows[("A-256", "mean")]
    assert mean["seeds"] == "2" and float(mean["top1_err"]) == pytest.approx((float(rows[("A-256", "0")]["top1_err"]) + float(rows[("A-256", "1")]["top1_err"])) / 2, abs=2e-3)
    assert float(mean["top1_err_std"]) >= 0 and float(mean["top1_err_lo"]) <= float(mean["top1_err"]) <= float(mean["top1_err_hi"])
    assert ("A-256+A-LRN-256", "mean") in rows
    lrn = {r["seed"]: r for r in read_rows(tmp_path / "results" / "comparisons.csv") if r["comparison"] == "LRN, two seeds"}
    assert set(lrn) == {"0", "1", "mean"} and lrn["mean"]["seeds"] == "2"
    assert [lrn[seed]["provisional"] for seed in ("0", "1", "mean")] == ["True", "True", "False"]  # two seeds: the mean's verdict stands
    assert float(lrn["mean"]["top1_diff"]) == pytest.approx((float(lrn["0"]["top1_diff"]) + float(lrn["1"]["top1_diff"])) / 2, abs=2e-3)
