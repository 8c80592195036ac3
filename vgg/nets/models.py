"""The VGG network of Table 1, and its dense (FC-as-convolution) view on the same weights.

The module layout (and so every state-dict key) follows torchvision's `VGG`: `features`
holds conv, [BatchNorm], ReLU, ... and max-pool layers in order; `classifier` holds
Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear. A torchvision VGG-11/13/16/19 state
dict therefore loads into A/B/D/E without renaming (see `vgg.nets.torchvision_compat`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vgg.nets.configs import FC_WIDTH, ConvSpec, LRNSpec, get_config, parsed_blocks
from vgg.nets.initialization import initialize
from vgg.recipe.paper import PAPER

LRN_SIZE = 5
LRN_BETA = 0.75
LRN_K = 2.0
LRN_ALPHA_ALEXNET = 5e-4
"""alpha for `nn.LocalResponseNorm` (which, like Caffe, divides alpha by the window size n) that
reproduces the AlexNet paper's formula, b = a / (k + 1e-4 * sum of a^2 over n = 5 channels)^0.75
with k = 2: 5e-4 / n = 1e-4. The VGG paper cites AlexNet for A-LRN, and the VGG group's 2014
CNN-M/S models use the same constants, so this is the default."""
LRN_ALPHA_PER_N = 1e-4
"""The other reading: AlexNet's alpha = 1e-4 given to PyTorch's (Caffe's) alpha / n formula,
5x weaker normalisation. This suite's default before; with k = 2 it matches no published model
(Caffe's reference AlexNet uses it with k = 1). Checkpoints store their alpha and keep it."""

FREEZE_CHOICES = ("none", "features")
"""What a fine-tune may freeze: nothing, or the conv layers (`features`), so that only FC layers train."""

HEAD = "classifier.6"
"""The last layer's name in state dicts (torchvision's layout, which ours follows)."""
FEATURE_STRIDE = 32
"""Five 2x2/2 max-pools: the last feature map is the input size divided by 32."""


def is_head(name: str) -> bool:
    """Whether a parameter or state dict name is the last layer's."""
    return name.startswith(f"{HEAD}.")


@dataclass(frozen=True)
class VGGSpec:
    """Everything needed to rebuild a VGG: stored in checkpoints, compared on load."""

    config: str = "D"
    num_classes: int = 1000
    width: int = 1
    crop: int = 224
    batch_norm: bool = False
    lrn_alpha: float = LRN_ALPHA_ALEXNET
    dropout: float = PAPER.dropout

    def __post_init__(self) -> None:
        get_config(self.config)
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if not isinstance(self.width, int) or self.width < 1:
            raise ValueError(f"width must be a positive integer divisor, got {self.width!r}")
        for channels in self._unscaled_widths():
            if channels % self.width:
                raise ValueError(
                    f"width {self.width} does not divide the {channels} channels of a layer of "
                    f"configuration {self.config}; choose a power of two from 1 to 64"
                )
        if not isinstance(self.crop, int) or self.crop < FEATURE_STRIDE or self.crop % FEATURE_STRIDE:
            raise ValueError(
                f"crop must be a positive multiple of {FEATURE_STRIDE} (five 2x2 max-pools), "
                f"got {self.crop!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def _unscaled_widths(self) -> list[int]:
        convs = [spec.channels for block in parsed_blocks(self.config) for spec in block if isinstance(spec, ConvSpec)]
        return [*convs, FC_WIDTH]

    def channels(self, unscaled: int) -> int:
        """A paper channel count divided by this spec's width."""
        return unscaled // self.width

    @property
    def fc_width(self) -> int:
        return self.channels(FC_WIDTH)

    @property
    def last_channels(self) -> int:
        """Channels of the last feature map (the input of FC1)."""
        return self.channels(self._unscaled_widths()[-2])

    @property
    def fc1_kernel(self) -> int:
        """Side of the last feature map at the training crop: FC1 seen as a convolution."""
        return self.crop // FEATURE_STRIDE

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ConvUnit:
    """Where one convolution of the configuration sits, by block and by module name."""

    block: int  # 1-based block number (blocks end with a max-pool)
    index: int  # 1-based position among the block's convolutions
    conv: str  # module name, e.g. "features.0"
    batch_norm: str | None  # name of the BatchNorm that follows it, if any


def pooled_region(x: torch.Tensor) -> torch.Tensor:
    """The central part of an (..., H, W) input that the five floor-mode max-pools read: each side
    cut to a multiple of `FEATURE_STRIDE`, the remainder split evenly between both edges (a view).

    The paper's test scales (256, 384, 512, and S - 32) are multiples of 32, so there the whole
    image is read; at other sizes floor pooling alone would drop up to 31 pixels from the right and
    bottom edges only, reading an off-centre window of the image. The smoke profile's scales
    (x 2/7: 73, 110, 146) leave 9-18 pixels over, 12% of the image at Q = 256."""
    height, width = x.shape[-2:]
    top, left = height % FEATURE_STRIDE // 2, width % FEATURE_STRIDE // 2
    return x[..., top : top + height - height % FEATURE_STRIDE, left : left + width - width % FEATURE_STRIDE]


class VGG(nn.Module):
    """A VGG network of Table 1 (or B-5x5), trainable at `crop` and densely applicable.

    `forward` takes crop x crop inputs, as in training. `dense` and `score_map` apply FC1 as
    a (crop/32)x(crop/32) convolution and FC2, FC3 as 1x1 convolutions on the same weights,
    so any input of at least crop x crop gives a class-score map (Sect. 3.2).
    """

    def __init__(
        self,
        config: str = "D",
        num_classes: int = 1000,
        width: int = 1,
        crop: int = 224,
        batch_norm: bool = False,
        lrn_alpha: float = LRN_ALPHA_ALEXNET,
        dropout: float = PAPER.dropout,
        init: str = "paper",
        init_std: float = PAPER.init_std,
    ) -> None:
        super().__init__()
        self.spec = VGGSpec(config, num_classes, width, crop, batch_norm, lrn_alpha, dropout)
        self.features, self.conv_units = _build_features(self.spec)
        fc1_inputs = self.spec.last_channels * self.spec.fc1_kernel**2
        self.classifier = nn.Sequential(
            nn.Linear(fc1_inputs, self.spec.fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(self.spec.fc_width, self.spec.fc_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(self.spec.fc_width, num_classes),
        )
        initialize(self, init, std=init_std)

    @classmethod
    def from_spec(cls, spec: VGGSpec | dict, init: str = "paper", init_std: float = PAPER.init_std) -> VGG:
        """Build a network from a `VGGSpec` or its dict form (as stored in checkpoints)."""
        fields = spec.to_dict() if isinstance(spec, VGGSpec) else dict(spec)
        return cls(**fields, init=init, init_std=init_std)

    @property
    def config(self) -> str:
        return self.spec.config

    @property
    def head(self) -> nn.Linear:
        """The last layer (FC3, the class scores): what fine-tuning replaces."""
        return self.classifier[6]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (logits) for a batch of crop x crop images."""
        if tuple(x.shape[-2:]) != (self.spec.crop, self.spec.crop):
            raise ValueError(
                f"VGG-{self.config} was built for {self.spec.crop}x{self.spec.crop} crops but got a "
                f"{x.shape[-2]}x{x.shape[-1]} input; use .dense(x) to apply it to larger images"
            )
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))

    def score_map(self, x: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        """Dense application: an (N, classes, h, w) class-score map for any input >= crop, read
        from the input's central `pooled_region`; with `layers`, the map after the classifier's first
        `layers` modules only (Appendix B's features: all but the last FC layer).

        FC layers become convolutions by reshaping their weights at call time (a view, no
        copy), so this always agrees with the trained weights.
        """
        height, width = x.shape[-2:]
        if height < self.spec.crop or width < self.spec.crop:
            raise ValueError(
                f"dense evaluation needs an input of at least the training crop "
                f"{self.spec.crop}x{self.spec.crop}, got {height}x{width}"
            )
        x = self.features(pooled_region(x))
        kernel = self.spec.fc1_kernel
        for layer in self.classifier[:layers]:
            if isinstance(layer, nn.Linear):
                weight = layer.weight.view(layer.out_features, -1, kernel, kernel)
                x = F.conv2d(x, weight, layer.bias)
                kernel = 1
            else:
                x = layer(x)
        return x

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """Dense class scores: the score map averaged spatially into one vector per image."""
        return self.score_map(x).mean(dim=(2, 3))


class LocalResponseNorm(nn.LocalResponseNorm):
    """`nn.LocalResponseNorm` (same arguments, same output to float rounding, no parameters),
    with the window sums of squares as a 1x1 convolution by a banded 0/1 channel matrix instead
    of torch's padded 3-D average pool: forward and backward 3.5x faster on the CPU (12 vs 43 ms
    for 32 x 8 x 64 x 64), which made A-LRN train at half A's speed at smoke scale."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        offset = torch.arange(channels, device=x.device)
        distance = offset[None, :] - offset[:, None]  # input channel - output channel
        band = ((distance >= -(self.size // 2)) & (distance <= (self.size - 1) // 2)).to(x.dtype)
        window_sums = F.conv2d(x * x, band[:, :, None, None])
        return x * (window_sums * (self.alpha / self.size) + self.k).pow(-self.beta)


def _build_features(spec: VGGSpec) -> tuple[nn.Sequential, list[ConvUnit]]:
    layers: list[nn.Module] = []
    units: list[ConvUnit] = []
    in_channels = 3
    for block_number, block in enumerate(parsed_blocks(spec.config), start=1):
        convs_in_block = 0
        for layer_spec in block:
            if isinstance(layer_spec, LRNSpec):
                layers.append(LocalResponseNorm(LRN_SIZE, alpha=spec.lrn_alpha, beta=LRN_BETA, k=LRN_K))
                continue
            out_channels = spec.channels(layer_spec.channels)
            conv_name = f"features.{len(layers)}"
            layers.append(nn.Conv2d(in_channels, out_channels, layer_spec.kernel, padding=layer_spec.padding))
            bn_name = None
            if spec.batch_norm:
                bn_name = f"features.{len(layers)}"
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            convs_in_block += 1
            units.append(ConvUnit(block_number, convs_in_block, conv_name, bn_name))
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers), units
