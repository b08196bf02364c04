"""Preemption as SLURM delivers it: SIGTERM to every process of the job, mid-run.

The job's process group (the trainer, torchrun's agent, megatron-core's checkpoint-writer helper
processes) gets the signal at once. The save must still complete, and the resumed run must match
an uninterrupted one exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from megatron_dlm.checkpoint import read_tracker, resolve_checkpoint, verify_manifest
from megatron_dlm.testing import run_distributed
from tests.training.workers import TINY_MODEL, pretrain_worker, read_metrics

REPO = Path(__file__).resolve().parents[2]
ITERS = "40"


def _train_losses(records: list[dict]) -> dict[int, float]:
    return {r["iteration"]: r["loss"] for r in records if r["split"] == "train"}


def _argv(tiny_data, save: Path, *extra: str) -> list[str]:
    return [*tiny_data.flags(), *TINY_MODEL, "--train-iters", ITERS, "--save-interval", "5",
            "--eval-interval", "1000", "--save", str(save), *extra]  # fmt: skip


def _preempt(cmd: list[str], run: Path) -> int:
    """Run ``cmd`` as its own process group, SIGTERM the whole group after a few steps."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if len(read_metrics(run)) >= 8 and (run / "iter_0000005").is_dir():
                break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = output.decode(errors="replace")
    assert "BrokenPipeError" not in text, text[-4000:]
    return proc.returncode


@pytest.mark.parametrize(
    "ranks, extra",
    [
        (1, ()),
        pytest.param(2, ("--async-save",), marks=pytest.mark.slow),
        (1, ("--async-save",)),
        pytest.param(2, (), marks=pytest.mark.slow),
    ],
    ids=["1rank", "2ranks-async", "1rank-async", "2ranks"],
)
def test_group_sigterm_saves_and_the_resume_is_exact(tiny_data, tmp_path, ranks, extra):
    reference = tmp_path / "reference"
    straight = run_distributed(pretrain_worker, ranks, args=(_argv(tiny_data, reference, *extra),
                                                             str(reference)))  # fmt: skip
    expected = _train_losses(next(r for r in straight if r))
    run = tmp_path / "preempted"
    if ranks == 1:
        cmd = [sys.executable, "pretrain_dlm.py", *_argv(tiny_data, run, *extra)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={ranks}",
            "pretrain_dlm.py",
            *_argv(tiny_data, run, *extra),
        ]
    code = _preempt(cmd, run)
    if ranks == 1:
        assert code == 0  # the trainer saved and exited cleanly (torchrun itself reports 1)
    stopped = read_tracker(run)
    assert stopped is not None and 5 < stopped < int(ITERS), f"stopped at {stopped}"
    assert stopped % 5, "the signal's own save (not only an interval save) must be complete"
    assert verify_manifest(resolve_checkpoint(run), collective=False)
    before = _train_losses(read_metrics(run))
    resumed = run_distributed(pretrain_worker, ranks, args=(_argv(tiny_data, run, *extra),
                                                            str(run)))  # fmt: skip
    history = _train_losses(next(r for r in resumed if r))  # metrics.jsonl: the whole run
    assert max(before) == stopped and max(history) == int(ITERS)
    assert history == expected
