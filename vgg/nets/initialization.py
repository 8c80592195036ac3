"""Initialisation schemes of Sect. 3.1: random `paper` init, `glorot`, and init from a trained A.

- `paper`: weights from N(0, std^2), biases 0. The paper writes "10^-2 variance"; taken
  literally that is std 0.1, but most reimplementations (torchvision's Linear layers
  among them) use std 0.01, which is the default here. Pass `std` to choose.
- `glorot`: Glorot & Bengio (2010) uniform weights, biases 0. The paper notes (after
  submission) that this trains deep nets without pre-training.
- `init_from_a`: the first four conv layers and the last three FC layers copied from a
  trained net A, everything else `paper`-initialised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from vgg.nets.configs import A_CONFIGS
from vgg.recipe.paper import PAPER

if TYPE_CHECKING:
    from vgg.nets.models import VGG

INIT_SCHEMES = ("paper", "glorot")
A_LAYERS_COPIED = 4
"""Sect. 3.1: deeper nets take the first four conv layers (and the three FC layers) of A."""

def initialize(model: nn.Module, scheme: str = "paper", std: float = PAPER.init_std) -> None:
    """Initialise every conv, linear and batch-norm layer of `model` in place."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if scheme == "paper":
                nn.init.normal_(module.weight, mean=0.0, std=std)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.reset_running_stats()


@torch.no_grad()
def init_from_a(model: VGG, source: VGG, std: float = PAPER.init_std, scheme: str = "paper") -> list[str]:
    """Initialise `model` from a trained net A, as Sect. 3.1 does for B-E; return the copied keys.

    The paper does not say how A's first four conv layers map onto a deeper net. Taken in
    order they do not even fit (B's second conv is 64->64, A's is 64->128), so each is
    copied to the layer at the same place in the same block: A's convs sit at block 1 #1,
    block 2 #1, block 3 #1 and #2, and so do the matching convs of B, C, D and E. The three
    FC layers are copied as they are. Everything else gets `scheme` (the paper's: `paper`
    with `std`).
    BatchNorm layers following copied convs are copied too when both nets have them.
    """
    if source.config not in A_CONFIGS:
        raise ValueError(f"init from A needs a net of configuration A, got {source.config}")
    for field in ("width", "crop", "num_classes", "batch_norm"):
        ours, theirs = getattr(model.spec, field), getattr(source.spec, field)
        if ours != theirs:
            raise ValueError(
                f"cannot initialise VGG-{model.config} from A: {field} differs "
                f"({field}={ours} here, {field}={theirs} in A); build both with the same {field}"
            )
    initialize(model, scheme, std=std)

    target_state = model.state_dict()
    source_state = source.state_dict()
    copied: list[str] = []

    def copy_layer(target_prefix: str, source_prefix: str) -> None:
        for key, value in target_state.items():
            if not key.startswith(target_prefix + "."):
                continue
            source_value = source_state[source_prefix + key[len(target_prefix) :]]
            if source_value.shape != value.shape:
                raise ValueError(
                    f"cannot copy A's {source_prefix} into VGG-{model.config}'s {target_prefix}: "
                    f"shape {tuple(source_value.shape)} vs {tuple(value.shape)}"
                )
            value.copy_(source_value)
            copied.append(key)

    target_units = {(unit.block, unit.index): unit for unit in model.conv_units}
    for unit in source.conv_units[:A_LAYERS_COPIED]:
        target = target_units.get((unit.block, unit.index))
        if target is None:
            raise ValueError(
                f"VGG-{model.config} has no conv layer #{unit.index} in block {unit.block} to take "
                f"A's {unit.conv}; init it with 'paper' or 'glorot' instead"
            )
        copy_layer(target.conv, unit.conv)
        if unit.batch_norm and target.batch_norm:
            copy_layer(target.batch_norm, unit.batch_norm)
    target_linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    source_linear = [name for name, module in source.named_modules() if isinstance(module, nn.Linear)]
    for target_name, source_name in zip(target_linear, source_linear):
        copy_layer(target_name, source_name)
    return copied
