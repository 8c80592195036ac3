"""Shared fixtures: small nets are cheap; full-size nets are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # make test runs two workers on two cores: one thread each
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def meta_model(**kwargs):
    """A VGG on the meta device: shapes and parameter counts without allocating weights."""
    from vgg.models import VGG

    with torch.device("meta"):
        return VGG(**kwargs)


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory) -> Path:
    """A tiny synthetic dataset (4 classes, 24 train and 6 val images each) for ci-profile runs."""
    from vgg.synthetic import SynthSpec, generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic-ci", SynthSpec(classes=4, train_per_class=24, val_per_class=6), workers=1)
