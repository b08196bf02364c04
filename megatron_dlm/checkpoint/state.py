"""What a resumed run continues from, besides weights and optimizer state."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class TrainState:
    """Progress that a resumed run must continue from (saved with every checkpoint)."""

    iteration: int = 0
    consumed_samples: int = 0
    """Global training samples consumed: the data position."""
    skipped_iters: int = 0
    """Total steps skipped for NaN/Inf so far."""
    floating_point_operations: float = 0.0
    """Model FLOPs spent so far (the x-axis of compute-matched comparisons)."""
    wandb_run_id: str | None = None
    """The Weights & Biases run this training run logs to (a resumed run continues it)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        """Inverse of :meth:`to_dict`; keys a newer writer added are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
