"""The paper's recipe on one screen (Sects. 3.1, 3.2; shared/paper/PAPER_FACTS.md): every number the
suite takes from the paper, read from here by the modules that apply it. A profile
(experiments/profiles.toml, `vgg.recipe.profiles`) overrides what its scale needs: batch, length,
dropout, schedule, init; `Profile.recipe_rows` (`python -m vgg recipe`) shows the two side by side.

This module imports nothing from the suite's packages, so every stage can read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRecipe:
    """The training and test recipe of Simonyan & Zisserman (ICLR 2015), in the paper's units."""

    # Sect. 3.1, training
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4  # the L2 multiplier
    dropout: float = 0.5  # on FC1 and FC2
    lr: float = 1e-2  # the first learning rate (also of the deeper nets' layers taken from A)
    lr_drop_factor: float = 0.1  # the rate is divided by 10 when val accuracy stops improving ...
    lr_drops: int = 3  # ... 3 times in all
    iterations: int = 370_000  # training stopped after 370K iterations ...
    epochs: int = 74  # ... 74 epochs
    init_std: float = 0.01  # N(0, "10^-2 variance"), read as std 0.01 (a documented choice; std 0.1 is the literal reading)
    init_from_a: str = "first four conv layers and the three FC layers"  # B-E start from A at S = 256; the rest random
    finetune_lr: float = 1e-3  # S = 384 nets start from the S = 256 ones at 1e-3 (none given for the jittered nets)
    crop: int = 224  # one random 224 crop per image per iteration, with a random horizontal flip ...
    flip_probability: float = 0.5
    colour_shift_std: float = 0.1  # ... and the AlexNet RGB colour shift: alpha_i ~ N(0, 0.1) along the RGB PCA
    train_scales: tuple[int, ...] = (256, 384)  # single-scale training S ...
    jitter_range: tuple[int, int] = (256, 512)  # ... or S jittered in [Smin, Smax]
    # Sect. 3.2, testing (single scale: Q = S, or (Smin + Smax) / 2 when jittered: `ScaleRange.single_test_scale`)
    multi_test_scale_offset: int = 32  # multi-scale: Q = {S - 32, S, S + 32}; {Smin, (Smin + Smax) / 2, Smax} for jittered S
    multi_crop_grid: int = 5  # 5 x 5 crops x 2 flips = 50 crops a scale, 150 over 3 scales


PAPER = PaperRecipe()
