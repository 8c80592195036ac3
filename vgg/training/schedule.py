"""The paper's learning-rate schedule: divide by 10 whenever validation accuracy stops improving.

Sect. 3.1: the rate started at 1e-2 and was decreased by a factor of 10 when validation
accuracy stopped improving; it was decreased 3 times in all. Here a plateau is `patience`
epochs in a row without a new best val top-1 accuracy (a gain of more than `threshold`
points); after `max_drops` drops, the next plateau ends training (as does the epoch limit).

The paper gives no patience or threshold; two guards keep the rule from reacting to noise
before a net has learned anything (profile settings, `experiments/profiles.toml`):
- `min_stage_epochs`: each rate runs at least this many epochs before it may drop (or stop);
- `near_chance`: no drop (or stop) while the best val accuracy has covered less than this
  fraction of the way from chance (`chance_accuracy`, 100/K % for K classes) to 100%.
A plateau that a guard holds back is reported as "hold"; the rate drops as soon as the
guards allow it if the net has still not improved by then.

On a fixed epoch budget a net can still be improving at the first rate when the budget ends,
and its result is then the last noisy iterate of that rate. `deadlines` (epoch counts, from
the profile's `drop_deadlines`) force the k-th drop after deadlines[k-1] epochs if the val
curve has not caused it by then ("deadline"), so that every net ends at a lower rate; the
near-chance guard still applies. `earliest` (epoch counts, from the profile's
`drop_not_before`) is the other side of that window: the plateau rule makes the k-th drop only
after earliest[k-1] epochs, so that a stall of a still-improving net early in training does not
end its first rate ("hold").

`mode="steps"` is the fixed alternative for users who want the drops at set epochs: the rate
drops exactly after each of `deadlines` epochs, whatever the val curve (no guards, no early stop).

A net that has not left chance at all (`STUCK_FRACTION` of the way) after `give_up_epochs`
epochs is given up on ("give up"): more epochs at the same rate would not help, and the
guard above keeps the rate from dropping.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from vgg.recipe.paper import PAPER

if TYPE_CHECKING:  # vgg.recipe.profiles imports this module
    from vgg.recipe.profiles import Profile

STUCK_FRACTION = 0.05
"""Below this fraction of the way from chance to 100%, a net has not started to learn."""


def drop_earliest_epochs(fractions: tuple[float, ...], max_epochs: int) -> list[int]:
    """The epoch counts before which a run of `max_epochs` makes no 1st, 2nd, ... plateau drop."""
    return [math.ceil(f * max_epochs) for f in fractions]


def drop_deadline_epochs(fractions: tuple[float, ...], max_epochs: int) -> list[int]:
    """The epoch counts by which a run of `max_epochs` must have dropped its rate 1, 2, ... times:
    each fraction of the limit rounded to the nearest epoch (halves up), so that a short run (a
    3-epoch fine-tune: 0.75 -> after epoch 2) still drops; a deadline at the limit itself would
    only lower the rate after training, so it is left out."""
    return [epochs for epochs in (math.floor(f * max_epochs + 0.5) for f in fractions) if 0 < epochs < max_epochs]


@dataclass
class PlateauSchedule:
    lr: float
    factor: float = PAPER.lr_drop_factor
    patience: int = 2
    max_drops: int = PAPER.lr_drops
    threshold: float = 0.0
    min_stage_epochs: int = 1
    chance_accuracy: float = 0.0
    near_chance: float = 0.0
    give_up_epochs: int = 0
    deadlines: list[int] = field(default_factory=list)
    earliest: list[int] = field(default_factory=list)
    mode: str = "plateau"
    best: float = float("-inf")
    epochs: int = 0
    epochs_without_gain: int = 0
    stage_epochs: int = 0
    drops: int = 0
    drop_epochs: list[int] = field(default_factory=list)
    deadline_drop_epochs: list[int] = field(default_factory=list)  # the drops among drop_epochs that a deadline forced
    finished: bool = False
    gave_up: bool = False

    def learned_fraction(self) -> float:
        """How far the best val accuracy (in %) has come from chance towards 100%: 0 at chance, 1 when perfect."""
        if self.best == float("-inf"):
            return 0.0
        return (self.best - self.chance_accuracy) / (100.0 - self.chance_accuracy)

    def near_chance_now(self) -> bool:
        """True while the net has not yet left chance far enough for a drop to mean a plateau."""
        return self.learned_fraction() < self.near_chance

    def step(self, val_accuracy: float) -> str:
        """Record one epoch's val top-1 accuracy (%); returns "improved", "wait", "hold", "drop",
        "deadline" (a drop that a deadline forced), "stop" or "give up"."""
        self.epochs += 1
        self.stage_epochs += 1
        improved = val_accuracy > self.best + self.threshold
        if improved:
            self.best, self.epochs_without_gain = val_accuracy, 0
        else:
            self.epochs_without_gain += 1
        if self.mode == "steps":
            if self.drops < self._deadlines_passed():
                self._drop()
                return "drop"
            return "improved" if improved else "wait"
        if self.give_up_epochs and self.epochs >= self.give_up_epochs and self.learned_fraction() < STUCK_FRACTION:
            self.finished = self.gave_up = True
            return "give up"
        if self.deadline_due():
            self._drop()
            self.deadline_drop_epochs.append(self.epochs - 1)
            return "deadline"
        if self.epochs_without_gain == 0:
            return "improved"
        if self.epochs_without_gain < self.patience:
            return "wait"
        if self.stage_epochs < self.min_stage_epochs or self.near_chance_now() or self.too_early():
            return "hold"
        if self.drops >= self.max_drops:
            self.epochs_without_gain, self.stage_epochs = 0, 0
            self.finished = True
            return "stop"
        self._drop()
        return "drop"

    def too_early(self) -> bool:
        """True while `earliest` holds back the next drop."""
        return self.drops < len(self.earliest) and self.epochs < self.earliest[self.drops]

    def deadline_due(self) -> bool:
        """True when `deadlines` ask for more drops after this many epochs than the curve has caused."""
        return self.drops < min(self._deadlines_passed(), self.max_drops) and not self.near_chance_now()

    def _deadlines_passed(self) -> int:
        return sum(self.epochs >= deadline for deadline in self.deadlines)

    def _drop(self) -> None:
        self.epochs_without_gain, self.stage_epochs = 0, 0
        self.drops += 1
        self.drop_epochs.append(self.epochs - 1)
        self.lr *= self.factor

    def describe(self, action: str, max_epochs: int) -> str:
        """What `step`'s `action` did, for the epoch's log line ("; lr -> 0.001"; empty when nothing did)."""
        way = f"{max(0.0, self.learned_fraction()):.0%} of the way"
        if action == "hold":
            earliest = f"; no drop {self.drops + 1} before {self.earliest[self.drops]} epochs)" if self.too_early() else ")"
            return f"; plateau, but the lr holds ({way} from chance, {self.stage_epochs} epoch(s) at this rate{earliest}"
        return {
            "drop": f"; lr -> {self.lr:g}",
            "deadline": f"; lr -> {self.lr:g} (drop {self.drops} is due after {self.epochs} of {max_epochs} epochs)",
            "stop": "; plateau after the last drop: stopping",
            "give up": f"; still at chance after {self.epochs} epochs ({way}): stopping",
        }.get(action, "")

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def profile_schedule(
    profile: Profile, lr: float, classes: int, max_epochs: int, fine_tune: bool, patience: int | None = None, boxes: bool = False
) -> PlateauSchedule:
    """`profile`'s schedule (its fine-tuning variant for a fine-tune) for a run of `max_epochs` over
    `classes` classes, starting at `lr`; `patience` overrides the profile's. A box regressor's (`boxes`) accuracy,
    the share of boxes right, has no chance level: the near-chance guard and giving up do not apply to it."""
    return PlateauSchedule(
        lr=lr,
        patience=patience or profile.plateau_patience,
        threshold=profile.plateau_threshold,
        min_stage_epochs=profile.plateau_min_epochs,
        chance_accuracy=0.0 if boxes else 100.0 / classes,
        near_chance=0.0 if boxes else profile.near_chance,
        give_up_epochs=0 if boxes else profile.give_up_epochs,
        deadlines=drop_deadline_epochs(profile.drop_deadlines, max_epochs),
        earliest=drop_earliest_epochs(profile.drop_not_before, max_epochs),
        mode=(profile.finetune_schedule or profile.schedule) if fine_tune else profile.schedule,
    )
