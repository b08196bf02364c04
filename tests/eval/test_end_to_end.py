"""Evaluation as users run it: export a trained checkpoint, lm-eval on the offline tasks,
the CLI wrappers (tools/evaluate.py, tools/generate.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dlm.testing import run_distributed
from tests.eval import workers
from tests.training.workers import TINY_MODEL, pretrain_worker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny DLM trained for a few steps, and its Hugging Face export."""
    root = tmp_path_factory.mktemp("trained")
    argv = [*tiny_data.flags(), *TINY_MODEL, "--train-iters", "4", "--save", str(root / "ckpt")]
    run_distributed(pretrain_worker, 1, args=(argv, str(root / "ckpt")))
    run_distributed(workers.export_worker, 1, args=(str(root / "ckpt"), str(root / "hf")))
    return root


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore")  # fmt: skip


def test_simple_evaluate_on_the_offline_tasks(trained):
    (results,) = run_distributed(
        workers.simple_evaluate_worker,
        1,
        args=(str(trained / "hf"), ["python_nextline_mc", "humaneval_offline"], 4),
    )
    assert 0.0 <= results["python_nextline_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["humaneval_offline"]["pass@1,none"] <= 1.0


def test_megatron_checkpoint_evaluates_directly(trained):
    (results,) = run_distributed(
        workers.simple_evaluate_worker, 1, args=(str(trained / "ckpt"), ["python_nextline_mc"], 4)
    )
    assert 0.0 <= results["python_nextline_mc"]["acc,none"] <= 1.0


def test_evaluate_cli_converts_a_checkpoint_first(trained, tmp_path):
    proc = subprocess.run(
        [sys.executable, "tools/evaluate.py", "--load", str(trained / "ckpt"),
         "--convert-to", str(tmp_path / "hf"), "--model_args", "mc_num=4",
         "--tasks", "python_nextline_mc", "--limit", "3", "--output_path", str(tmp_path / "out")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "hf" / "config.json").is_file()
    results = list((tmp_path / "out").rglob("results*.json"))
    assert results and "python_nextline_mc" in json.loads(results[0].read_text())["results"]


def test_generate_cli_writes_jsonl(trained, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add(a, b):\\n\nimport sys\n")
    out = tmp_path / "samples.jsonl"
    proc = subprocess.run(
        [sys.executable, "tools/generate.py", "--load", str(trained / "ckpt"),
         "--prompts-file", str(prompts), "--gen-length", "16", "--block-length", "8",
         "--steps", "16", "--threshold", "0.5", "--output", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["def add(a, b):\n", "import sys"]
    for record in records:
        assert {"text", "num_tokens", "forward_passes", "steps", "seconds"} <= set(record)
        assert 1 <= record["forward_passes"] <= 16
    bad = subprocess.run(
        [sys.executable, "tools/generate.py", "--load", str(trained / "ckpt"),
         "--prompts-file", str(tmp_path / "missing.txt")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "--prompts-file: file not found" in bad.stderr
