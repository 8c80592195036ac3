"""Appendix A through the suite: the localisation runs of the catalogue, their training from a classification
parent, `make table8` at the ci profile end to end, its report and its comparisons."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vgg.data.datasets import load_split
from vgg.recipe.profiles import get_profile
from vgg.runtime.checkpoint import load_checkpoint
from vgg.suite.plan import load_catalog, load_experiment, plan_runs
from vgg.suite.reports import write_report
from vgg.suite.results_csv import read_rows
from vgg.suite.runner import ExperimentRunner
from vgg.training.identity import recipe
from vgg.training.run_config import TrainConfig
from vgg.training.train import train

ROOT = Path(__file__).resolve().parent.parent


def test_the_catalogue_chains_each_localisation_net_to_the_classification_net_of_its_scale(catalog):
    runs = plan_runs(load_experiment("table8", catalog), catalog)
    assert [run.id for run in runs][:3] == ["A-256", "D-256", "D-384"]
    localisation = {run.id: run for run in runs if run.regression != "none"}
    assert set(localisation) == {"D-384-loc-scr-fc", "D-384-loc-pcr-fc", "D-384-loc-pcr"}
    assert {run.parent for run in localisation.values()} == {"D-384"}
    assert (localisation["D-384-loc-scr-fc"].regression, localisation["D-384-loc-scr-fc"].freeze) == ("scr", "features")
    assert (localisation["D-384-loc-pcr"].regression, localisation["D-384-loc-pcr"].freeze) == ("pcr", "none")
    assert catalog["D-256-loc-pcr"].parent == "D-256"


def test_a_localisation_run_must_start_from_a_classification_net_of_its_configuration(tmp_path):
    catalogue = tmp_path / "runs.toml"
    catalogue.write_text('[A-256]\nconfig = "A"\ntrain_scale = "256"\n\n[D-loc]\nconfig = "D"\ntrain_scale = "256"\ninit = "from:A-256"\nregression = "pcr"\n')
    with pytest.raises(ValueError, match=r"D-loc has regression = 'pcr': its init must be a classification run of configuration D"):
        load_catalog(catalogue)
    catalogue.write_text('[A-256]\nconfig = "A"\ntrain_scale = "256"\nregression = "boxes"\n')
    with pytest.raises(ValueError, match="regression"):
        load_catalog(catalogue)


def test_the_box_length_of_a_profile_is_in_the_recipe_of_box_regressors_only():
    smoke = replace(get_profile("smoke"), box_train_images=12345)
    assert "box_train_images" not in recipe(smoke, "D")
    assert recipe(smoke, "D", boxes=True)["box_train_images"] == 12345
    assert smoke.epoch_limit(True, 1000, boxes=True) == 12 and smoke.epoch_limit(True, 1000) == round(smoke.finetune_train_images / 1000)


def test_a_box_regressor_takes_every_layer_but_the_last_from_its_parent(ci_data, ci_checkpoint, tmp_path):
    out = tmp_path / "A-loc"
    cfg = TrainConfig(config="A", train_scale="256", data=str(ci_data), profile="ci", init=f"from:{ci_checkpoint}", regression="pcr",
                      freeze="features", epochs=1, workers=0, progress=False)
    done = train(cfg, out)
    assert done["identity"]["regression"] == "pcr" and "boxes" in done["identity"]
    parent, child = (load_checkpoint(folder / "checkpoint.pt")["model"] for folder in (ci_checkpoint, out))
    assert child["classifier.6.weight"].shape == (4 * 4, parent["classifier.6.weight"].shape[1])  # 4 classes x 4 box numbers
    frozen = [key for key in parent if key.startswith("features.")]
    assert frozen and all(torch.equal(parent[key], child[key]) for key in frozen)  # FC-only fine-tuning
    assert not torch.equal(parent["classifier.3.weight"], child["classifier.3.weight"])  # FC7 trained
    metrics = (out / "metrics.csv").read_text()
    assert "val_top1_err" in metrics
    other = replace(cfg, regression="scr")
    assert other.run_hash() != cfg.run_hash()


def test_ci_table8_end_to_end_with_report_and_comparisons(ci_data, tmp_path):
    messages = []
    runner = ExperimentRunner(profile="ci", data=str(ci_data), runs_root=tmp_path / "runs", results_dir=tmp_path / "results", workers=0,
                              progress=False, log=messages.append, jobs=1)
    rows = runner.run(load_experiment("table8"))
    labels = [row["label"] for row in rows]
    assert labels == ["FC6+FC7 only, SCR", "FC6+FC7 only, PCR", "all layers, PCR"]
    for row in rows:
        assert 0 <= row["top1_err_lo"] <= row["top1_err"] <= row["top1_err_hi"] <= 100
        assert row["baseline_err_lo"] <= row["baseline_err"] <= row["baseline_err_hi"]
        assert row["images"] == 24
    written = read_rows(tmp_path / "results" / "table8.csv")
    assert [row["label"] for row in written] == labels
    comparisons = [row for row in read_rows(tmp_path / "results" / "comparisons.csv")]
    assert [row["comparison"] for row in comparisons] == ["localisation: PCR vs SCR", "localisation: all layers vs FC6+FC7"]
    assert [row["paper_top1_diff"] for row in comparisons] == ["-2.1", "-1.2"]
    boxes = {path.name for path in (tmp_path / "runs" / "ci" / "scores").glob("*.boxes.pt")}
    assert boxes == {f"{run}__box-centre-crop__384.boxes.pt" for run in ("D-384-loc-pcr", "D-384-loc-pcr-fc", "D-384-loc-scr-fc")}

    messages.clear()
    again = runner.run(load_experiment("table8"))  # a second run reuses the nets and the box files
    assert [row["top1_err"] for row in again] == [row["top1_err"] for row in rows]
    assert not any("localising" in message or "training VGG" in message for message in messages)

    report = write_report("table8", tmp_path / "reports", "ci", tmp_path / "results")
    text = report.read_text()
    assert "Toy-scale run (ci profile)" in text and "centre-half box" in text
    for label, paper in (("FC6+FC7 only, SCR", "36.4"), ("FC6+FC7 only, PCR", "34.3"), ("all layers, PCR", "33.1")):
        line = next(line for line in text.splitlines() if line.startswith(f"| {label}"))
        assert paper in line
    assert (tmp_path / "reports" / "table8.png").stat().st_size > 0


def test_a_single_class_regressor_gets_a_new_last_layer_even_with_as_many_outputs_as_classes(ci_data, ci_checkpoint, tmp_path):
    # the ci set has 4 classes and SCR 4 outputs: the parent's last layer has the regressor's shape, and must not be kept
    cfg = TrainConfig(config="A", train_scale="256", data=str(ci_data), profile="ci", init=f"from:{ci_checkpoint}", regression="scr",
                      freeze="features", epochs=1, lr=1e-9, workers=0, progress=False)
    train(cfg, tmp_path / "A-scr")
    parent, child = (load_checkpoint(folder / "checkpoint.pt")["model"]["classifier.6.weight"] for folder in (ci_checkpoint, tmp_path / "A-scr"))
    assert parent.shape == child.shape
    assert child.std().item() == pytest.approx(0.01, rel=0.2) and not torch.allclose(parent, child)  # new, N(0, 0.01^2)


def test_with_several_seeds_only_seed_0_trains_the_localisation_nets(catalog):
    runs = [run.id for run in plan_runs(load_experiment("table8", catalog), catalog, seeds=2)]
    assert runs == ["A-256", "D-256", "D-384", "D-384-loc-scr-fc", "D-384-loc-pcr-fc", "D-384-loc-pcr"]  # no classification there for seed 1
    runs = [run.id for run in plan_runs(load_experiment("table9", catalog), catalog, seeds=2)]
    assert "D-256-loc-pcr" in runs and "D-256-loc-pcr-seed1" not in runs and "E-256-512-seed1" not in runs


def test_the_paper_difference_of_a_fusion_is_against_its_best_member_in_the_paper(catalog):
    from vgg.suite.localisation_runs import LocalisationRunner

    experiment = load_experiment("table9", catalog)
    (comparison,) = experiment.comparisons
    localisation = LocalisationRunner(None, experiment)
    assert localisation.paper_difference(comparison, "top5") == -0.6  # 26.9 (fusion) - 27.5 (384/352,384), not 29.5 (256/256)
    assert localisation.paper_difference(comparison, "top1") is None


def test_a_holdout_of_a_set_with_boxes_carries_the_boxes_of_its_images(ci_data, tmp_path):
    from vgg.data.holdout import write_holdout
    from vgg.localisation.annotations import load_boxes

    out = write_holdout(ci_data, tmp_path / "holdout", per_class=2)
    held = load_split(out, "val")
    boxes = load_boxes(out, "val")
    assert len(held) == 8 and {Path(image_id).stem for image_id in held.image_ids()} == set(boxes)
    assert len(load_boxes(out, "train")) == 4 * 22
