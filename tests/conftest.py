"""Shared fixtures: small nets are cheap; full-size nets are built once per session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def meta_model(**kwargs):
    """A VGG on the meta device: shapes and parameter counts without allocating weights."""
    from vgg.models import VGG

    with torch.device("meta"):
        return VGG(**kwargs)
