"""Preemption: SIGTERM/SIGUSR1 ask the run to save a checkpoint and exit cleanly.

SLURM sends SIGTERM (or, with ``--signal=USR1@120``, SIGUSR1) before killing a job. The handler
only sets a flag; the training loop checks it once per step, agreeing across ranks, so every
rank saves the same iteration.
"""

from __future__ import annotations

import logging
import signal

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class ExitSignalHandler:
    """``with ExitSignalHandler() as handler:`` sets ``handler.received`` on a signal.

    The trainer folds the flag into its per-step all-reduce, so every rank stops at the same
    iteration without an extra collective.
    """

    def __init__(self, signals=HANDLED_SIGNALS, enabled: bool = True):
        self.signals = tuple(signals) if enabled else ()
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            logger.warning("received %s: saving a checkpoint and exiting after this step",
                           signal.Signals(signum).name)  # fmt: skip
        self.received = signum

    def __enter__(self) -> ExitSignalHandler:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
