"""Parallel layouts compute what one rank computes: logits, loss and every gradient."""

from __future__ import annotations

import pytest
import torch

from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig, ParallelConfig
from megatron_dlm.testing import run_distributed
from tests.models import layout_workers as workers
from tests.modern import modern_model

SEQ = 16
GLOBAL_BATCH = 4


def _cfg(parallel: ParallelConfig | None = None, objective: str = "dlm", **model) -> dict:
    base = dict(
        num_layers=4,
        hidden_size=64,
        num_attention_heads=4,
        num_query_groups=2,
        seq_length=SEQ,
        use_cpu_initialization=True,
        make_vocab_size_divisible_by=16,
    )
    base = modern_model(**{**base, **model})
    return DLMConfig(
        model=ModelConfig(**base),
        parallel=parallel or ParallelConfig(),
        objective=ObjectiveConfig(objective=objective),
    ).to_dict()


def _batch():
    gen = torch.Generator().manual_seed(42)
    tokens = torch.randint(2, workers.VOCAB.size - 1, (GLOBAL_BATCH, SEQ), generator=gen)
    labels = torch.randint(2, workers.VOCAB.size - 1, (GLOBAL_BATCH, SEQ), generator=gen)
    return tokens, labels


def _check_layout(
    tmp_path,
    world_size: int,
    parallel: ParallelConfig,
    mbs: int = 1,
    reference_world_size: int = 1,
    **model,
):
    """Run ``parallel`` on ``world_size`` ranks and compare with ``reference_world_size`` ranks
    (plain data parallelism) on the same global batch and initial weights."""
    tokens, labels = _batch()
    ref_cfg = _cfg(**model)
    references = run_distributed(
        workers.reference_run,
        reference_world_size,
        args=(ref_cfg, str(tmp_path), tokens, labels, mbs),
    )
    reference = references[0]
    results = run_distributed(
        workers.layout_run,
        world_size,
        args=(_cfg(parallel, **model), str(tmp_path), tokens, labels, mbs, "layout"),
    )
    reported = [r for r in results if r is not None]
    assert reported, "no rank reported a loss"
    for result in reported:
        assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)
        torch.testing.assert_close(result["logits"], reference["logits"], rtol=1e-5, atol=1e-5)
    (diffs,) = run_distributed(workers.grad_differences, 1, args=(ref_cfg, str(tmp_path), "layout"))
    assert diffs, "no gradients compared"
    for name, (diff, scale) in diffs.items():
        assert diff <= 1e-5 * scale + 1e-9, f"gradient of {name} differs by {diff} (max {scale})"


def test_tp2_equals_tp1(tmp_path):
    _check_layout(tmp_path, 2, ParallelConfig(tensor_model_parallel_size=2))


def test_tp2_sequence_parallel_equals_tp1(tmp_path):
    _check_layout(
        tmp_path,
        2,
        ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True),
        qk_layernorm=True,
    )


def test_pp2_equals_pp1(tmp_path):
    _check_layout(tmp_path, 2, ParallelConfig(pipeline_model_parallel_size=2))


def test_pp2_virtual_stages_equal_pp1(tmp_path):
    _check_layout(
        tmp_path,
        2,
        ParallelConfig(pipeline_model_parallel_size=2, num_virtual_stages_per_pipeline_rank=2),
    )


def test_dp2_equals_dp1(tmp_path):
    _check_layout(tmp_path, 2, ParallelConfig(), untie_embeddings_and_output_weights=True)


@pytest.mark.parametrize("dispatcher", ["allgather", "alltoall"])
def test_moe_ep2_equals_ep1(tmp_path, dispatcher):
    _check_layout(
        tmp_path,
        2,
        ParallelConfig(expert_model_parallel_size=2),
        num_experts=4,
        moe_token_dispatcher_type=dispatcher,
    )


@pytest.mark.parametrize("dispatcher", ["allgather", "alltoall"])
def test_moe_tp2_equals_tp1(tmp_path, dispatcher):
    _check_layout(
        tmp_path,
        2,
        ParallelConfig(tensor_model_parallel_size=2, sequence_parallel=True),
        num_experts=4,
        moe_token_dispatcher_type=dispatcher,
    )


def test_moe_aux_and_z_loss_ep2_equals_ep1(tmp_path):
    # Megatron scales the router losses per micro-batch, so the reference keeps the same
    # data-parallel split (DP=2) and only the expert placement changes.
    _check_layout(
        tmp_path,
        2,
        ParallelConfig(expert_model_parallel_size=2),
        reference_world_size=2,
        num_experts=4,
        moe_aux_loss_coeff=1e-2,
        moe_z_loss_coeff=1e-3,
        moe_token_dispatcher_type="alltoall",
    )


def test_tp2_pp2_sequence_parallel_equals_single_rank(tmp_path):
    _check_layout(
        tmp_path,
        4,
        ParallelConfig(
            tensor_model_parallel_size=2, pipeline_model_parallel_size=2, sequence_parallel=True
        ),
    )


def test_moe_tp2_ep2_equals_single_rank(tmp_path):
    _check_layout(
        tmp_path,
        4,
        ParallelConfig(
            tensor_model_parallel_size=2, expert_model_parallel_size=2, sequence_parallel=True
        ),
        num_experts=4,
        moe_token_dispatcher_type="alltoall",
    )
