"""Profiles: `paper`, `smoke`, `ci` (experiments/profiles.toml) map the paper's units onto a scale."""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from fractions import Fraction
from pathlib import Path

from vgg.nets.models import FEATURE_STRIDE
from vgg.recipe.paper import PAPER
from vgg.runtime.precision import CHOICES as PRECISION_CHOICES
from vgg.runtime.toml_tables import Key, check_table, count, fraction_key, number, numbers, positive_int, read_toml_file, text

SCHEDULES = ("plateau", "steps")
"""plateau: the rate drops when val top-1 stops improving (Sect. 3.1); steps: exactly at a profile's drop_deadlines."""
PROFILES_FILE = Path(__file__).resolve().parents[2] / "experiments" / "profiles.toml"


@dataclass(frozen=True)
class Profile:
    """How big a run is (image scale, width divisor, batch, epochs, validation size, data) and what
    the scale needs on top of the paper's recipe (dropout, plateau guards)."""

    name: str
    description: str
    image_scale: Fraction
    width: int
    batch_size: int
    val_images: int
    random_init: str
    data: str
    synthetic: dict = field(default_factory=dict)  # SynthSpec fields: generate `data` when absent
    transfer_data: str = ""  # Appendix B's toy target sets (`vgg.data.synthetic_transfer`), generated when absent ...
    transfer_synthetic: dict = field(default_factory=dict)  # ... with these TransferSpec fields
    max_epochs: int = 0  # a run's epoch limit (from a random init or from A) ...
    finetune_max_epochs: int = 0  # ... and a fine-tune's
    train_images: int = 0  # or its length in images seen (the paper's unit: 370K iterations of 256): epochs = this / the train set's size ...
    finetune_train_images: int = 0  # ... and a fine-tune's: a smaller train set trains as many steps
    box_train_images: int = 0  # a box regressor's fine-tune (Appendix A), in images seen (0: a fine-tune's length)
    box_lr: float = 0.0  # a box regressor's initial learning rate (0: finetune_lr, the paper's 1e-3)
    dropout: float = PAPER.dropout  # on FC1 and FC2
    plateau_patience: int = 0  # the plateau schedule's: epochs without a val gain before the rate drops (at least 1)
    plateau_threshold: float = 0.0  # val top-1 gain (points) that counts as an improvement
    plateau_min_epochs: int = 1  # epochs at each learning rate before it may drop
    near_chance: float = 0.0  # no drop until the best val accuracy is this far from chance towards 100%
    give_up_epochs: int = 0  # stop a net still at chance after this many epochs (0: never)
    drop_deadlines: tuple[float, ...] = ()  # fractions of a run's epoch limit by which the rate has dropped 1, 2, ... times
    drop_not_before: tuple[float, ...] = ()  # fractions of the epoch limit before which the plateau rule makes no 1st, 2nd, ... drop
    schedule: str = "plateau"  # plateau: drops when val top-1 stops improving (Sect. 3.1); steps: exactly at drop_deadlines
    finetune_lr: float = PAPER.finetune_lr
    finetune_schedule: str = ""  # the fine-tunes' schedule ("": the same as `schedule`); their epoch limit: finetune_max_epochs
    cache_decoded: bool = False  # keep decoded training and val images in memory (small datasets)
    eval_precision: str = "fp32"  # the test protocols' arithmetic: fp32 (the paper's), bf16 (autocast), or auto (`vgg.runtime.precision`)

    def __post_init__(self) -> None:
        for epochs, images in (("max_epochs", "train_images"), ("finetune_max_epochs", "finetune_train_images")):
            if (getattr(self, epochs) > 0) == (getattr(self, images) > 0):
                raise ValueError(f"profile {self.name}: give one of {epochs} (epochs) and {images} (images seen), a positive number")
        crop = self.size(PAPER.crop)
        if crop % FEATURE_STRIDE:
            raise ValueError(f"profile {self.name}: image_scale {self.image_scale} maps the 224 crop to {crop}, not a multiple of 32")
        for key in ("drop_deadlines", "drop_not_before"):
            values = list(getattr(self, key))
            if any(not 0 < f <= 1 for f in values) or values != sorted(values):
                raise ValueError(f"profile {self.name}: {key} {values} must be increasing fractions of the epoch limit in (0, 1]")
        if any(early > late for early, late in zip(self.drop_not_before, self.drop_deadlines)):
            raise ValueError(f"profile {self.name}: drop_not_before {list(self.drop_not_before)} must not come after drop_deadlines {list(self.drop_deadlines)}")
        for key in ("schedule", "finetune_schedule"):
            value = getattr(self, key)
            if value not in SCHEDULES and not (key == "finetune_schedule" and value == ""):
                raise ValueError(f"profile {self.name}: {key} must be one of {', '.join(SCHEDULES)}, got {value!r}")
        if "plateau" in (self.schedule, self.finetune_schedule or self.schedule) and self.plateau_patience < 1:
            raise ValueError(f"profile {self.name}: the plateau schedule needs plateau_patience (epochs without a gain before a drop) of at least 1")
        if "steps" in (self.schedule, self.finetune_schedule) and not self.drop_deadlines:
            raise ValueError(f"profile {self.name}: the steps schedule drops the rate at drop_deadlines; give them (fractions of the epoch limit)")
        if self.eval_precision not in PRECISION_CHOICES:
            raise ValueError(f"profile {self.name}: eval_precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.eval_precision!r}")

    def epoch_limit(self, fine_tune: bool, train_set_size: int, boxes: bool = False) -> int:
        """A run's epoch limit: `train_images` (or `finetune_train_images`, or for a box regressor
        `box_train_images` where given) over the train set's size, rounded (at least 1), where the
        profile gives it; else `max_epochs` (`finetune_max_epochs`)."""
        images = self.finetune_train_images if fine_tune else self.train_images
        if boxes and self.box_train_images:
            images = self.box_train_images
        if images:
            return max(1, round(images / max(1, train_set_size)))
        return self.finetune_max_epochs if fine_tune else self.max_epochs

    def size(self, paper_pixels: int) -> int:
        """An image size in paper units (crop 224, S 256, Q 384 ...) at this profile's scale."""
        return round(paper_pixels * self.image_scale)

    @property
    def crop(self) -> int:
        return self.size(PAPER.crop)

    @property
    def init_std(self) -> float:
        """The paper's N(0, 0.01^2) init, scaled by sqrt(width) so that each layer's output
        variance (fan-in x std^2) is the paper's at reduced width."""
        return PAPER.init_std * math.sqrt(self.width)

    def recipe_rows(self) -> list[tuple[str, str, str]]:
        """The whole recipe on one screen: (setting, the paper's value, this profile's), the paper's
        from `vgg.recipe.paper.PAPER`, a profile's where it overrides it (else the paper's)."""
        epochs = lambda n: f"{n} epoch{'s' if n != 1 else ''}"  # noqa: E731
        length = epochs(self.max_epochs) if self.max_epochs else f"{self.train_images:,} images seen"
        finetune = epochs(self.finetune_max_epochs) if self.finetune_max_epochs else f"{self.finetune_train_images:,} images seen"
        drop, deadlines = f"/{1 / PAPER.lr_drop_factor:g}", ", ".join(f"{f:.0%}" for f in self.drop_deadlines)
        if self.schedule == "plateau":
            schedule = (f"plateau: {drop} after {self.plateau_patience} epochs without a val top-1 gain over {self.plateau_threshold:g} points, "
                        f"at most {PAPER.lr_drops} times" + (f"; at least {self.plateau_min_epochs} epochs a rate" if self.plateau_min_epochs > 1 else "")
                        + (f"; none before val top-1 is {self.near_chance:.0%} of the way from chance" if self.near_chance else "")
                        + (f"; forced by {deadlines} of the length" if deadlines else ""))
        else:
            schedule = f"steps: {drop} after {deadlines} of the length"
        init = f"N(0, {PAPER.init_std}^2)" if self.random_init == "paper" else self.random_init
        return [
            ("batch (global)", str(PAPER.batch_size), str(self.batch_size)),
            ("SGD momentum / weight decay", f"{PAPER.momentum} / {PAPER.weight_decay:g}", f"{PAPER.momentum} / {PAPER.weight_decay:g}"),
            ("learning rate (fine-tunes)", f"{PAPER.lr:g} ({PAPER.finetune_lr:g})", f"{PAPER.lr:g} ({self.finetune_lr:g})"),
            ("rate schedule", f"plateau: /{1 / PAPER.lr_drop_factor:g} when val accuracy stops improving, {PAPER.lr_drops} times", schedule),
            ("fine-tunes' schedule", "not given", self.finetune_schedule or "the same"),
            ("length (fine-tunes)", f"{PAPER.epochs} epochs, {PAPER.iterations:,} iterations (not given)", f"{length} ({finetune})"),
            ("dropout on FC1, FC2", str(PAPER.dropout), str(self.dropout)),
            ("random init", f"N(0, {PAPER.init_std}^2)", init),
            ("B-E at S = 256 start from A", PAPER.init_from_a, PAPER.init_from_a),
            ("crop, pixels", str(PAPER.crop), f"{self.crop} (image scale {self.image_scale})"),
            ("widths", "Table 1", f"Table 1 / {self.width}" if self.width > 1 else "Table 1"),
            ("augmentation", f"random crop, flip p {PAPER.flip_probability}, RGB colour shift std {PAPER.colour_shift_std}",
             f"random crop, flip p {PAPER.flip_probability}, RGB colour shift std {PAPER.colour_shift_std}"),
            ("training scales S", f"{', '.join(map(str, PAPER.train_scales))}, or jittered in [{PAPER.jitter_range[0]}, {PAPER.jitter_range[1]}]",
             "the same, in paper units"),
            ("box regressors (App. A): lr, length", f"{PAPER.finetune_lr:g}, not given",
             f"{self.box_lr or self.finetune_lr:g}, " + (f"{self.box_train_images:,} images seen" if self.box_train_images else "the fine-tunes'")),
        ]

    def recipe_table(self) -> str:
        """`recipe_rows` as aligned text, under a header."""
        rows = [("setting", "paper (Sect. 3.1)", f"profile {self.name}"), *self.recipe_rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        return "\n".join(f"{setting:<{widths[0]}}  {paper:<{widths[1]}}  {ours}" for setting, paper, ours in rows)

    def to_dict(self) -> dict:
        fields = asdict(self)
        fields["image_scale"] = str(self.image_scale)
        return fields

    @classmethod
    def from_dict(cls, fields: dict) -> Profile:
        """A profile as stored in a checkpoint; fields it lacks (older checkpoints) come from the file."""
        known = {f.name for f in dataclass_fields(cls)}
        required = {f.name for f in dataclass_fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = required - fields.keys()
        if missing:
            fields = {**get_profile(fields["name"]).to_dict(), **fields}
        return cls(**{**{k: v for k, v in fields.items() if k in known}, "image_scale": Fraction(str(fields["image_scale"])),
                      "drop_deadlines": tuple(fields.get("drop_deadlines", ())), "drop_not_before": tuple(fields.get("drop_not_before", ()))})


def _synthetic_spec(value: object) -> bool:
    from vgg.data.synthetic import SynthSpec  # here: vgg.data.synthetic reads profiles through vgg.data.datasets

    known = {f.name for f in dataclass_fields(SynthSpec)}
    return all(key in known and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for key, v in value.items())


def _transfer_spec(value: object) -> bool:
    from vgg.data.synthetic_transfer import TransferSpec

    known = {f.name for f in dataclass_fields(TransferSpec)}
    return all(key in known and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for key, v in value.items())


def _fraction_of_one(value: float) -> bool:
    return 0 <= value < 1


PROFILE_KEYS: dict[str, Key] = {
    "description": text(required=True),
    "image_scale": fraction_key(required=True),
    "width": positive_int(required=True),
    "batch_size": positive_int(required=True),
    "val_images": count(required=True),
    "random_init": text(required=True, expected='a string: "glorot" or "paper"'),
    "data": text(required=True, expected="a string: the dataset folder"),
    "synthetic": Key((dict,), "a table of vgg.data.synthetic.SynthSpec's fields (classes, train_per_class, ...) as integers", _synthetic_spec),
    "transfer_data": text(expected="a string: the folder of the toy transfer sets (Appendix B)"),
    "transfer_synthetic": Key((dict,), "a table of vgg.data.synthetic_transfer.TransferSpec's fields (classes, per_class, ...) as integers", _transfer_spec),
    "max_epochs": count(),
    "finetune_max_epochs": count(),
    "train_images": count(),
    "finetune_train_images": count(),
    "box_train_images": count(),
    "box_lr": number("a number of at least 0 (0: finetune_lr)", lambda v: v >= 0),
    "dropout": number("a number in [0, 1)", _fraction_of_one),
    "plateau_patience": count(),
    "plateau_threshold": number("a number of at least 0", lambda v: v >= 0),
    "plateau_min_epochs": positive_int(),
    "near_chance": number("a number in [0, 1)", _fraction_of_one),
    "give_up_epochs": count(),
    "drop_deadlines": numbers("a list of fractions, e.g. [0.75, 0.9]"),
    "drop_not_before": numbers("a list of fractions, e.g. [0.3, 0.5]"),
    "schedule": text(expected=f"a string: {' or '.join(SCHEDULES)}"),
    "finetune_lr": number("a positive number", lambda v: v > 0),
    "finetune_schedule": text(expected=f"a string: {' or '.join(SCHEDULES)}, or \"\" for the schedule's"),
    "cache_decoded": Key((bool,), "true or false"),
    "eval_precision": text(expected=f"a string: {' or '.join(PRECISION_CHOICES)}"),
}
"""What each key of a profile in profiles.toml may hold (the fields of `Profile`, but its name)."""


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    """Every profile in the TOML file, each checked: a mistake is one line naming the file, the
    profile, the key and what is expected."""
    profiles = {}
    for name, table in read_toml_file(path, "profiles file").items():
        where = f"{path} [{name}]"
        fields = check_table(where, table, PROFILE_KEYS)
        try:
            profiles[name] = Profile(**{**fields, "name": name, "image_scale": Fraction(str(fields["image_scale"])),
                                        "drop_deadlines": tuple(fields.get("drop_deadlines", ())),
                                        "drop_not_before": tuple(fields.get("drop_not_before", ()))})
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return profiles


def get_profile(name: str, path: Path = PROFILES_FILE) -> Profile:
    """A profile by name, or a ValueError listing the known ones."""
    profiles = load_profiles(path)
    if name not in profiles:
        raise ValueError(f"unknown profile {name!r}; profiles in {path}: {', '.join(profiles)}")
    return profiles[name]
