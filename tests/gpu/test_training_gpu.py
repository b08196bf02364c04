"""The trainer on GPUs: FP8 against bf16, grouped-GEMM MoE, FP8 parameter all-gather, and the
TP / CP / EP layouts against one GPU over NCCL (skipped without CUDA; multi-GPU tests skipped
with fewer than two GPUs).

Every run is the public path (``pretrain_dlm.py``'s parse_config + pretrain) on the real
standard-library data of ``tiny_data``, with Transformer Engine layers.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from megatron_dlm.testing import run_distributed
from tests.training.workers import TINY_MODEL, pretrain_worker

REPO = Path(__file__).resolve().parents[2]
TE = ["--transformer-impl", "transformer_engine"]
# Full-length steps: FP8 GEMMs need token counts that are multiples of 16.
STEADY = ["--dlm-random-length-prob", "0", "--eval-interval", "1000"]

needs_te = pytest.mark.skipif(
    importlib.util.find_spec("transformer_engine") is None, reason="Transformer Engine missing"
)
needs_fp8 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="FP8 needs compute capability >= 8.9 (Ada/Hopper)",
)
needs_two_gpus = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"
)


def _train(tiny_data, save: Path, *extra: str, world: int = 1) -> list[dict]:
    argv = [*tiny_data.flags(), *TINY_MODEL, *TE, *extra, "--save", str(save)]
    results = run_distributed(pretrain_worker, world, args=(argv, str(save)), timeout=600)
    return [r for r in results[0] if r["split"] == "train"]


@needs_te
@needs_fp8
@pytest.mark.parametrize("objective", ["dlm", "ar"])
def test_fp8_losses_follow_bf16(tiny_data, tmp_path, objective):
    """Same initial weights (CPU initialisation), same batches: FP8 GEMMs change the loss by
    quantisation noise only."""
    common = ["--objective", objective, "--bf16", "--train-iters", "8",
              "--micro-batch-size", "8", *STEADY]  # fmt: skip
    bf16 = _train(tiny_data, tmp_path / "bf16", *common)
    fp8 = _train(tiny_data, tmp_path / "fp8", *common, "--fp8-format", "hybrid")
    assert len(bf16) == len(fp8) == 8
    for ref, got in zip(bf16, fp8):
        assert got["loss"] == pytest.approx(ref["loss"], rel=2e-2), got["iteration"]
    assert fp8[-1]["loss"] < fp8[0]["loss"]


@needs_te
@needs_fp8
@pytest.mark.xfail(
    strict=False,
    reason="random lengths are rounded for TP/SP/CP only, not to FP8's multiple of 16 "
    "(training/pretrain.py length_multiple)",
)
def test_fp8_with_random_length_truncation(tiny_data, tmp_path):
    """Every step truncated to a random length, GEMMs in FP8: the run must still train."""
    records = _train(
        tiny_data, tmp_path, "--bf16", "--fp8-format", "hybrid", "--train-iters", "6",
        "--micro-batch-size", "2", "--dlm-random-length-prob", "1.0", "--eval-interval", "1000",
    )  # fmt: skip
    assert len(records) == 6 and all(r["loss"] == r["loss"] for r in records)


@needs_te
def test_grouped_gemm_moe_trains(tiny_data, tmp_path):
    moe = ["--num-experts", "4", "--moe-router-topk", "2", "--moe-aux-loss-coeff", "1e-2",
           "--moe-grouped-gemm", "--moe-token-dispatcher-type", "alltoall"]  # fmt: skip
    records = _train(
        tiny_data, tmp_path, *moe, "--bf16", "--train-iters", "30", "--micro-batch-size", "8",
        *STEADY,
    )  # fmt: skip
    losses = [r["loss"] for r in records]
    assert len(losses) == 30
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses


def _has_flag(flag: str) -> bool:
    help_text = subprocess.run(
        [sys.executable, str(REPO / "pretrain_dlm.py"), "--help"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return flag in help_text


@needs_te
@needs_fp8
def test_fp8_param_gather(tiny_data, tmp_path):
    if not _has_flag("--fp8-param-gather"):
        pytest.skip("pretrain_dlm.py has no --fp8-param-gather yet")
    common = ["--bf16", "--fp8-format", "hybrid", "--use-distributed-optimizer",
              "--train-iters", "8", "--micro-batch-size", "8", *STEADY]  # fmt: skip
    plain = _train(tiny_data, tmp_path / "plain", *common)
    gathered = _train(tiny_data, tmp_path / "gathered", *common, "--fp8-param-gather")
    for ref, got in zip(plain, gathered):
        assert got["loss"] == pytest.approx(ref["loss"], rel=3e-2), got["iteration"]


# --------------------------------------------------------------- layouts over NCCL
LAYOUT_COMMON = [
    "--train-iters", "4", "--micro-batch-size", "2", "--global-batch-size", "8",
    "--lr-warmup-iters", "0", "--eval-interval", "1000",
]  # fmt: skip


def _compare_layout(tiny_data, tmp_path, layout, model=(), reference_world=1):
    """fp32 on GPUs: the layout's losses and gradient norms equal the reference's.

    As tests/training/test_layouts.py, from the same iteration-0 checkpoint (--finetune). The
    tolerance allows for reduction-order differences of GPU kernels (not bit-exact as on CPU).
    """
    init = tmp_path / "init"
    _train(tiny_data, init, *model, *LAYOUT_COMMON, "--train-iters", "1", "--lr", "0",
           "--min-lr", "0")  # fmt: skip
    runs = {}
    for name, world, extra in (("reference", reference_world, []), ("layout", 2, layout)):
        runs[name] = _train(
            tiny_data, tmp_path / name, *model, *LAYOUT_COMMON, *extra, "--load", str(init),
            "--finetune", world=world,
        )  # fmt: skip
    reference, other = runs["reference"], runs["layout"]
    assert len(reference) == len(other) == 4
    for ref, got in zip(reference, other):
        assert got["loss"] == pytest.approx(ref["loss"], rel=5e-3), got["iteration"]
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=5e-2), got["iteration"]
    assert len({r["loss"] for r in reference}) == len(reference), "the weights did not change"


@needs_te
@needs_two_gpus
def test_tensor_parallel_equals_one_gpu(tiny_data, tmp_path):
    _compare_layout(
        tiny_data, tmp_path, ["--tensor-model-parallel-size", "2", "--sequence-parallel"],
        model=["--dlm-random-length-prob", "0"],
    )  # fmt: skip


@needs_te
@needs_two_gpus
@pytest.mark.xfail(
    strict=False, reason="context parallelism's sequence split in training/step.py is in progress"
)
def test_context_parallel_equals_one_gpu(tiny_data, tmp_path):
    _compare_layout(
        tiny_data, tmp_path, ["--context-parallel-size", "2"],
        model=["--dlm-random-length-prob", "0.5"],
    )  # fmt: skip


@needs_te
@needs_two_gpus
def test_expert_parallel_equals_data_parallel(tiny_data, tmp_path):
    # Megatron scales the router losses per micro-batch: keep DP=2 and move only the experts.
    moe = ["--num-experts", "4", "--moe-aux-loss-coeff", "1e-2",
           "--moe-token-dispatcher-type", "alltoall"]  # fmt: skip
    _compare_layout(
        tiny_data, tmp_path, ["--expert-model-parallel-size", "2"], model=moe, reference_world=2
    )


# --------------------------------------------------------------- the throughput bench
def test_throughput_bench_runs(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_throughput.py"), "--num-layers", "2",
         "--micro-batch-size", "1", "--micro-batches", "1", "--steps", "2", "--warmup", "1",
         "--variants", "dlm-bf16", "ar-bf16", "--output", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    for name in ("dlm-bf16", "ar-bf16"):
        assert summary["variants"][name]["tokens_per_s_per_gpu"] > 0
    assert "dlm/ar tokens/s (bf16)" in summary["ratios"]
