"""Shared fixtures: small nets are cheap; full-size nets are built once per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from vgg.nets.trained import Net

if os.environ.get("PYTEST_XDIST_WORKER"):  # make test runs two workers on two cores: one thread each
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def meta_model(**kwargs):
    """A VGG on the meta device: shapes and parameter counts without allocating weights."""
    from vgg.nets.models import VGG

    with torch.device("meta"):
        return VGG(**kwargs)


def small_net(classes: int = 6, crop: int = 64, **kwargs) -> Net:
    """A small VGG-A as a `vgg.nets.trained.Net` on the paper profile, the same weights every call."""
    from vgg.nets.models import VGG
    from vgg.nets.trained import Net
    from vgg.data.normalization import PAPER_MEAN_RGB
    from vgg.recipe.profiles import get_profile

    torch.manual_seed(0)
    model = VGG("A", num_classes=classes, width=16, crop=crop, init="glorot", **kwargs)
    return Net(model, PAPER_MEAN_RGB, get_profile("paper"), Path("net.pt"), "net", "256", None)


@pytest.fixture(scope="module")
def catalog():
    """The run catalogue, experiments/runs.toml."""
    from vgg.suite.plan import load_catalog

    return load_catalog()


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (4 classes, 24 train and 6 val images each) for ci-profile runs."""
    from vgg.data.synthetic import SynthSpec, generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic-ci", SynthSpec(classes=4, train_per_class=24, val_per_class=6), workers=1)


@pytest.fixture(scope="session")
def ci_checkpoint(ci_data, tmp_path_factory) -> Path:
    """A finished one-epoch ci run of A on `ci_data`: its folder."""
    from vgg.training.run_config import TrainConfig
    from vgg.training.train import train

    run = tmp_path_factory.mktemp("runs") / "A-256"
    train(TrainConfig(config="A", train_scale="256", data=str(ci_data), profile="ci", init="glorot", epochs=1, workers=0, progress=False), run)
    return run
