"""Layer-by-layer shapes, parameters and multiply-accumulates of a VGG (Table 2 and `describe`).

Counts come from running the real module on the meta device with forward hooks, so they
always describe the network that is actually built. MACs follow torchvision's convention
(the figure its docs call GFLOPS): one per weight use in conv and FC layers; biases,
activations, pooling and normalisation are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vgg.nets.configs import weight_layers
from vgg.nets.models import VGG, VGGSpec


@dataclass(frozen=True)
class LayerRow:
    """One module of the network, as run on a single crop x crop image."""

    name: str
    label: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class Summary:
    """Totals for one network."""

    spec: VGGSpec
    weight_layers: int
    params: int
    macs: int
    layers: list[LayerRow]


def summarize(spec: VGGSpec) -> Summary:
    """Shapes, parameters and MACs of every layer of `spec`'s network for one crop x crop image."""
    with torch.device("meta"):
        model = VGG.from_spec(spec)
    rows: list[LayerRow] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            params = sum(p.numel() for p in module.parameters())
            rows.append(LayerRow(name, _label(module), tuple(output.shape[1:]), params, _macs(module, output)))

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    with torch.no_grad():
        model(torch.empty(1, 3, spec.crop, spec.crop, device="meta"))
    for handle in handles:
        handle.remove()
    return Summary(
        spec=spec,
        weight_layers=weight_layers(spec.config),
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(row.macs for row in rows),
        layers=rows,
    )


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.weight[0].numel()
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _label(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return f"conv{module.kernel_size[0]}-{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"FC-{module.out_features}"
    if isinstance(module, nn.MaxPool2d):
        return "maxpool"
    if isinstance(module, nn.LocalResponseNorm):
        return f"LRN(size={module.size}, alpha={module.alpha:g}, beta={module.beta:g}, k={module.k:g})"
    if isinstance(module, nn.BatchNorm2d):
        return "batchnorm"
    if isinstance(module, nn.Dropout):
        return f"dropout({module.p:g})"
    return type(module).__name__


def format_summary(summary: Summary) -> str:
    """The `describe` text: one line per layer, then the totals."""
    spec = summary.spec
    lines = [
        f"VGG-{spec.config}: {summary.weight_layers} weight layers, width 1/{spec.width}, "
        f"crop {spec.crop}, {spec.num_classes} classes, batch norm {'on' if spec.batch_norm else 'off'}",
        f"{'layer':<14} {'type':<42} {'output':>16} {'params':>13} {'MACs':>15}",
    ]
    for row in summary.layers:
        shape = " x ".join(str(size) for size in row.output_shape)
        lines.append(f"{row.name:<14} {row.label:<42} {shape:>16} {row.params:>13,} {row.macs:>15,}")
    lines.append(f"total: {summary.params:,} parameters, {summary.macs:,} multiply-accumulates per image")
    return "\n".join(lines)
