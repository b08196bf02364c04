"""Batches of prompts with different lengths give exactly what each prompt gives alone."""

from __future__ import annotations

import pytest

from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig, ParallelConfig
from megatron_dlm.testing import run_distributed
from tests.modern import modern_model
from tests.sampling import workers

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17], [20], [30, 31, 32, 33, 34]]


def _cfg(objective: str, tp: int = 1) -> dict:
    return DLMConfig(
        model=ModelConfig(**modern_model(
            num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=64,
            use_cpu_initialization=True, make_vocab_size_divisible_by=64,
        )),
        objective=ObjectiveConfig(objective=objective),
        parallel=ParallelConfig(tensor_model_parallel_size=tp),
    ).to_dict()  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        dict(gen_length=16, steps=16, block_length=8, temperature=0.0),
        dict(gen_length=16, steps=8, block_length=4, temperature=1.0, remasking="random"),
        dict(gen_length=16, steps=16, block_length=16, threshold=0.05, temperature=0.7, top_k=20),
        dict(gen_length=8, steps=8, block_length=8, cfg_scale=1.0, remasking="margin"),
    ],
    ids=["greedy", "sampled-random", "threshold", "cfg"],
)
def test_dlm_batch_equals_one_by_one(options):
    (result,) = run_distributed(workers.batch_vs_single, 1, args=(_cfg("dlm"), PROMPTS, options))
    assert result["batched"] == result["single"]
    assert all(len(seq) <= options["gen_length"] for seq in result["batched"])


def test_ar_batch_equals_one_by_one():
    options = dict(gen_length=12, steps=12, block_length=12, temperature=0.8, top_p=0.9)
    (result,) = run_distributed(workers.batch_vs_single, 1, args=(_cfg("ar"), PROMPTS, options))
    assert result["batched"] == result["single"]


def test_dlm_sampling_at_tp2_equals_tp1():
    options = dict(gen_length=16, steps=16, block_length=8, temperature=0.0)
    (tp1,) = run_distributed(workers.batch_vs_single, 1, args=(_cfg("dlm"), PROMPTS, options))
    tp2 = run_distributed(workers.batch_vs_single, 2, args=(_cfg("dlm", tp=2), PROMPTS, options))
    assert tp2[0]["batched"] == tp2[1]["batched"] == tp1["batched"]
