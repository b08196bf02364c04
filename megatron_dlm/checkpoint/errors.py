"""The one error type of the checkpoint package."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model being trained or loaded.

    The message names the checkpoint directory (or the flag that pointed at it).
    """
