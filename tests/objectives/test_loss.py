"""Loss values, metrics and per-token normalisation (one process, full-vocabulary logits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megatron_dlm.objectives import PreparedBatch
from tests.objectives.conftest import VOCAB, make_batch, make_objective, rows


def _logits(b: int, s: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, s, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def _reduce(reports: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """What the trainer does: sum (sum, count) pairs, then divide."""
    totals = {key: sum(r[key] for r in reports) for key in reports[0]}
    return {key: (value[0] / value[1]).item() for key, value in totals.items()}


def test_ar_loss_is_next_token_cross_entropy():
    batch = make_batch(range(4), seq=32, pad_from={1: 20})
    objective = make_objective(objective="ar")
    prepared = objective.prepare(batch, training=True)
    logits = _logits(4, 32)
    loss_sum, num_tokens, report = objective.loss(logits.clone(), prepared)
    mask = batch["loss_mask"].bool()
    ce = F.cross_entropy(logits[mask], batch["labels"][mask], reduction="sum")
    torch.testing.assert_close(loss_sum, ce)
    assert num_tokens.dtype == torch.int32 and num_tokens.item() == mask.sum()
    torch.testing.assert_close(report["lm loss"], torch.stack([ce, mask.sum().float()]))
    correct = (logits.argmax(-1) == batch["labels"])[mask].sum().float()
    torch.testing.assert_close(report["accuracy"], torch.stack([correct, mask.sum().float()]))
    assert set(report) == {"lm loss", "accuracy"}


def test_accuracy_counts_hits():
    batch = make_batch(range(2), seq=8)
    objective = make_objective(objective="ar")
    prepared = objective.prepare(batch, training=True)
    logits = torch.zeros(2, 8, VOCAB)
    hits = torch.tensor([[1, 0, 1, 1, 0, 0, 0, 1], [0] * 8], dtype=torch.bool)
    logits[hits] = F.one_hot(batch["labels"][hits], VOCAB).float() * 5
    logits[~hits] = F.one_hot((batch["labels"][~hits] + 1) % VOCAB, VOCAB).float() * 5
    _, _, report = objective.loss(logits, prepared)
    assert report["accuracy"].tolist() == [4.0, 16.0]


@pytest.mark.parametrize("weighting", ["inv_t", "realised"])
def test_dlm_loss_and_report(weighting):
    batch = make_batch(range(6), seq=40, epoch=1, pad_from={2: 25})
    objective = make_objective(dlm_loss_weight=weighting)
    prepared = objective.prepare(batch, training=True)
    logits = _logits(6, 40)
    loss_sum, num_tokens, report = objective.loss(logits.clone(), prepared)

    masked = prepared.inputs == objective.mask_id
    loss_tokens = batch["loss_mask"].bool()
    ce = F.cross_entropy(logits.transpose(1, 2), batch["tokens"], reduction="none")
    if weighting == "inv_t":
        weight = 1 / prepared.t[:, None]
    else:
        weight = loss_tokens.sum(1, keepdim=True) / masked.sum(1, keepdim=True)
    expected = (ce * weight)[masked].sum()
    torch.testing.assert_close(loss_sum, expected)
    assert num_tokens.item() == loss_tokens.sum()
    n_masked = masked.sum().float()
    torch.testing.assert_close(report["masked ce"], torch.stack([ce[masked].sum(), n_masked]))
    hits = (logits.argmax(-1) == batch["tokens"])[masked].sum().float()
    torch.testing.assert_close(report["masked accuracy"], torch.stack([hits, n_masked]))
    n_loss = loss_tokens.sum().float()
    t_sum = (prepared.t[:, None] * loss_tokens).sum()  # token-weighted: padded row 2 counts less
    torch.testing.assert_close(report["mean t"], torch.stack([t_sum, n_loss]))
    torch.testing.assert_close(report["masked fraction"], torch.stack([n_masked, n_loss]))
    assert all(v.shape == (2,) and v.dtype == torch.float32 for v in report.values())


def test_gradient_flows_to_the_masked_positions_only():
    objective = make_objective()
    prepared = objective.prepare(make_batch(range(3), seq=16), training=True)
    logits = _logits(3, 16).requires_grad_()
    loss_sum, _, _ = objective.loss(logits, prepared)
    loss_sum.backward()
    masked = prepared.loss_weights > 0
    assert (logits.grad[~masked] == 0).all()
    assert (logits.grad[masked].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("objective_name", ["dlm", "ar"])
def test_micro_batches_sum_to_the_whole_batch(objective_name):
    """Per-token normalisation: any split into micro-batches gives the same loss and metrics."""
    objective = make_objective(objective=objective_name, dlm_stratified_t=True)
    batch = make_batch(range(8), seq=24, epoch=3, pad_from={0: 5, 5: 12})
    logits = _logits(8, 24)
    positions = torch.arange(8)
    whole = objective.prepare(
        batch, training=True, iteration=2, global_positions=positions, global_batch_size=8
    )
    loss_sum, num_tokens, report = objective.loss(logits.clone(), whole)
    reference = {key: (v[0] / v[1]).item() for key, v in report.items()}

    splits = [[0, 1, 2], [3], [4, 5, 6, 7]]
    sums, counts, reports = 0.0, 0, []
    for index in splits:
        part = objective.prepare(
            rows(batch, index),
            training=True,
            iteration=2,
            global_positions=positions[index],
            global_batch_size=8,
        )
        s, n, r = objective.loss(logits[index].clone(), part)
        sums, counts = sums + s, counts + n
        reports.append(r)
    torch.testing.assert_close(sums / counts, loss_sum / num_tokens)
    assert counts == num_tokens
    for key, value in _reduce(reports).items():
        assert value == pytest.approx(reference[key], rel=1e-6), key


def test_empty_micro_batch_is_harmless():
    objective = make_objective()
    batch = make_batch(range(2), seq=8)
    batch["loss_mask"].zero_()
    prepared = objective.prepare(batch, training=True)
    logits = _logits(2, 8).requires_grad_()
    loss_sum, num_tokens, report = objective.loss(logits, prepared)
    loss_sum.backward()
    assert loss_sum.item() == 0 and num_tokens.item() == 0
    assert report["masked ce"].tolist() == [0.0, 0.0]


def test_half_precision_logits_are_scored_in_fp32():
    objective = make_objective(objective="ar")
    prepared = objective.prepare(make_batch(range(2), seq=8), training=True)
    logits = _logits(2, 8)
    reference, _, _ = objective.loss(logits.clone(), prepared)
    low, _, _ = objective.loss(logits.bfloat16(), prepared)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, rtol=2e-2, atol=0)


def test_shape_mismatch_is_an_error():
    objective = make_objective()
    prepared = objective.prepare(make_batch(range(2), seq=8), training=True)
    with pytest.raises(ValueError, match=r"\[b, s, V/TP\]"):
        objective.loss(torch.zeros(8, 2, VOCAB), prepared)


def test_prepared_batch_moves_between_devices():
    prepared = make_objective().prepare(make_batch(range(2), seq=8), training=True)
    moved = prepared.to("cpu")
    assert isinstance(moved, PreparedBatch)
    assert torch.equal(moved.inputs, prepared.inputs) and torch.equal(moved.t, prepared.t)
    ar = make_objective(objective="ar").prepare(make_batch(range(2), seq=8), training=True)
    assert ar.to("cpu").t is None
