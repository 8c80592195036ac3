"""A run's settings, declared once: what identifies a run (pinned hashes), and the command line
of torchrun and SLURM jobs parsed back into the same run."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from vgg.cli import build_parser
import vgg.runtime.precision
import vgg.training.identity
from vgg.training.run_config import HOW, IDENTITY, IDENTITY_WHEN_SET, RECIPE, TrainConfig, config_from_arguments, train_command

RUNS = {
    "a random-init run with the defaults": TrainConfig(config="A", train_scale="256", data="data/synthetic"),
    "a child initialised from A, every option set": TrainConfig(
        config="D", train_scale="256:512", data="/datasets/imagenet", profile="paper", init="from:runs/paper/A-256", epochs=74,
        batch_size=512, lr=0.02, momentum=0.8, weight_decay=1e-4, dropout=0.4, seed=3, accum=2, normalization="torchvision",
        batch_norm=True, val_images=500, plateau_patience=3, workers=4, device="cuda", compile=True, checkpoint_minutes=5.0,
        checkpoint_steps=100, decode="gpu", sync_every=7, skip_bad_images=True, progress=False,
    ),
    "a fine-tune of torchvision weights, FC layers only": TrainConfig(
        config="D", train_scale="256:512", data="/data/cats-dogs", profile="paper", weights="torchvision:vgg16", freeze="features", head_lr_mult=10.0,
    ),
    "a fine-tune of one of our runs": TrainConfig(config="A", train_scale="384", data="d", profile="ci", weights="checkpoint:runs/ci/A-256", lr=1e-3),
    "A-LRN with the alpha/n reading of the LRN constant": TrainConfig(config="A-LRN", train_scale="256", data="d", profile="smoke", lrn_alpha=1e-4),
    "sync at each epoch's end only": TrainConfig(config="B", train_scale="256", data="d", sync_every=0),
    "a per-class box regressor from its parent, FC layers only": TrainConfig(config="D", train_scale="384", data="d", init="from:runs/smoke/D-384", regression="pcr", freeze="features"),
}


@pytest.mark.parametrize("name", RUNS)
def test_the_job_command_line_parses_back_into_the_same_run(name):
    """torchrun and SLURM jobs run `train_command(cfg)`: it must be the same run, fine-tunes included."""
    cfg = RUNS[name]
    command = train_command(cfg, "runs/x")
    assert command[1:4] == ["-m", "vgg", "train"]
    args = build_parser().parse_args(command[3:])
    assert str(args.out) == "runs/x"
    assert config_from_arguments(args) == cfg


def test_every_field_says_what_it_is_to_the_run():
    roles = {item.name: item.metadata["role"] for item in fields(TrainConfig)}
    assert set(roles.values()) == {IDENTITY, IDENTITY_WHEN_SET, RECIPE, HOW}
    assert [name for name, role in roles.items() if role == IDENTITY_WHEN_SET] == ["weights", "freeze", "head_lr_mult", "regression", "precision"]
    assert [name for name, role in roles.items() if role == RECIPE] == ["lrn_alpha"]


@pytest.fixture
def fixed_content(monkeypatch):
    """The dataset and the parent by a fixed stand-in for their content, and a CPU without fast bf16
    (`--precision auto` trains in fp32 there), so that hashes depend on the settings alone."""
    monkeypatch.setattr(vgg.training.identity, "dataset_fingerprint", lambda data: f"dataset:{data}")
    monkeypatch.setattr(vgg.training.identity, "parent_run_hash", lambda init: f"parent:{init}")
    monkeypatch.setattr(vgg.runtime.precision, "cpu_bf16_speedup", lambda: 1.0)


@pytest.mark.parametrize(
    "name, run_hash",
    [  # the hashes of identity version 3 (fixed-S crops cut from the image rescaled to S); a change here retrains every run
        ("a random-init run with the defaults", "baa9a13b0d6471ba"),
        ("a child initialised from A, every option set", "e69cc8164c5f5ef7"),
        ("a fine-tune of torchvision weights, FC layers only", "ffcd54abbe76fe55"),
        ("A-LRN with the alpha/n reading of the LRN constant", "5a8b596dfcde4cf6"),
    ],
)
def test_run_hashes_are_pinned(fixed_content, name, run_hash):
    """Existing run folders resume only while these hold: a field added, moved or given another role
    must not change the hash of a run that does not set it."""
    assert RUNS[name].run_hash() == run_hash


def test_fp32_is_left_out_of_the_identity_and_bf16_recorded(fixed_content, monkeypatch):
    """The CUDA run above in fp32 has the hash it would have had before the precision entered the
    identity (fp32 is left out); `auto` on a CPU with fast bf16 trains, and is recorded, as bf16."""
    cuda_fp32 = replace(RUNS["a child initialised from A, every option set"], precision="fp32")
    assert cuda_fp32.run_hash() == "75462d8ebe3fc785"
    defaults = RUNS["a random-init run with the defaults"]
    assert "precision" not in defaults.settings()
    monkeypatch.setattr(vgg.runtime.precision, "cpu_bf16_speedup", lambda: 2.0)
    assert defaults.settings()["precision"] == "bf16"
    assert defaults.run_hash() == replace(defaults, precision="bf16").run_hash() != "baa9a13b0d6471ba"
    assert replace(defaults, precision="fp32").run_hash() == "baa9a13b0d6471ba"


def test_options_that_only_change_how_a_run_runs_leave_its_hash_alone(fixed_content):
    base = RUNS["a random-init run with the defaults"]
    how = TrainConfig(config="A", train_scale="256", data="data/synthetic", workers=3, device="cpu", compile=True, checkpoint_minutes=1.0,
                      checkpoint_steps=5, decode="cpu", sync_every=3, skip_bad_images=True, progress=False)
    assert how.run_hash() == base.run_hash()
    for changed in ({"seed": 1}, {"epochs": 3}, {"freeze": "features"}):
        other = TrainConfig(config="A", train_scale="256", data="data/synthetic", **changed)
        assert other.run_hash() != base.run_hash(), changed
    lrn = TrainConfig(config="A-LRN", train_scale="256", data="data/synthetic")
    assert TrainConfig(config="A-LRN", train_scale="256", data="data/synthetic", lrn_alpha=1e-4).run_hash() != lrn.run_hash()
