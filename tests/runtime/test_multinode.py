"""Two "nodes" on one machine: torchrun's c10d rendezvous, one rank per node, as on a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dlm.checkpoint import read_tracker
from megatron_dlm.runtime.distributed import free_port
from megatron_dlm.testing import run_distributed
from tests.training.workers import TINY_MODEL, pretrain_worker, read_metrics

REPO = Path(__file__).resolve().parents[2]


def _launch_two_nodes(argv: list[str]) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                endpoint,
                "--rdzv-id",
                "megatron-dlm-test",
                "pretrain_dlm.py",
                *argv,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for node in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]


@pytest.mark.slow  # over 60 s on a 2-core machine: make test-slow
def test_two_node_torchrun_trains_saves_and_resumes(tiny_data, tmp_path):
    run = tmp_path / "two_nodes"
    argv = [*tiny_data.flags(), *TINY_MODEL, "--train-iters", "6", "--save", str(run)]
    _launch_two_nodes([*argv, "--exit-interval", "3"])
    assert read_tracker(run) == 3
    _launch_two_nodes(argv)
    assert read_tracker(run) == 6
    history = {r["iteration"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    reference = tmp_path / "reference"
    straight = run_distributed(
        pretrain_worker, 2, args=([*argv[:-1], str(reference)], str(reference))
    )
    expected = {r["iteration"]: r["loss"] for r in straight[0] if r["split"] == "train"}
    assert history == expected
