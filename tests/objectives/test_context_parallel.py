"""Context parallelism without attention: the split, the noise and the loss normalisation.

The local attention has no context parallelism (tests/gpu checks CP=2 against CP=1 with
Transformer Engine); here a stand-in model looks the logits up by position, so the trainer's
forward_step at CP=2 must reproduce the CP=1 loss, metrics and gradients exactly.
"""

from __future__ import annotations

import pytest
import torch

from megatron_dlm.objectives import random_length
from megatron_dlm.testing import run_distributed
from tests.objectives import cp_workers
from tests.objectives.conftest import MASK_ID, SEED, VOCAB, make_batch

CONFIGS = {
    "dlm": dict(dlm_stratified_t=True, input_mask_prob=0.1, dlm_random_length_prob=0.5),
    "ar": dict(objective="ar", input_mask_prob=0.1),
}
CP = 2
MULTIPLE = 2 * CP


def _iterations(prob: float) -> list[int]:
    """One iteration at full length and one truncated (for ``prob`` > 0)."""
    lengths = {
        i: random_length(64, prob=prob, seed=SEED, iteration=i, microbatch=0, multiple=MULTIPLE)
        for i in range(40)
    }
    full = next(i for i, n in lengths.items() if n == 64)
    cut = [i for i, n in lengths.items() if n < 64]
    return [full, *cut[:1]]


@pytest.fixture(scope="module")
def inputs():
    batch = make_batch(range(10, 14), epoch=2, seq=64, pad_from={1: 40})
    logits = torch.randn(4, 64, VOCAB, generator=torch.Generator().manual_seed(5))
    return batch, logits


def test_pieces_reassemble_the_sequence():
    x = torch.arange(2 * 16 * 3).reshape(2, 16, 3)
    first, second = run_distributed(cp_workers.split_pieces, 2, args=(x, CP))
    # 2 x CP = 4 chunks of 4 positions: rank 0 keeps chunks 0 and 3, rank 1 chunks 1 and 2.
    assert torch.equal(first, torch.cat([x[:, 0:4], x[:, 12:16]], dim=1))
    assert torch.equal(second, torch.cat([x[:, 4:8], x[:, 8:12]], dim=1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cp2_forward_step_equals_cp1(inputs, name):
    batch, logits = inputs
    iterations = _iterations(CONFIGS[name].get("dlm_random_length_prob", 0.0))
    for iteration in iterations:
        args = (CONFIGS[name], batch, logits, MASK_ID, SEED)
        ref = cp_workers.cp_step(*args, 1, iteration, MULTIPLE)
        ranks = run_distributed(cp_workers.cp_step, 2, args=(*args, CP, iteration, MULTIPLE))
        length = ref["seq_length"]
        assert all(r["seq_length"] == length for r in ranks)
        # The model saw this rank's half of every sequence, noised as on one rank.
        positions = torch.cat([r["position_ids"] for r in ranks], dim=1)
        assert torch.equal(positions.sort(dim=1).values, ref["position_ids"])
        for r in ranks:
            assert r["inputs"].shape == (4, length // CP)
            order = r["position_ids"][0]
            assert torch.equal(r["inputs"], ref["inputs"][:, order])
            assert torch.equal(r["loss_weights"], ref["loss_weights"][:, order])
        # Loss sums and token counts add up over CP ranks to the whole sequence's.
        assert sum(int(r["num_tokens"]) for r in ranks) == int(ref["num_tokens"])
        total = sum(r["loss_sum"] for r in ranks)
        torch.testing.assert_close(total, ref["loss_sum"], rtol=1e-6, atol=0)
        for key, value in ref["report"].items():
            summed = sum(r["report"][key] for r in ranks)
            torch.testing.assert_close(summed, value, rtol=1e-6, atol=1e-6)
        # Every logged metric, reduced over the DP x CP group, is the CP=1 value.
        for r in ranks:
            assert r["metrics"].keys() == ref["metrics"].keys()
            for key, value in ref["metrics"].items():
                assert r["metrics"][key] == pytest.approx(value, rel=1e-6), (key, iteration)
        grad = sum(r["grad"] for r in ranks)
        torch.testing.assert_close(grad, ref["grad"], rtol=1e-6, atol=1e-8)
    if name == "dlm":
        assert len(iterations) == 2, "no truncated iteration was tested"
