"""Reports of results beside the paper (`vgg.suite.table_reports`, `vgg.suite.ablation_report`,
`vgg.suite.report_parts`), rendered from hand-made results CSVs."""

import pytest

from tests.helpers_images import assert_drawn_figure
from vgg.suite.comparisons import upsert_comparisons
from vgg.suite.results_csv import upsert_rows
from vgg.suite.runner import ExperimentRunner
from vgg.suite.table_reports import write_results_report


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
        {**pair, "seeds": "3", "comparison": "fusion", "pair": "post-submission D+E, dense vs its best member", "reference": "E-256-512",
         "top1_diff": "-1.0", "top1_diff_lo": "-2.0", "top1_diff_hi": "-0.1"},
    ])
    text = write_results_report("ablations", "smoke", results, tmp_path / "reports").read_text()
    assert text.startswith("> **Toy-scale run (smoke profile)") and "Chance: 98.0% top-1, 90.0% top-5 error (50 classes)." in text.splitlines()[0]
    summary = text[text.index("## Summary"):text.index("## LRN")]
    rows = {cells[1]: cells for cells in ([c.strip() for c in line.split("|")[1:-1]] for line in summary.splitlines() if line.startswith("| "))}
    assert rows["A-LRN-256 vs A-256"] == ["LRN", "A-LRN-256 vs A-256", "+1.5 [+0.3, +2.7]", "+0.1", "agrees with the paper (provisional)",
                                          "+0.0 [-0.4, +0.4]", "+0.1", "inconclusive at this size (provisional)"]
    assert rows["B-5x5-256 vs B-256"][2:] == ["-2.0 [-3.1, -0.9]", "+7.0", "opposite to the paper (provisional)", "+0.0 [-0.4, +0.4]", "-", "no paper figure"]
    assert rows["B-256 vs A-256"][4] == "inconclusive at this size (provisional)" and rows["D-256-glorot vs D-256"][3:5] == ["-", "no paper figure"]
    # three seeds: a verdict, not a provisional one; the best member named; the paper's difference: D+E dense 24.0 (Table 6) - E multi-scale dense 24.8 (Table 4)
    assert rows["post-submission D+E, dense vs its best member (E-256-512)"][3:5] == ["-0.8", "agrees with the paper"]
    assert rows["D-256 vs B-256"][2:] == ["not run yet", "-1.7", "not run yet", "not run yet", "-1.1", "not run yet"]
    assert "  - A-LRN-256 vs A-256: top-1 +1.5 [+0.3, +2.7], paper +0.1: agrees with the paper (provisional); top-5 +0.0 [-0.4, +0.4], paper +0.1: inconclusive" in text
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


def test_the_training_table_marks_the_drops_a_deadline_forced(tmp_path):
    from vgg.runtime.checkpoint import write_done

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
