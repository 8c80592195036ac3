"""The paper's recipe in one place (`vgg.recipe.paper.PAPER`): every stage takes its numbers from it,
the paper profile keeps them, and `python -m vgg recipe` shows them beside a profile's."""

import inspect
import re
from pathlib import Path

import numpy as np

from vgg.data.transforms import ScaleRange, TrainTransform, colour_offset
from vgg.evaluation.protocols import GRID
from vgg.nets.initialization import init_from_a, initialize
from vgg.nets.models import VGG, VGGSpec
from vgg.recipe.paper import PAPER
from vgg.recipe.profiles import get_profile
from vgg.training.run_config import TrainConfig
from vgg.training.schedule import PlateauSchedule

PACKAGE = Path(__file__).resolve().parent.parent / "vgg"


def default_of(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_the_paper_numbers_are_the_papers():
    """shared/paper/PAPER_FACTS.md, Sect. 3.1 and 3.2."""
    assert (PAPER.batch_size, PAPER.momentum, PAPER.weight_decay, PAPER.dropout) == (256, 0.9, 5e-4, 0.5)
    assert (PAPER.lr, PAPER.lr_drop_factor, PAPER.lr_drops, PAPER.finetune_lr) == (1e-2, 0.1, 3, 1e-3)
    assert (PAPER.iterations, PAPER.epochs, PAPER.init_std, PAPER.crop) == (370_000, 74, 0.01, 224)
    assert (PAPER.jitter_range, PAPER.multi_test_scale_offset, PAPER.multi_crop_grid) == ((256, 512), 32, 5)


def test_every_stage_takes_its_defaults_from_the_recipe():
    config = TrainConfig(config="A", train_scale="256", data=Path("data"))
    assert (config.momentum, config.weight_decay) == (PAPER.momentum, PAPER.weight_decay)
    assert VGGSpec("A").dropout == PAPER.dropout and default_of(VGG.__init__, "dropout") == PAPER.dropout
    assert default_of(VGG.__init__, "init_std") == PAPER.init_std
    assert default_of(initialize, "std") == PAPER.init_std and default_of(init_from_a, "std") == PAPER.init_std
    schedule = PlateauSchedule(lr=PAPER.lr)
    assert (schedule.factor, schedule.max_drops) == (PAPER.lr_drop_factor, PAPER.lr_drops)
    assert default_of(colour_offset, "std") == PAPER.colour_shift_std == TrainTransform(ScaleRange(256, 256), 224).colour_shift_std
    assert GRID == PAPER.multi_crop_grid
    assert ScaleRange(256, 256).multi_test_scales == (224, 256, 288) and ScaleRange(*PAPER.jitter_range).single_test_scale == 384
    assert np.all(np.abs(colour_offset(np.random.default_rng(0))) < 100)


def test_the_paper_profile_keeps_the_recipe():
    paper = get_profile("paper")
    assert (paper.batch_size, paper.max_epochs, paper.dropout, paper.finetune_lr) == (PAPER.batch_size, PAPER.epochs, PAPER.dropout, PAPER.finetune_lr)
    assert (paper.random_init, paper.crop, paper.schedule, paper.init_std) == ("paper", PAPER.crop, "plateau", PAPER.init_std)


PAPER_LITERALS = {
    "momentum 0.9": re.compile(r"momentum\w*\s*[:=][^#\n]*\b0\.9\b"),
    "weight decay 5e-4": re.compile(r"weight_decay\w*\s*[:=][^#\n]*\b5e-4\b"),
    "lr 1e-2": re.compile(r"\blr\w*\s*[:=][^#\n]*\b1e-2\b"),
    "dropout 0.5": re.compile(r"dropout\w*\s*[:=][^#\n]*\b0\.5\b"),
    "init std 0.01": re.compile(r"std\w*\s*[:=][^#\n]*\b0\.01\b"),
}


def test_no_stage_keeps_its_own_copy_of_a_paper_number():
    """The recipe's numbers are assigned in vgg/recipe/paper.py only (a default written as a literal
    elsewhere would drift from it); the check catches a planted copy."""
    copies = [f"{path.relative_to(PACKAGE)}:{n}: {name}" for path in PACKAGE.rglob("*.py") if path.name != "paper.py"
              for n, line in enumerate(path.read_text().splitlines(), 1) for name, pattern in PAPER_LITERALS.items() if pattern.search(line)]
    assert copies == []
    planted = "    momentum: float = 0.9\n    lr = 1e-2\n"
    assert [name for line in planted.splitlines() for name, pattern in PAPER_LITERALS.items() if pattern.search(line)] == ["momentum 0.9", "lr 1e-2"]


def test_the_recipe_command_shows_the_paper_beside_a_profile(capsys):
    from vgg.cli import main

    assert main(["recipe", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "profile smoke" in out.splitlines()[0]
    assert re.search(r"batch \(global\)\s+256\s+64$", lines["batch (global)"])
    assert re.search(r"dropout on FC1, FC2\s+0\.5\s+0\.0$", lines["dropout on FC1, FC2"])
    assert "steps: /10 after 75%, 90% of the length" in lines["rate schedule"] and "glorot" in lines["random init"]
    assert main(["recipe", "--profile", "nope"]) == 2
    error = capsys.readouterr().err
    assert error.strip().splitlines() == [error.strip()] and "unknown profile 'nope'" in error
