"""GPU readiness tooling, the parts a CPU can check: the bench's plan and errors, the summary,
and tools/gpu_check.sh end to end on a machine without a GPU (which must say NOT READY)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "gpu_throughput.py"
SUMMARY = REPO / "tools" / "gpu_check_summary.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _run(*cmd, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("env", ENV)
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=600, check=False, **kwargs
    )


def test_bench_dry_run_plans_the_recipe_without_a_gpu(tmp_path):
    out = tmp_path / "plan.json"
    proc = _run(sys.executable, BENCH, "--dry-run", "--world-size", "8", "--output", out)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(out.read_text())["plan"]
    assert list(plan) == ["dlm-bf16", "ar-bf16", "dlm-fp8", "ar-fp8"]
    for entry in plan.values():  # the 1.7B recipe's model, 2 micro-batches of 4 on 8 GPUs
        assert entry["parameters"] == 1_732_895_744
        assert entry["tokens_per_step"] == 2 * 4 * 8 * 2048
    # Bidirectional attention computes all s^2 scores, causal half: DLM steps cost more.
    assert plan["dlm-bf16"]["flops_per_step"] > plan["ar-bf16"]["flops_per_step"]
    assert plan["dlm-fp8"]["flops_per_step"] == plan["dlm-bf16"]["flops_per_step"]
    assert "dlm-bf16: 28 layers, 1.733B parameters" in proc.stdout


def test_bench_rejects_bad_flags():
    proc = _run(sys.executable, BENCH, "--steps", "0", "--dry-run")
    assert proc.returncode == 2 and "--steps" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_bench_without_a_gpu_is_a_clear_error():
    proc = _run(sys.executable, BENCH, "--steps", "1")
    assert proc.returncode == 2 and "needs a CUDA GPU (or --dry-run)" in proc.stderr
    assert "Traceback" not in proc.stderr


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="{failures}" skipped="1" tests="3"><testcase classname="tests.gpu.test_x" name="test_a"/>
<testcase classname="tests.gpu.test_x" name="test_b">{failure}</testcase>
<testcase classname="tests.gpu.test_x" name="test_c"><skipped message="needs 2 GPUs"/></testcase>
</testsuite></testsuites>"""


def _bench_json() -> dict:
    row = dict(step_ms=500.0, tokens_per_s_per_gpu=30000.0, tflops_per_gpu=350.0, mfu=0.354,
               num_layers=28, micro_batch_size=4, peak_memory_gib=50.0)  # fmt: skip
    return {
        "gpu": "NVIDIA H100 80GB HBM3", "gpus": 1, "layers": "transformer_engine",
        "versions": {"torch": "2.9"}, "peak_bf16_tflops": 989.0,
        "variants": {"dlm-bf16": row, "ar-bf16": dict(row, tokens_per_s_per_gpu=32000.0),
                     "dlm-fp8": {"skipped": "compute capability < 8.9"}},
        "ratios": {"dlm/ar tokens/s (bf16)": 0.9375},
    }  # fmt: skip


def test_summary_of_a_good_run_says_ready(tmp_path):
    (tmp_path / "tests_gpu.xml").write_text(JUNIT.format(failures=0, failure=""))
    (tmp_path / "bench.json").write_text(json.dumps(_bench_json()))
    proc = _run(sys.executable, SUMMARY, tmp_path, "--tests-rc", "0", "--bench-rc", "0")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "gpu_check_results.txt").read_text()
    assert "verdict      : READY" in text and "NVIDIA H100 80GB HBM3" in text
    assert "2 passed, 0 failed, 0 errors, 1 skipped" in text
    assert "ratio dlm/ar tokens/s (bf16) = 0.938" in text and "35.4%" in text
    assert "dlm-fp8 skipped: compute capability < 8.9" in text
    summary = json.loads((tmp_path / "gpu_check_results.json").read_text())
    assert summary["ok"] and summary["bench"]["variants"]["ar-bf16"]["tflops_per_gpu"] == 350.0


def test_summary_of_a_failed_test_and_a_timed_out_bench(tmp_path):
    failure = '<failure message="AssertionError: loss differs">trace</failure>'
    (tmp_path / "tests_gpu.xml").write_text(JUNIT.format(failures=1, failure=failure))
    proc = _run(sys.executable, SUMMARY, tmp_path, "--tests-rc", "1", "--bench-rc", "124")
    assert proc.returncode == 1
    text = (tmp_path / "gpu_check_results.txt").read_text()
    assert "FAILED tests.gpu.test_x::test_b: AssertionError: loss differs" in text
    assert "bench        : timed out" in text and "verdict      : NOT READY" in text


@pytest.mark.slow  # two Python processes and a pytest session: ~15-45 s
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the script on a machine without GPU")
def test_gpu_check_without_a_gpu_writes_results_and_says_not_ready(tmp_path):
    results = tmp_path / "results"
    proc = _run("bash", REPO / "tools" / "gpu_check.sh", results, cwd=tmp_path,
                env=dict(ENV, PYTHON=sys.executable))  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"results: {results}/gpu_check_results.txt" in proc.stdout
    text = (results / "gpu_check_results.txt").read_text()
    assert "tests/gpu    : passed" in text and " skipped" in text  # all skipped without CUDA
    assert "bench        : could not run" in text and "verdict      : NOT READY" in text
    assert {p.name for p in results.iterdir()} == {
        "tests_gpu.log", "tests_gpu.xml", "bench.log", "gpu_check_results.json",
        "gpu_check_results.txt",
    }  # fmt: skip
