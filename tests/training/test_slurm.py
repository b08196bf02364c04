"""examples/slurm/train.sbatch requeues itself after a time-limit or signal stop, not otherwise.

SLURM is not installed here: ``srun``, ``squeue`` and ``scontrol`` are stand-ins on PATH
(one task; the time left is what the test says; ``scontrol requeue`` is recorded), and the
script runs the real pretrain_dlm.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from megatron_dlm.runtime.distributed import free_port
from tests.training.workers import TINY_MODEL, read_metrics

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "slurm" / "train.sbatch"

STUBS = {
    # srun [options] COMMAND...: run COMMAND as the job's only task, forwarding signals to it.
    "srun": """
        while [[ $1 == --* ]]; do shift; done
        export SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0
        "$@" &
        child=$!
        trap 'kill -s USR1 $child' USR1
        trap 'kill -s TERM $child' TERM
        while kill -0 $child 2>/dev/null; do wait $child; status=$?; done
        exit $status
    """,
    "squeue": 'echo "$FAKE_TIME_LEFT"',
    "scontrol": """
        case $1 in
          show) echo localhost ;;
          requeue) echo "requeue $2" >> "$FAKE_REQUEUES" ;;
        esac
    """,
}


@pytest.fixture
def slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
        stub.chmod(0o755)
    return bin_dir


def _launch(slurm, tmp_path, tiny_data, save, time_left, *extra, restarts=0):
    recipe = tmp_path / "recipe.yaml"  # the data in a recipe, the model on the command line
    flags = [*tiny_data.flags(), "--eval-interval", "1000"]
    recipe.write_text(yaml.safe_dump({k.lstrip("-"): v for k, v in zip(flags[::2], flags[1::2])}))
    env = dict(
        os.environ,
        PATH=f"{slurm}:{os.environ['PATH']}",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        PYTHONWARNINGS="ignore",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST="localhost",
        SLURM_RESTART_COUNT=str(restarts),
        MASTER_PORT=str(free_port()),
        FAKE_TIME_LEFT=time_left,
        FAKE_REQUEUES=str(tmp_path / "requeues.txt"),
        PRETRAIN=str(REPO / "pretrain_dlm.py"),
        PYTHON=sys.executable,
        EXIT_MARGIN_MINS="1",
    )
    cmd = ["bash", str(SCRIPT), str(recipe), *TINY_MODEL, "--save", str(save), *extra]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _requeues(tmp_path) -> list[str]:
    path = tmp_path / "requeues.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow  # two pretrain_dlm.py launches: 45-110 s on a loaded 2-core machine
def test_time_limit_stop_requeues_and_the_finished_run_does_not(slurm, tmp_path, tiny_data):
    save = tmp_path / "run"
    # 61 s left, 1 minute margin: --exit-duration-in-mins 0.02 (1 s), over after the first step.
    proc = _launch(slurm, tmp_path, tiny_data, save, "1:01", "--train-iters", "10")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "--exit-duration-in-mins 0.02" in output
    stopped = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert 1 <= stopped < 10
    assert _requeues(tmp_path) == ["requeue 4242"]
    # The requeued job (plenty of time now) resumes there and finishes: no further requeue.
    proc = _launch(slurm, tmp_path, tiny_data, save, "1-00:00:00", "--train-iters", "10",
                   restarts=1)  # fmt: skip
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "training finished" in output
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == "10"
    iterations = [r["iteration"] for r in read_metrics(save) if r["split"] == "train"]
    assert iterations == list(range(1, 11))
    assert _requeues(tmp_path) == ["requeue 4242"]


def test_signal_stop_requeues(slurm, tmp_path, tiny_data):
    """USR1 to the batch script (SLURM's --signal=B:USR1@120): forwarded, saved, requeued."""
    save = tmp_path / "run"
    proc = _launch(slurm, tmp_path, tiny_data, save, "UNLIMITED", "--train-iters", "200")
    deadline = time.monotonic() + 300
    while len(read_metrics(save)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "--exit-duration-in-mins" not in output  # no time limit known
    stopped = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert 3 <= stopped < 200
    assert "stopped early (SIGUSR1): requeueing" in output
    assert _requeues(tmp_path) == ["requeue 4242"]


def test_a_failed_run_is_not_requeued(slurm, tmp_path, tiny_data):
    save = tmp_path / "run"
    proc = _launch(slurm, tmp_path, tiny_data, save, "1:03", "--train-iters", "-1")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "not requeued" in output
    assert _requeues(tmp_path) == []
