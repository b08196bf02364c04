"""The exit-signal handler: a flag per signal, and no death by a late duplicate once stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from megatron_dlm.training.signals import ExitSignalHandler

    latch, signalled = sys.argv[1] == "1", sys.argv[2] == "1"
    with ExitSignalHandler() as handler:
        if signalled:  # else: stopping because another rank was signalled
            os.kill(os.getpid(), signal.SIGTERM)
            assert handler.received == signal.SIGTERM
        if latch:
            handler.latch()
    print("left the block", flush=True)
    # A second signal, as when SLURM and a launcher both forward one, arriving while exiting.
    os.kill(os.getpid(), signal.SIGUSR1)
    print("survived", flush=True)
    """
)


def _run(latch: bool, signalled: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", SCRIPT, str(int(latch)), str(int(signalled))]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_a_late_signal_after_a_stop_is_ignored():
    for latch, signalled in ((True, True), (False, True), (True, False)):
        proc = _run(latch, signalled)
        assert proc.returncode == 0, (latch, signalled, proc.stderr[-2000:])
        assert "survived" in proc.stdout
        assert "ignored SIGUSR1" in proc.stderr


def test_without_a_stop_the_previous_handlers_come_back():
    proc = _run(latch=False, signalled=False)
    assert "left the block" in proc.stdout and "survived" not in proc.stdout
    assert proc.returncode == -signal.SIGUSR1
