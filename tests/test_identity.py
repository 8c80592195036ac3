"""A run's identity: its dataset and parent by content, its recipe and its version included."""

import dataclasses
import shutil

import pytest

from vgg.recipe.profiles import get_profile
from vgg.runtime.checkpoint import read_done, write_done
from vgg.training.identity import dataset_fingerprint, digest, recipe
import vgg.training.run_config
from vgg.training.run_config import TrainConfig
import vgg.training.train
from vgg.training.train import train


def config(data, **overrides) -> TrainConfig:
    fields = dict(config="A", train_scale="256", data=str(data), profile="ci", init="glorot", epochs=1, workers=0, progress=False)
    return TrainConfig(**{**fields, **overrides})


def with_profile_change(monkeypatch, **changes) -> None:
    """Make `TrainConfig` and `Trainer` see the ci profile with `changes`."""
    changed = dataclasses.replace(get_profile("ci"), **changes)
    for module in (vgg.training.train, vgg.training.run_config):
        monkeypatch.setattr(module, "get_profile", lambda name: changed if name == "ci" else get_profile(name))


def test_a_moved_dataset_and_runs_folder_still_resume_and_children_still_find_their_parent(ci_data, tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    shutil.copytree(ci_data, data)
    a_done = train(config(data), runs / "A-256")
    b_done = train(config(data, config="B", init=f"from:{runs / 'A-256'}"), runs / "B-256")
    data.rename(tmp_path / "moved-data")
    runs.rename(tmp_path / "moved-runs")
    data, runs = tmp_path / "moved-data", tmp_path / "moved-runs"
    assert dataset_fingerprint(str(data)) == a_done["identity"]["data"]
    stamp = (runs / "B-256" / "checkpoint.pt").stat().st_mtime_ns
    assert train(config(data), runs / "A-256")["run_hash"] == a_done["run_hash"]
    assert train(config(data, config="B", init=f"from:{runs / 'A-256'}"), runs / "B-256")["run_hash"] == b_done["run_hash"]
    assert (runs / "B-256" / "checkpoint.pt").stat().st_mtime_ns == stamp  # found finished, not retrained
    # the child knows its parent by the parent's hash: a retrained parent makes it another run
    write_done(runs / "A-256", {**read_done(runs / "A-256"), "run_hash": "0123456789abcdef"})
    assert config(data, config="B", init=f"from:{runs / 'A-256'}").run_hash() != b_done["run_hash"]


def test_a_changed_recipe_is_another_run_and_a_finished_run_says_what_changed(ci_data, tmp_path, monkeypatch):
    before = config(ci_data).run_hash()
    train(config(ci_data), tmp_path / "A-256")
    with_profile_change(monkeypatch, plateau_threshold=0.7)
    assert config(ci_data).run_hash() != before
    with pytest.raises(ValueError, match=r"finished run with other settings \(recipe.plateau_threshold \(default\) -> 0.7\)"):
        train(config(ci_data), tmp_path / "A-256")


def test_the_lrn_constant_is_part_of_the_recipe_of_nets_with_lrn_only():
    ci = get_profile("ci")
    assert "lrn_alpha" in recipe(ci, "A-LRN") and "lrn_alpha" not in recipe(ci, "A")
    assert "description" not in recipe(ci, "A") and recipe(ci, "A")["max_epochs"] == ci.max_epochs
    assert "drop_not_before" not in recipe(ci, "A")  # left at its default: a new setting changes no existing run's identity


def test_a_child_of_an_unfinished_parent_is_refused(ci_data, tmp_path):
    train(config(ci_data), tmp_path / "A-256")
    (tmp_path / "A-256" / "DONE").unlink()
    with pytest.raises(ValueError, match="has not finished training \\(no DONE file\\)"):
        train(config(ci_data, config="B", init=f"from:{tmp_path / 'A-256'}"), tmp_path / "B-256")


def test_a_run_of_an_earlier_identity_version_is_another_run(ci_data, tmp_path):
    """Version 3 cuts a fixed S's crops from the image rescaled to S: a version-2 run computed other
    crops, so a finished one is not reused (nor is it adopted as version-1 runs were)."""
    done = train(config(ci_data), tmp_path / "A-256")
    earlier = {**done["identity"], "identity_version": 2}
    write_done(tmp_path / "A-256", {**done, "identity": earlier, "run_hash": digest(earlier)})
    with pytest.raises(ValueError, match=r"finished run with other settings \(identity_version 2 -> 3\)"):
        train(config(ci_data), tmp_path / "A-256")


def test_a_run_lists_its_dataset_once_for_its_identity_and_its_training(ci_data, tmp_path, monkeypatch):
    import vgg.data.datasets
    import vgg.training.identity

    vgg.training.identity._fingerprint.cache_clear()  # nothing listed before this run
    listed = []
    for module in (vgg.training.train, vgg.training.identity):
        monkeypatch.setattr(module, "load_split", lambda data, split, list_=vgg.data.datasets.load_split: listed.append(split) or list_(data, split))
    done = train(config(ci_data), tmp_path / "run")
    assert listed == ["train", "val"]
    assert done["identity"]["data"] == dataset_fingerprint(str(ci_data))  # the same fingerprint as from the folder itself
