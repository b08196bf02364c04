"""The trainer gives the same losses and gradient norms at any layout as on one rank.

Every run starts from the same weights (an iteration-0 checkpoint loaded with --finetune, which
megatron-core reshards to the layout) and sees the same global batches, randomly truncated on
half the steps (one length per step). Dropout is off: it is keyed by the TP rank. With sequence
parallelism truncated lengths round to a multiple of TP, so that test does not truncate.
"""

from __future__ import annotations

import pytest

from megatron_dlm.testing import run_distributed
from tests.training.workers import TINY_MODEL, pretrain_worker

STEPS = "4"
COMMON = [
    "--train-iters", STEPS, "--micro-batch-size", "2", "--global-batch-size", "8",
    "--lr-warmup-iters", "0", "--dlm-random-length-prob", "0.5", "--eval-interval", "1000",
]  # fmt: skip


def _run(tiny_data, tmp_path, name, world, extra, init) -> list[dict]:
    save = tmp_path / name
    argv = [*tiny_data.flags(), *TINY_MODEL, *COMMON, *extra, "--save", str(save)]
    if init is not None:
        argv += ["--load", str(init), "--finetune"]
    results = run_distributed(pretrain_worker, world, args=(argv, str(save)))
    return [r for r in results[0] if r["split"] == "train"]


def _compare(tiny_data, tmp_path, world, layout, model=(), reference_world=1):
    init = tmp_path / "init"
    # Iteration-0 weights: one step at learning rate 0 leaves the initialisation untouched.
    _run(
        tiny_data,
        tmp_path,
        "init",
        1,
        [*model, "--train-iters", "1", "--lr", "0", "--min-lr", "0"],
        None,
    )
    reference = _run(tiny_data, tmp_path, "reference", reference_world, [*model], init)
    other = _run(tiny_data, tmp_path, "layout", world, [*model, *layout], init)
    assert len(reference) == len(other) == int(STEPS)
    for ref, got in zip(reference, other):
        assert got["loss"] == pytest.approx(ref["loss"], rel=1e-5), got["iteration"]
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5), got["iteration"]
    assert len({r["loss"] for r in reference}) == len(reference), "the weights did not change"


def test_data_parallel(tiny_data, tmp_path):
    _compare(tiny_data, tmp_path, 2, [])


def test_distributed_optimizer(tiny_data, tmp_path):
    _compare(tiny_data, tmp_path, 2, ["--use-distributed-optimizer"])


def test_tensor_parallel_with_sequence_parallel(tiny_data, tmp_path):
    _compare(
        tiny_data, tmp_path, 2,
        ["--tensor-model-parallel-size", "2", "--sequence-parallel"],
        model=["--dlm-random-length-prob", "0"],
    )  # fmt: skip


def test_pipeline_parallel(tiny_data, tmp_path):
    _compare(tiny_data, tmp_path, 2, ["--pipeline-model-parallel-size", "2"])


def test_ar_pipeline_parallel(tiny_data, tmp_path):
    _compare(tiny_data, tmp_path, 2, ["--pipeline-model-parallel-size", "2"],
             model=["--objective", "ar"])  # fmt: skip


def test_expert_parallel_moe(tiny_data, tmp_path):
    # Megatron scales the router losses per micro-batch: keep DP=2 and move only the experts.
    moe = ["--num-experts", "4", "--moe-aux-loss-coeff", "1e-2",
           "--moe-token-dispatcher-type", "alltoall"]  # fmt: skip
    _compare(tiny_data, tmp_path, 2, ["--expert-model-parallel-size", "2"], model=moe,
             reference_world=2)  # fmt: skip


@pytest.mark.parametrize(
    "saved", [["--tensor-model-parallel-size", "2"], ["--pipeline-model-parallel-size", "2"]],
    ids=["tp2", "pp2"],
)  # fmt: skip
def test_checkpoint_resumes_at_another_layout(tiny_data, tmp_path, saved):
    """Saved at TP=2 (or PP=2), resumed on one rank: same validation loss, training goes on."""
    save = tmp_path / "run"
    argv = [*tiny_data.flags(), *TINY_MODEL, *COMMON, "--save", str(save)]
    first = run_distributed(pretrain_worker, 2, args=([*argv, *saved], str(save)))[0]
    valid_at_4 = [r for r in first if r["split"] == "valid"][-1]
    more = [*argv, "--train-iters", "6", "--override-opt-param-scheduler"]  # a longer schedule
    (resumed,) = run_distributed(pretrain_worker, 1, args=(more, str(save)))
    train = [r for r in resumed if r["split"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4, 5, 6]  # 1-4 kept from the first run
    # The TP=1 model loaded from the iteration-4 checkpoint, with a budget of 4: evaluation only.
    evaluate = tmp_path / "eval"
    at_4 = [*tiny_data.flags(), *TINY_MODEL, *COMMON, "--save", str(evaluate),
            "--load", str(save / "iter_0000004")]  # fmt: skip
    (again,) = run_distributed(pretrain_worker, 1, args=(at_4, str(evaluate)))
    assert [r for r in again if r["split"] == "valid"][-1]["loss"] == pytest.approx(
        valid_at_4["loss"], rel=1e-5
    )
