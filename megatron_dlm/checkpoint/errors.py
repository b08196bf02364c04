"""The one error type of the checkpoint package."""

from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model being trained or loaded.

    The message names the checkpoint directory (or the flag that pointed at it).
    """


class CheckpointWriteError(CheckpointError):
    """A save failed while writing (full disk, I/O error): the run started and cannot go on.

    Nothing of the failed save is left, and the tracker still names the previous checkpoint.
    """
