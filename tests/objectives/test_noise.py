"""The forward process: masks are pure functions of (seed, sample, epoch), with the right law."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.objectives.conftest import MASK_ID, make_batch, make_objective, rows


def _masked(prepared) -> torch.Tensor:
    return prepared.loss_weights > 0


def test_mask_depends_on_the_sample_not_the_batch():
    objective = make_objective()
    batch = make_batch([3, 17, 5, 99], epoch=[2, 2, 7, 0])
    whole = objective.prepare(batch, training=True)
    # Other order, other companions, computed after unrelated global RNG use.
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    other = make_batch([99, 8, 3, 5, 17], epoch=[0, 1, 2, 7, 2])
    shuffled = objective.prepare(other, training=True)
    for row, other_row in [(0, 2), (1, 4), (2, 3), (3, 0)]:
        assert torch.equal(whole.inputs[row], shuffled.inputs[other_row])
        assert torch.equal(whole.loss_weights[row], shuffled.loss_weights[other_row])
        assert whole.t[row] == shuffled.t[other_row]


def test_a_new_epoch_or_seed_gives_a_new_mask():
    batch = make_batch(range(8), epoch=0, seq=256)
    base = make_objective().prepare(batch, training=True)
    next_epoch = make_objective().prepare(make_batch(range(8), epoch=1, seq=256), training=True)
    other_seed = make_objective(seed=1).prepare(batch, training=True)
    for changed in (next_epoch, other_seed):
        assert (changed.t != base.t).all()
        assert (_masked(changed) != _masked(base)).any(dim=1).all()


def test_validation_mask_ignores_the_epoch_and_differs_from_training():
    objective = make_objective(input_mask_prob=0.3, dlm_random_length_prob=1.0)
    first = objective.prepare(make_batch(range(4), epoch=0), training=False)
    later = objective.prepare(make_batch(range(4), epoch=5), training=False)
    assert torch.equal(first.inputs, later.inputs)
    assert torch.equal(first.t, later.t)
    # No regulariser and no truncation at validation: hidden inputs are exactly the masked ones.
    assert first.seq_length == 64
    assert torch.equal(first.inputs == MASK_ID, _masked(first))
    train = objective.prepare(make_batch(range(4), epoch=0), training=True)
    assert not torch.equal(train.t, first.t)


def test_padding_is_never_masked_and_never_counts():
    objective = make_objective(dlm_at_least_one_mask=True, dlm_loss_weight="realised")
    batch = make_batch(range(64), epoch=1, pad_from={r: 10 + r for r in range(40)})
    batch["loss_mask"][50] = 0  # a batch-padding row: nothing counts
    prepared = objective.prepare(batch, training=True)
    pad = batch["loss_mask"] == 0
    assert torch.equal(prepared.inputs[pad], batch["tokens"][pad])
    assert (prepared.loss_weights[pad] == 0).all()
    assert torch.equal(prepared.loss_mask, 1 - pad.float())
    assert (prepared.loss_weights[50] == 0).all()
    # realised weight = loss tokens / masked tokens of the row
    real = ~pad[:40]
    n_masked = _masked(prepared)[:40].sum(1)
    weights = prepared.loss_weights[:40].max(1).values
    torch.testing.assert_close(weights, real.sum(1) / n_masked)


def test_inputs_are_masked_exactly_where_the_loss_is_and_targets_are_clean():
    objective = make_objective()
    batch = make_batch(range(16), epoch=3)
    prepared = objective.prepare(batch, training=True)
    masked = _masked(prepared)
    assert torch.equal(prepared.inputs == MASK_ID, masked)
    assert torch.equal(prepared.inputs[~masked], batch["tokens"][~masked])
    assert torch.equal(prepared.targets, batch["tokens"])  # no shift
    torch.testing.assert_close(
        prepared.loss_weights[masked], (1 / prepared.t)[:, None].expand_as(masked)[masked]
    )


def test_masking_ratio_lies_in_eps_one_and_is_uniform():
    objective = make_objective(dlm_eps=0.2)
    t = objective.prepare(make_batch(range(4000), seq=2), training=True).t.double()
    assert t.min() >= 0.2 and t.max() < 1.0
    assert abs(t.mean().item() - 0.6) < 0.01  # U[0.2, 1): mean 0.6, sd 0.23 / sqrt(4000)
    hist = torch.histc(t, bins=8, min=0.2, max=1.0) / len(t)
    assert (hist - 1 / 8).abs().max() < 0.03


def test_realised_masking_rate_matches_t():
    seq = 4096
    prepared = make_objective().prepare(make_batch(range(16), seq=seq), training=True)
    rate = _masked(prepared).double().mean(1)
    t = prepared.t.double()
    bound = 4 * torch.sqrt(t * (1 - t) / seq) + 1e-3
    assert ((rate - t).abs() < bound).all(), (rate, t)


def test_at_least_one_token_is_masked():
    # eps tiny and short rows: many rows draw no mask without the option.
    batch = make_batch(range(2000), seq=4, pad_from={0: 1})
    plain = make_objective(dlm_eps=1e-4).prepare(batch, training=True)
    forced = make_objective(dlm_eps=1e-4, dlm_at_least_one_mask=True).prepare(batch, training=True)
    assert (_masked(plain).sum(1) == 0).sum() > 50
    assert (_masked(forced).sum(1) >= 1).all()
    assert _masked(forced)[0, 0]  # the only loss token of row 0
    # Rows that had masks are unchanged; the others get exactly one.
    had = _masked(plain).any(1)
    assert torch.equal(_masked(forced)[had], _masked(plain)[had])
    assert (_masked(forced)[~had].sum(1) == 1).all()


def test_stratified_t_covers_the_global_batch_and_is_split_invariant():
    objective = make_objective(dlm_stratified_t=True, dlm_eps=0.1)
    batch = make_batch(range(100, 132), epoch=4)
    positions = torch.arange(32)
    whole = objective.prepare(
        batch, training=True, iteration=7, global_positions=positions, global_batch_size=32
    )
    # One t per stratum [eps + (1-eps) k/B, eps + (1-eps)(k+1)/B).
    strata = torch.floor((whole.t.double() - 0.1) / 0.9 * 32).long()
    assert sorted(strata.tolist()) == list(range(32))
    # Micro-batches of the same global batch (any split, any order) agree with the whole.
    for index in (torch.arange(0, 8), torch.tensor([31, 2, 17])):
        part = objective.prepare(
            rows(batch, index),
            training=True,
            iteration=7,
            global_positions=positions[index],
            global_batch_size=32,
        )
        assert torch.equal(part.t, whole.t[index])
        assert torch.equal(part.inputs, whole.inputs[index])
    other_iteration = objective.prepare(
        batch, training=True, iteration=8, global_positions=positions, global_batch_size=32
    )
    assert not torch.equal(other_iteration.t, whole.t)
    with pytest.raises(ValueError, match="global batch position"):
        objective.prepare(batch, training=True, iteration=7)


def test_input_masking_hides_context_but_keeps_the_targets():
    batch = make_batch(range(32), epoch=2, seq=512)
    plain = make_objective().prepare(batch, training=True)
    regularised = make_objective(input_mask_prob=0.25).prepare(batch, training=True)
    masked = _masked(plain)
    assert torch.equal(regularised.loss_weights, plain.loss_weights)
    assert torch.equal(regularised.targets, plain.targets)
    hidden = (regularised.inputs == MASK_ID) & ~masked
    assert (regularised.inputs[masked] == MASK_ID).all()
    rate = hidden.sum() / (~masked).sum()
    assert abs(rate.item() - 0.25) < 0.02
    # Its own stream: not the diffusion mask of another epoch or sample.
    again = make_objective(input_mask_prob=0.25).prepare(batch, training=True)
    assert torch.equal(again.inputs, regularised.inputs)


def test_ar_input_masking():
    batch = make_batch(range(32), epoch=2, seq=512, pad_from={0: 100})
    objective = make_objective(objective="ar", input_mask_prob=0.1)
    train = objective.prepare(batch, training=True)
    hidden = train.inputs == MASK_ID
    assert abs(hidden.float().mean().item() - 0.1) < 0.01
    assert not hidden[0, 100:].any()  # padding stays
    assert torch.equal(train.targets, batch["labels"])
    assert torch.equal(train.loss_weights, batch["loss_mask"])
    valid = objective.prepare(batch, training=False)
    assert torch.equal(valid.inputs, batch["tokens"])
    epoch_three = objective.prepare(make_batch(range(32), epoch=3, seq=512), training=True)
    assert not torch.equal(epoch_three.inputs == MASK_ID, hidden)


def test_missing_batch_keys_are_named():
    batch = make_batch(range(2))
    del batch["epoch"]
    with pytest.raises(KeyError, match="epoch"):
        make_objective().prepare(batch, training=True)
    make_objective().prepare(batch, training=False)  # validation needs no epoch
