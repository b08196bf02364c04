"""The documented launch: `torchrun ... pretrain_dlm.py` and `tools/generate.py` at TP=2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.training.workers import TINY_MODEL, read_metrics

REPO = Path(__file__).resolve().parents[2]


def _torchrun(*args: str, timeout: int = 420) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           *args]  # fmt: skip
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


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
