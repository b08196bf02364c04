"""Preemption: SIGTERM/SIGUSR1 ask the run to save a checkpoint and exit cleanly.

SLURM sends SIGTERM (or, with ``--signal=USR1@120``, SIGUSR1) before killing a job. The handler
only sets a flag; the training loop checks it once per step, agreeing across ranks, so every
rank saves the same iteration. The signal reaches the ranks at slightly different times (and
twice where a launcher forwards it too): a rank may stop because another rank was signalled
and get its own signal while saving or exiting. So once the run stops early (or a signal
came), the handler stays latched after the ``with`` block: further SIGTERM/SIGUSR1 are logged
and ignored instead of killing a process that is finishing cleanly.
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
        self.latched = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            logger.warning("received %s: saving a checkpoint and exiting after this step",
                           signal.Signals(signum).name)  # fmt: skip
        self.received = signum

    @staticmethod
    def _late(signum, frame) -> None:
        logger.warning("ignored %s: this run is already saving and exiting",
                       signal.Signals(signum).name)  # fmt: skip

    def latch(self) -> None:
        """The run is stopping early: keep ignoring these signals after the ``with`` block."""
        self.latched = True

    def __enter__(self) -> ExitSignalHandler:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        keep_ignoring = self.latched or self.received is not None
        for sig, handler in self._previous.items():
            signal.signal(sig, self._late if keep_ignoring else handler)
        self._previous.clear()
