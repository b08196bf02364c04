"""Vocab-parallel scoring at TP=2 equals the single-rank result; ranks agree on the noise."""

from __future__ import annotations

import pytest
import torch

from megatron_dlm.testing import run_distributed
from tests.objectives import tp_workers
from tests.objectives.conftest import MASK_ID, SEED, VOCAB, make_batch

CONFIGS = {
    "dlm": dict(dlm_stratified_t=True, input_mask_prob=0.1, dlm_random_length_prob=0.3),
    "dlm-realised": dict(dlm_loss_weight="realised", dlm_at_least_one_mask=True),
    "ar": dict(objective="ar", input_mask_prob=0.1),
}


@pytest.fixture(scope="module")
def inputs():
    batch = make_batch(range(10, 14), epoch=2, seq=64, pad_from={1: 40})
    # Integer-valued logits: the maximum is often tied, within a shard and across shards.
    logits = torch.randn(4, 64, VOCAB, generator=torch.Generator().manual_seed(5)).round()
    return batch, logits


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tp2_equals_tp1(inputs, name):
    batch, logits = inputs
    cfg = CONFIGS[name]
    reference = tp_workers.score(cfg, batch, logits, MASK_ID, SEED, tp=1)
    ranks = run_distributed(
        tp_workers.score, world_size=2, args=(cfg, batch, logits, MASK_ID, SEED, 2)
    )
    for rank, result in enumerate(ranks):
        assert result["lengths"] == reference["lengths"], rank
        for key in ("inputs", "loss_weights", "num_tokens"):
            assert torch.equal(result[key], reference[key]), (rank, key)
        torch.testing.assert_close(result["loss_sum"], reference["loss_sum"], rtol=1e-6, atol=0)
        assert result["report"].keys() == reference["report"].keys()
        for key, value in reference["report"].items():
            torch.testing.assert_close(result["report"][key], value, rtol=1e-6, atol=0)
    grad = torch.cat([result["grad"] for result in ranks], dim=-1)
    torch.testing.assert_close(grad, reference["grad"], rtol=1e-5, atol=1e-7)


def test_ties_exist_across_shards(inputs):
    """The TP argmax must break ties like torch.argmax; make sure the data exercise that."""
    _, logits = inputs
    best = logits.max(-1, keepdim=True).values
    tied = logits == best
    half = VOCAB // 2
    assert (tied[..., :half].any(-1) & tied[..., half:].any(-1)).sum() > 10
