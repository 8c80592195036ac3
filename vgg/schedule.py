"""The paper's learning-rate schedule: divide by 10 whenever validation accuracy stops improving.

Sect. 3.1: the rate started at 1e-2 and was decreased by a factor of 10 when validation
accuracy stopped improving; it was decreased 3 times in all. Here a plateau is `patience`
epochs in a row without a new best val top-1 accuracy; after `max_drops` drops, the next
plateau ends training (as does the epoch limit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class PlateauSchedule:
    lr: float
    factor: float = 0.1
    patience: int = 2
    max_drops: int = 3
    best: float = float("-inf")
    epochs_without_gain: int = 0
    drops: int = 0
    finished: bool = False

    def step(self, val_accuracy: float) -> str:
        """Record one epoch's val accuracy; returns "improved", "wait", "drop" or "stop"."""
        if val_accuracy > self.best:
            self.best, self.epochs_without_gain = val_accuracy, 0
            return "improved"
        self.epochs_without_gain += 1
        if self.epochs_without_gain < self.patience:
            return "wait"
        self.epochs_without_gain = 0
        if self.drops >= self.max_drops:
            self.finished = True
            return "stop"
        self.drops += 1
        self.lr *= self.factor
        return "drop"

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
