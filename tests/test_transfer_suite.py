"""Appendix B through the suite: the experiment files' transfer entries, `make table11` and `make table12` at the ci
profile end to end (toy target sets, the suite's own ci nets), their reports and comparisons, the descriptor cache
reused by a second run, and the paper profile's inputs (dataset roots, torchvision's weights)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from vgg.suite.plan import load_catalog, load_experiment, plan_runs
from vgg.suite.reports import write_report
from vgg.suite.results_csv import read_rows
from vgg.suite.runner import ExperimentRunner
from vgg.suite.transfer_runs import TransferRunner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ci_transfer(ci_data, tmp_path_factory):
    """`make table11 table12` at the ci profile, in-process: the runner, its folder and the log of the first run."""
    folder = tmp_path_factory.mktemp("transfer")
    messages: list[str] = []
    runner = ExperimentRunner(profile="ci", data=str(ci_data), runs_root=folder / "runs", results_dir=folder / "results", workers=0,
                              progress=False, log=messages.append, jobs=1)
    runner.profile = replace(runner.profile, transfer_data=str(folder / "synthetic-transfer-ci"))  # not the repository's data/
    rows = {name: runner.run(load_experiment(name, runner.catalog)) for name in ("table11", "table12")}
    return runner, folder, rows, list(messages), messages


def test_ci_table11_end_to_end(ci_transfer):
    runner, folder, rows, first, _ = ci_transfer
    table11 = rows["table11"]
    assert [(row["transfer_set"], row["net"]) for row in table11] == [
        (dataset, net) for dataset in ("toy-multilabel", "toy-categories") for net in ("Net-D", "Net-E", "Net-D & Net-E", "Net-D, random weights")
    ]
    for row in table11:
        assert 0 <= row["value_lo"] <= row["value"] <= row["value_hi"] <= 100  # the intervals are shifted by the bootstrap's bias
        assert row["chosen_c"] and row["weights_sha256"]
    categories = [row for row in table11 if row["transfer_set"] == "toy-categories"]
    assert all(row["metric"] == "mean class recall" and len(row["per_split"].split()) == 3 and row["value_std"] != "" for row in categories)
    assert next(row for row in table11 if row["net"] == "Net-D & Net-E")["weights"].count(" + ") == 1
    written = read_rows(folder / "results" / "table11.csv")
    assert len(written) == len(table11) and written[0]["test_scales"] == "256|384|512|640|768" and written[0]["combine"] == "average"
    comparisons = read_rows(folder / "results" / "transfer_comparisons.csv")
    assert [(row["comparison"], row["transfer_set"]) for row in comparisons] == [
        ("transfer: stacking vs averaging scales (Caltech)", "toy-categories"), ("transfer: 5 vs 3 scales (VOC)", "toy-multilabel"),
    ]
    for row in comparisons:
        assert float(row["diff_lo"]) <= float(row["diff"]) <= float(row["diff_hi"])
        assert abs(float(row["diff"]) - (float(row["entry_value"]) - float(row["reference_value"]))) < 0.01
    # the training chain of the ci nets ran, and every net's descriptors of each part were extracted once
    assert any("[D-256-512] finished" in message or "training VGG-D at S=256:512" in message for message in first)
    features = sorted(path.name.split("__")[0] for path in (folder / "runs" / "ci" / "features").glob("*.pt"))
    # table11: 3 parts (trainval, test, all); table12: its images are table11's (read, not extracted again) and 2 parts of boxes
    assert features.count("Net-D") == 3 + 2 and features.count("Net-E") == 3 + 2


def test_a_second_run_reads_every_descriptor_file_and_scores_the_same(ci_transfer):
    runner, folder, rows, _, messages = ci_transfer
    messages.clear()
    experiment = load_experiment("table11", runner.catalog)
    again = TransferRunner(runner, experiment)  # what a second `make table11` builds: nets loaded, the random one drawn again
    for dataset in ("toy-multilabel", "toy-categories"):
        for member in ("Net-D", "Net-E", "Net-D, random weights"):
            for part in again.task(dataset).parts:
                again.raw(member, dataset, part)
    assert not any("descriptors of" in message for message in messages)  # the random net's key too: the same weights
    first = rows["table11"][0]
    setting = next(s for s in experiment.transfer.sets if s.dataset == first["transfer_set"]).setting
    assert again.result(first["net"], first["transfer_set"], setting, "image").value == pytest.approx(first["value"], abs=1e-3)


def test_ci_table12_image_and_box_rows(ci_transfer):
    _, _, rows, first, _ = ci_transfer
    extracted = [message for message in first if "toy-action" in message and "descriptors of" in message]
    assert extracted and all("-boxes:" in message for message in extracted)  # the whole images' descriptors are table11's
    table12 = rows["table12"]
    assert {(row["net"], row["features"]) for row in table12} >= {("Net-D & Net-E", "image"), ("Net-D & Net-E", "image+box")}
    fused = {row["features"]: row for row in table12 if row["net"] == "Net-D & Net-E"}
    assert fused["image"]["test_images"] == fused["image+box"]["test_images"] > 24  # persons (objects), not images


def test_the_reports_show_ours_beside_the_published_rows(ci_transfer):
    _, folder, _, _, _ = ci_transfer
    text = write_report("table11", folder / "reports", "ci", folder / "results").read_text()
    assert "Toy-scale run (ci profile)" in text
    for published in ("Chatfield et al. 2014", "Zeiler & Fergus 2013", "He et al. 2014", "Wei et al. 2014", "89.7", "86.2 +/- 0.3"):
        assert published in text
    assert "trained beats random outside both intervals" in text and "Appendix B: transfer (scales)" in text
    text12 = write_report("table12", folder / "reports", "ci", folder / "results").read_text()
    for published in ("Oquab et al. 2014", "Gkioxari et al. 2014", "Hoai 2014", "84.0"):
        assert published in text12


def test_the_paper_profile_needs_no_training_and_names_the_missing_roots(tmp_path):
    catalog = load_catalog()
    experiment = load_experiment("table11", catalog)
    assert plan_runs(experiment, catalog, profile="paper") == []
    assert [run.id for run in plan_runs(experiment, catalog, profile="smoke")][-1] == "E-256-512"
    runner = ExperimentRunner(profile="paper", runs_root=tmp_path / "runs", results_dir=tmp_path / "results", progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match=r"no dataset to evaluate at the paper profile; give the root of one of CALTECH101, CALTECH256, VOC2007, VOC2012"):
        runner.run(experiment)
    runner = ExperimentRunner(profile="paper", runs_root=tmp_path / "runs", progress=False, transfer_roots={"VOC2007": str(tmp_path / "nothing")})
    with pytest.raises(ValueError, match=r"no VOC2007 folder found in .*nothing"):
        runner.run(experiment)


def test_make_passes_the_dataset_roots_and_the_weights_folder():
    command = subprocess.run(
        ["make", "-n", "table11", "PROFILE=paper", "VOC2007=/d/voc", "CALTECH256=/d/caltech", "WEIGHTS=/w"], cwd=ROOT, capture_output=True, text=True,
    ).stdout
    assert "--transfer-data VOC2007=/d/voc" in command and "--transfer-data CALTECH256=/d/caltech" in command and "--weights-dir /w" in command


def test_the_toy_transfer_sets_of_a_profile_are_not_part_of_any_run_identity():
    from vgg.recipe.profiles import get_profile
    from vgg.training.identity import recipe

    smoke = get_profile("smoke")
    assert smoke.transfer_data and smoke.transfer_synthetic
    assert not {"transfer_data", "transfer_synthetic"} & (set(recipe(smoke, "D")) | set(recipe(smoke, "D", boxes=True)))


def test_the_paper_profile_names_what_is_missing(tmp_path):
    experiment = load_experiment("table11")
    runner = ExperimentRunner(profile="paper", runs_root=tmp_path / "runs", progress=False, transfer_roots={"VOC2008": "x"})
    with pytest.raises(ValueError, match=r"unknown transfer dataset VOC2008; give the roots of VOC2007, VOC2012, CALTECH101, CALTECH256"):
        runner.run(experiment)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "vgg16_bn-6c64b313.pth").write_bytes(b"")
    runner = ExperimentRunner(profile="paper", runs_root=tmp_path / "runs", progress=False, weights_dir=tmp_path / "weights")
    with pytest.raises(ValueError, match=r"no vgg16 weights in .*weights \(expected torchvision's vgg16-\*\.pth"):
        TransferRunner(runner, experiment).weights_file("vgg16")
