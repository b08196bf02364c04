"""The documented launch: `torchrun ... pretrain_dlm.py` and `tools/generate.py` at TP=2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from megatron_dlm.testing import run_distributed
from tests.training.workers import TINY_MODEL, read_metrics

REPO = Path(__file__).resolve().parents[2]


def _torchrun(*args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *args]  # fmt: skip
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow  # over 60 s on a 2-core machine: make test-slow
def test_torchrun_trains_and_generates_with_tensor_parallelism(tiny_data, tmp_path):
    save = tmp_path / "run"
    proc = _torchrun(
        "pretrain_dlm.py", *tiny_data.flags(), *TINY_MODEL, "--train-iters", "3",
        "--tensor-model-parallel-size", "2", "--sequence-parallel", "--save", str(save),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["iteration"] for r in read_metrics(save) if r["split"] == "train"] == [1, 2, 3]
    assert "iteration        3/       3" in proc.stderr
    out = tmp_path / "samples.jsonl"
    proc = _torchrun(
        "tools/generate.py", "--load", str(save), "--tensor-model-parallel-size", "2",
        "--prompt", "def f(x):", "--gen-length", "8", "--block-length", "8", "--steps", "8",
        "--output", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["prompt"] == "def f(x):" and record["forward_passes"] == 8


@pytest.mark.slow  # a torchrun launch and two 2-rank runs: 70-140 s on a loaded 2-core machine
def test_torchrun_sigterm_with_the_recipe_optimizer_resumes_exactly(tiny_data, tmp_path):
    """The headline recipe's optimizer settings (distributed optimizer, overlapped gradient
    reduction and parameter gathering) under torchrun: SIGTERM to every rank mid-run (as SLURM
    sends it) saves and exits 0; the resumed run logs the losses of an uninterrupted one and
    ends with the same weights."""
    from tests.training.test_lifecycle import BATCH, OVERLAP, assert_same_weights
    from tests.training.workers import pretrain_worker

    flags = [*tiny_data.flags(), *TINY_MODEL, *BATCH, *OVERLAP, "--train-iters", "40",
             "--eval-interval", "1000"]  # fmt: skip
    reference = tmp_path / "reference"
    (straight, _) = run_distributed(
        pretrain_worker, 2, args=([*flags, "--save", str(reference)], str(reference))
    )
    run = tmp_path / "preempted"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "pretrain_dlm.py", *flags, "--save", str(run)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while len(read_metrics(run)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    for worker in psutil.Process(proc.pid).children():
        worker.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output.decode()[-3000:]
    stopped = int((run / "latest_checkpointed_iteration.txt").read_text())
    assert 3 <= stopped < 40, "the signal should stop the run early"
    (resumed, _) = run_distributed(
        pretrain_worker, 2, args=([*flags, "--save", str(run)], str(run))
    )
    assert [(r["split"], r["iteration"], r["loss"]) for r in resumed] == [
        (r["split"], r["iteration"], r["loss"]) for r in straight
    ]
    assert_same_weights(reference / "iter_0000040", run / "iter_0000040")
