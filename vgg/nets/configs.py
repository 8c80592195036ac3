"""Table 1 of the paper as data: the layer lists of configurations A, A-LRN, B, C, D, E.

Each configuration is five blocks of layer tokens written as the paper writes them
("conv3-64" is a 3x3 convolution with 64 output channels, "conv1-256" a 1x1 convolution,
"LRN" local response normalisation); every block ends with a 2x2 max-pool of stride 2, and
every configuration ends with the same head, FC-4096, FC-4096, FC-<classes>, soft-max.
`B-5x5` is the paper's Sect. 4.1 shallow net: B with each pair of 3x3 convolutions replaced
by one 5x5 convolution. It is not in Table 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Block = tuple[str, ...]

TABLE1_CONFIGS: dict[str, tuple[Block, ...]] = {
    "A": (
        ("conv3-64",),
        ("conv3-128",),
        ("conv3-256", "conv3-256"),
        ("conv3-512", "conv3-512"),
        ("conv3-512", "conv3-512"),
    ),
    "A-LRN": (
        ("conv3-64", "LRN"),
        ("conv3-128",),
        ("conv3-256", "conv3-256"),
        ("conv3-512", "conv3-512"),
        ("conv3-512", "conv3-512"),
    ),
    "B": (
        ("conv3-64", "conv3-64"),
        ("conv3-128", "conv3-128"),
        ("conv3-256", "conv3-256"),
        ("conv3-512", "conv3-512"),
        ("conv3-512", "conv3-512"),
    ),
    "C": (
        ("conv3-64", "conv3-64"),
        ("conv3-128", "conv3-128"),
        ("conv3-256", "conv3-256", "conv1-256"),
        ("conv3-512", "conv3-512", "conv1-512"),
        ("conv3-512", "conv3-512", "conv1-512"),
    ),
    "D": (
        ("conv3-64", "conv3-64"),
        ("conv3-128", "conv3-128"),
        ("conv3-256", "conv3-256", "conv3-256"),
        ("conv3-512", "conv3-512", "conv3-512"),
        ("conv3-512", "conv3-512", "conv3-512"),
    ),
    "E": (
        ("conv3-64", "conv3-64"),
        ("conv3-128", "conv3-128"),
        ("conv3-256", "conv3-256", "conv3-256", "conv3-256"),
        ("conv3-512", "conv3-512", "conv3-512", "conv3-512"),
        ("conv3-512", "conv3-512", "conv3-512", "conv3-512"),
    ),
}

EXTRA_CONFIGS: dict[str, tuple[Block, ...]] = {
    "B-5x5": (
        ("conv5-64",),
        ("conv5-128",),
        ("conv5-256",),
        ("conv5-512",),
        ("conv5-512",),
    ),
}

CONFIGS: dict[str, tuple[Block, ...]] = {**TABLE1_CONFIGS, **EXTRA_CONFIGS}
A_CONFIGS = ("A", "A-LRN")
"""Sect. 3.1: the shallow nets trained from random init; deeper nets take their first layers from one."""

FC_WIDTH = 4096
"""Width of FC1 and FC2 (the head's hidden layers) at width divisor 1."""

FC_LAYERS = 3
"""Fully-connected layers in every configuration's head."""

_CONV_TOKEN = re.compile(r"conv(\d+)-(\d+)")


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of Table 1: square kernel, stride 1, padding that preserves size."""

    kernel: int
    channels: int

    @property
    def padding(self) -> int:
        return self.kernel // 2


@dataclass(frozen=True)
class LRNSpec:
    """Local response normalisation (AlexNet's), after the preceding convolution's ReLU."""


LayerSpec = ConvSpec | LRNSpec


def parse_token(token: str) -> LayerSpec:
    """Turn one Table 1 token ("conv3-64", "conv1-256", "LRN") into a layer spec."""
    if token == "LRN":
        return LRNSpec()
    match = _CONV_TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(f"unknown layer token {token!r}: expected convK-C (e.g. conv3-64) or LRN")
    return ConvSpec(kernel=int(match[1]), channels=int(match[2]))


def get_config(name: str) -> tuple[Block, ...]:
    """The blocks of configuration `name`, or a ValueError listing the known names."""
    try:
        return CONFIGS[name]
    except KeyError:
        known = ", ".join(CONFIGS)
        raise ValueError(f"unknown VGG configuration {name!r}; known configurations: {known}") from None


def parsed_blocks(name: str) -> list[list[LayerSpec]]:
    """The blocks of configuration `name` as layer specs."""
    return [[parse_token(token) for token in block] for block in get_config(name)]


def has_lrn(name: str) -> bool:
    """True for a configuration with local response normalisation (A-LRN)."""
    return any(isinstance(spec, LRNSpec) for block in parsed_blocks(name) for spec in block)


def weight_layers(name: str) -> int:
    """Depth as the paper counts it: convolutions plus the three FC layers."""
    convs = sum(isinstance(spec, ConvSpec) for block in parsed_blocks(name) for spec in block)
    return convs + FC_LAYERS
