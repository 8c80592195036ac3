"""torchvision interoperability: its VGG-11/13/16/19 (and _bn) state dicts are A/B/D/E.

Our module layout mirrors torchvision's, so the keys are the same; what this module adds
is validation, the stripping of wrapper prefixes (DataParallel/DDP's `module.`,
torch.compile's `_orig_mod.`), and inference of the configuration from a state dict.
torchvision's `avgpool` (AdaptiveAvgPool2d((7, 7))) has no parameters and is the identity
at 224x224, so both networks give the same output there.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from vgg.nets.configs import CONFIGS
from vgg.nets.models import HEAD, VGG, VGGSpec

TORCHVISION_NAMES = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}
"""Our configuration -> torchvision's builder; `_bn` is appended for batch-norm nets."""

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def torchvision_name(spec: VGGSpec) -> str:
    """torchvision's model name for a spec (e.g. D with batch norm -> "vgg16_bn")."""
    if spec.config not in TORCHVISION_NAMES:
        raise ValueError(
            f"torchvision has no VGG of configuration {spec.config}; "
            f"it has {', '.join(f'{c} ({n})' for c, n in TORCHVISION_NAMES.items())}"
        )
    return TORCHVISION_NAMES[spec.config] + ("_bn" if spec.batch_norm else "")


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel/DDP (`module.`) and torch.compile (`_orig_mod.`) key prefixes."""
    cleaned = {}
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def infer_spec(state_dict: Mapping[str, torch.Tensor]) -> VGGSpec:
    """The spec (configuration, classes, width, crop, batch norm) a state dict was saved from."""
    state = clean_state_dict(state_dict)
    try:
        first_conv = state["features.0.weight"]
        fc1 = state["classifier.0.weight"]
        fc3 = state[f"{HEAD}.weight"]
    except KeyError as missing:
        raise ValueError(f"not a VGG state dict: key {missing} is missing") from None
    batch_norm = "features.1.running_mean" in state
    width = 64 // first_conv.shape[0]
    num_classes = fc3.shape[0]
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    for config in CONFIGS:
        try:
            last_channels = VGGSpec(config, num_classes, width, 32, batch_norm).last_channels
            fc1_kernel = round((fc1.shape[1] / last_channels) ** 0.5)
            spec = VGGSpec(config, num_classes, width, 32 * fc1_kernel, batch_norm)
        except (ValueError, ZeroDivisionError):
            continue
        if _expected_shapes(spec) == shapes:
            return spec
    raise ValueError(
        "the state dict matches no VGG configuration "
        f"({', '.join(CONFIGS)}, with or without batch norm, at any width or crop)"
    )


def load_torchvision_state_dict(model: VGG, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a torchvision VGG state dict into `model` (A/B/D/E, matching batch norm)."""
    torchvision_name(model.spec)
    state = clean_state_dict(state_dict)
    spec = infer_spec(state)
    if (spec.config, spec.batch_norm) != (model.config, model.spec.batch_norm):
        def describe(s: VGGSpec) -> str:
            name = TORCHVISION_NAMES.get(s.config)
            return f"{name}{'_bn' if s.batch_norm else ''} (configuration {s.config})" if name else f"configuration {s.config}"

        raise ValueError(f"the state dict is {describe(spec)}, but the model is {describe(model.spec)}")
    model.load_state_dict(state, strict=True)


def vgg_from_torchvision_state_dict(state_dict: Mapping[str, torch.Tensor]) -> VGG:
    """A new VGG of the configuration the state dict holds, with its weights."""
    spec = infer_spec(state_dict)
    model = VGG.from_spec(spec)
    model.load_state_dict(clean_state_dict(state_dict), strict=True)
    return model


def to_torchvision_state_dict(model: VGG) -> dict[str, torch.Tensor]:
    """Our weights under torchvision's keys, loadable by `torchvision.models.<name>()`."""
    torchvision_name(model.spec)
    if (model.spec.width, model.spec.crop) != (1, 224):
        raise ValueError(
            f"torchvision's VGG has full widths and a 224 crop; this net has width {model.spec.width} "
            f"and crop {model.spec.crop}"
        )
    return {key: value.detach().clone() for key, value in clean_state_dict(model.state_dict()).items()}


def _expected_shapes(spec: VGGSpec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = VGG.from_spec(spec)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
