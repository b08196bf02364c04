"""Random-length truncation: probability, multiples, determinism, and what it does to a batch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from megatron_dlm.config import ObjectiveConfig
from megatron_dlm.objectives import build_objective, random_length
from tests.objectives.conftest import MASK_ID, make_batch

DRAWS = [(it, mb) for it in range(400) for mb in range(10)]


def _lengths(seq=2048, prob=0.1, multiple=1, seed=3):
    return np.array(
        [
            random_length(seq, prob=prob, seed=seed, iteration=it, microbatch=mb, multiple=multiple)
            for it, mb in DRAWS
        ]
    )


@pytest.mark.parametrize("multiple", [1, 2, 8, 12])
def test_lengths_respect_the_multiple_and_the_probability(multiple):
    seq = 2040  # divisible by 1, 2, 8 and 12
    lengths = _lengths(seq, prob=0.1, multiple=multiple)
    short = lengths[lengths < seq]
    assert (lengths % multiple == 0).all()
    assert lengths.min() >= multiple
    # 4000 draws at p = 0.1 (a draw of length seq itself is rare): 400 +- 4 sd.
    assert abs(len(short) - 400) < 4 * np.sqrt(4000 * 0.1 * 0.9)
    # Uniform over the range: mean about seq / 2.
    assert abs(short.mean() - seq / 2) < 0.1 * seq


def test_lengths_are_deterministic_and_depend_on_the_key():
    first = _lengths()
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    assert (first == _lengths()).all()
    assert (first != _lengths(seed=4)).any()
    # Each micro-batch of an iteration draws on its own.
    per_iteration = first.reshape(400, 10)
    assert ((per_iteration < 2048).sum(1) == 1).any()


def test_probability_zero_and_one():
    assert (_lengths(prob=0.0) == 2048).all()
    assert (_lengths(prob=1.0) < 2048).mean() > 0.99


def test_bad_multiple_is_an_error():
    with pytest.raises(ValueError, match="multiple"):
        random_length(16, prob=0.5, seed=0, iteration=0, microbatch=0, multiple=0)


def test_dlm_batches_are_truncated_consistently():
    objective = build_objective(
        ObjectiveConfig(dlm_random_length_prob=0.5), mask_id=MASK_ID, seed=0, length_multiple=4
    )
    batch = make_batch(range(4), epoch=1, seq=64)
    full = build_objective(
        ObjectiveConfig(dlm_random_length_prob=0.0), mask_id=MASK_ID, seed=0
    ).prepare(batch, training=True)
    seen_short = False
    for it in range(20):
        length = objective.sequence_length(64, iteration=it, microbatch=1)
        prepared = objective.prepare(batch, training=True, iteration=it, microbatch=1)
        assert prepared.seq_length == length and length % 4 == 0
        for name in ("inputs", "targets", "position_ids", "loss_mask"):
            assert getattr(prepared, name).shape == (4, length), name
        # The noise of a prefix is the prefix of the noise.
        assert torch.equal(prepared.inputs, full.inputs[:, :length])
        seen_short |= length < 64
        # Never at validation.
        assert objective.prepare(batch, training=False, iteration=it, microbatch=1).seq_length == 64
    assert seen_short


def test_ar_is_never_truncated():
    objective = build_objective(
        ObjectiveConfig(objective="ar", dlm_random_length_prob=1.0), mask_id=MASK_ID, seed=0
    )
    assert objective.sequence_length(64, iteration=0, microbatch=0) == 64
    assert objective.prepare(make_batch(range(2)), training=True).seq_length == 64
