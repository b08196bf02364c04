"""The masked-diffusion loss is the ELBO it claims to be, checked exactly on a toy language.

For a sequence x of L loss tokens, write A_m = E_{|M|=m}[sum_{i in M} CE_i(x with M masked)]
(uniform random subsets M of size m) and B(x) = sum_m A_m / m. With t ~ U[eps, 1) and each
token masked with probability t, the expected loss_sum is

* ``inv_t`` (w = 1/t): exactly B(x) as eps -> 0, which equals E_sigma[-log Q_sigma(x)] over
  unmasking orders sigma (Q_sigma: the AR model revealing tokens in order sigma with the
  denoiser's conditionals). So B(x) >= -log mean_sigma Q_sigma(x) (Jensen) for ANY denoiser,
  and E_data[B] >= H(data) (Gibbs). With the exact conditionals every Q_sigma is p, so
  B(x) = -log p(x): the bound is tight for every x. eps > 0 moves weight from small to large
  masked counts: the bound then holds in expectation over the data (not per sequence).
* ``realised`` (w = L/m): exactly L/(L+1) B(x) as eps -> 0 (m is uniform on 0..L and the
  m = 0 draws carry no loss), so it is NOT an upper bound for short sequences; the factor is
  1 - 1/2049 at L = 2048.
* ``--dlm-at-least-one-mask`` moves the m = 0 draws to m = 1: the bound only grows for
  ``inv_t`` (w = 1/t on those draws) and stays within L/(L+1) for ``realised``.

The expectations are computed exactly: the library's weights are integrated over t by
Gauss-Legendre quadrature (the integrands are polynomials in t) and summed over all 2^L
masks with their probabilities, and the library's loss is evaluated on those weights.
A Monte Carlo check then ties the library's *sampler* to the same exact values.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from megatron_dlm.config import ObjectiveConfig
from megatron_dlm.objectives import PreparedBatch, build_objective
from megatron_dlm.objectives.noise import diffusion_loss_weights
from tests.objectives import toy

L = toy.LENGTH
MASKS = np.array(list(itertools.product([False, True], repeat=L)))
P = toy.joint_distribution()
NLL = -np.log(P)
ENTROPY = float((P * NLL).sum())
TRUE = toy.true_denoiser(P)
RANDOM = toy.random_denoiser()


def _objective(**cfg):
    cfg.setdefault("dlm_random_length_prob", 0.0)  # the toy's length is fixed
    return build_objective(ObjectiveConfig(**cfg), mask_id=toy.MASK_ID, seed=0)


def expected_loss(
    table: torch.Tensor, eps: float, weighting: str, at_least_one: bool = False
) -> np.ndarray:
    """E[loss_sum(x)] for every x in ``toy.ALL_SEQUENCES``, exactly (float64 ``[V^L]``)."""
    m = MASKS.sum(axis=1)
    nodes, quad_weights = np.polynomial.legendre.leggauss(8)
    weights = np.zeros(MASKS.shape)
    for node, quad in zip(nodes, quad_weights):
        t = eps + (1 - eps) * (node + 1) / 2  # t ~ U[eps, 1): density 1/(1-eps)
        prob = t**m * (1 - t) ** (L - m)
        if at_least_one:  # an empty mask becomes one uniformly chosen token
            prob = np.where(m == 0, 0.0, prob + (m == 1) * (1 - t) ** L / L)
        w = diffusion_loss_weights(MASKS, np.ones_like(MASKS), np.full(len(MASKS), t), weighting)
        weights += quad / 2 * prob[:, None] * w
    objective = _objective()
    out = []
    for x in toy.ALL_SEQUENCES:
        inputs = torch.from_numpy(np.where(MASKS, toy.MASK_ID, x))
        prepared = PreparedBatch(
            inputs=inputs,
            position_ids=torch.arange(L).expand(len(MASKS), L),
            targets=torch.from_numpy(np.broadcast_to(x, MASKS.shape).copy()),
            loss_mask=torch.ones(MASKS.shape),
            loss_weights=torch.from_numpy(weights).float(),
            t=torch.ones(len(MASKS)),
        )
        loss_sum, _, _ = objective.loss(toy.logits_for(table, inputs), prepared)
        out.append(loss_sum.item())
    return np.array(out)


def any_order_terms(table: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(E_sigma[-log Q_sigma(x)], -log mean_sigma Q_sigma(x)) for every x."""
    logq = np.stack([toy.order_log_likelihoods(table, x) for x in toy.ALL_SEQUENCES])
    return -logq.mean(axis=1), -np.log(np.exp(logq).mean(axis=1))


def test_toy_is_a_distribution_and_exact_denoiser_is_consistent():
    assert P.sum() == pytest.approx(1.0)
    average, mixture = any_order_terms(TRUE)
    # Exact conditionals: every unmasking order gives back p(x).
    np.testing.assert_allclose(average, NLL, atol=1e-9)
    np.testing.assert_allclose(mixture, NLL, atol=1e-9)


def test_inv_t_is_tight_with_exact_conditionals():
    """eps -> 0: E[loss_sum(x)] = -log p(x) for every sequence, not only on average."""
    bound = expected_loss(TRUE, eps=1e-6, weighting="inv_t")
    np.testing.assert_allclose(bound, NLL, atol=1e-4)


def test_inv_t_is_the_any_order_bound_for_any_denoiser():
    bound = expected_loss(RANDOM, eps=1e-6, weighting="inv_t")
    average, mixture = any_order_terms(RANDOM)
    np.testing.assert_allclose(bound, average, rtol=1e-5, atol=1e-4)
    assert (bound >= mixture - 1e-4).all()  # an upper bound on -log Q(x), Q a distribution
    assert (P * bound).sum() >= ENTROPY  # hence on the data's negative log-likelihood


@pytest.mark.parametrize("at_least_one", [False, True])
@pytest.mark.parametrize("table", [TRUE, RANDOM], ids=["exact", "random"])
def test_inv_t_bounds_the_nll_at_default_eps(table, at_least_one):
    bound = expected_loss(table, eps=1e-3, weighting="inv_t", at_least_one=at_least_one)
    assert (P * bound).sum() >= ENTROPY
    if table is TRUE and not at_least_one:
        # Tight up to O(eps): 1e-3 x a few nats.
        assert (P * bound).sum() - ENTROPY < 1e-2


@pytest.mark.parametrize("table", [TRUE, RANDOM], ids=["exact", "random"])
def test_realised_weighting_is_the_bound_scaled_by_l_over_l_plus_1(table):
    realised = expected_loss(table, eps=1e-6, weighting="realised")
    inv_t = expected_loss(table, eps=1e-6, weighting="inv_t")
    np.testing.assert_allclose(realised, L / (L + 1) * inv_t, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("at_least_one", [False, True])
def test_realised_weighting_undershoots_the_nll_of_short_sequences(at_least_one):
    """MegaDLMs' weighting is biased low by up to 1/(L+1): visible at L = 4."""
    realised = expected_loss(TRUE, eps=1e-3, weighting="realised", at_least_one=at_least_one)
    value = (P * realised).sum()
    assert value < ENTROPY
    assert (L + 1) / L * value >= ENTROPY - 1e-3


def _monte_carlo(objective, rows: int, chunks: int) -> tuple[float, float, np.ndarray]:
    """Mean and standard error of loss_sum per sequence from the library's own sampler."""
    index = np.arange(rows) % len(toy.ALL_SEQUENCES)
    tokens = torch.from_numpy(toy.ALL_SEQUENCES[index])
    batch = {
        "tokens": tokens,
        "labels": tokens,
        "position_ids": torch.arange(L).expand(rows, L),
        "loss_mask": torch.ones(rows, L),
        "sample_id": torch.arange(rows),
        "epoch": torch.zeros(rows, dtype=torch.int64),
    }
    prepared = objective.prepare(batch, training=True)
    logits = toy.logits_for(TRUE, prepared.inputs)
    per_chunk = []
    size = rows // chunks
    for c in range(chunks):
        part = slice(c * size, (c + 1) * size)
        piece = PreparedBatch(
            inputs=prepared.inputs[part],
            position_ids=prepared.position_ids[part],
            targets=prepared.targets[part],
            loss_mask=prepared.loss_mask[part],
            loss_weights=prepared.loss_weights[part],
            t=prepared.t[part],
        )
        per_chunk.append(objective.loss(logits[part].clone(), piece)[0].item() / size)
    per_chunk = np.array(per_chunk)
    return per_chunk.mean(), per_chunk.std(ddof=1) / np.sqrt(chunks), index


@pytest.mark.parametrize(
    "weighting,at_least_one",
    [("inv_t", False), ("inv_t", True), ("realised", False), ("realised", True)],
)
def test_sampler_matches_the_exact_expectation(weighting, at_least_one):
    eps = 0.01
    objective = _objective(
        dlm_eps=eps, dlm_loss_weight=weighting, dlm_at_least_one_mask=at_least_one
    )
    mean, stderr, index = _monte_carlo(objective, rows=81 * 400, chunks=81)
    exact = expected_loss(TRUE, eps=eps, weighting=weighting, at_least_one=at_least_one)
    assert abs(mean - exact[index].mean()) < 4 * stderr, (mean, exact[index].mean(), stderr)


def _copy_chain(rows: int, length: int, vocab: int) -> torch.Tensor:
    """Sequences where each token repeats the previous one with probability 0.9."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (rows, length), generator=gen)
    keep = torch.rand(rows, length, generator=gen) < 0.9
    for j in range(1, length):
        x[:, j] = torch.where(keep[:, j], x[:, j - 1], x[:, j])
    return x


def _left_neighbour_denoiser(inputs: torch.Tensor, vocab: int) -> torch.Tensor:
    """A model for the copy chain: bet on the left neighbour when it is visible."""
    mask_id = vocab
    left = torch.cat([torch.full_like(inputs[:, :1], mask_id), inputs[:, :-1]], dim=1)
    logits = torch.zeros(*inputs.shape, vocab + 1)
    logits[..., mask_id] = -30.0
    bet = torch.nn.functional.one_hot(left, vocab + 1).float() * np.log(9 * vocab + 1)
    return logits + bet * (left != mask_id)[..., None]


@pytest.mark.parametrize("weighting", ["inv_t", "realised"])
def test_stratified_t_lowers_the_variance_of_the_batch_loss(weighting):
    """Same 16 sequences every iteration, fresh noise (epoch = iteration): the spread of the
    global-batch loss comes from the noise only. (With L = 128 the t-dependence of the loss
    dominates the spread; for a 4-token toy the per-token mask noise does, and stratifying t
    gains nothing measurable.)"""
    vocab, length, batch_size, iterations = 8, 128, 16, 200
    tokens = _copy_chain(batch_size, length, vocab)
    estimates = {}
    for stratified in (False, True):
        objective = build_objective(
            ObjectiveConfig(
                dlm_stratified_t=stratified, dlm_loss_weight=weighting, dlm_random_length_prob=0
            ),
            mask_id=vocab,
            seed=0,
        )
        values = []
        for it in range(iterations):
            batch = {
                "tokens": tokens,
                "labels": tokens,
                "position_ids": torch.arange(length).expand(batch_size, length),
                "loss_mask": torch.ones(batch_size, length),
                "sample_id": torch.arange(batch_size),
                "epoch": torch.full((batch_size,), it),
            }
            prepared = objective.prepare(
                batch,
                training=True,
                iteration=it,
                global_positions=torch.arange(batch_size),
                global_batch_size=batch_size,
            )
            logits = _left_neighbour_denoiser(prepared.inputs, vocab)
            loss_sum, num_tokens, _ = objective.loss(logits, prepared)
            values.append(loss_sum.item() / num_tokens.item())
        estimates[stratified] = np.array(values)
    iid, strat = estimates[False], estimates[True]
    # Both estimate the same quantity ...
    assert abs(iid.mean() - strat.mean()) < 4 * np.sqrt(iid.var() / iterations)
    # ... stratified with clearly less variance (measured: about 3.6x less).
    assert strat.var() < 0.5 * iid.var(), (strat.var(), iid.var())
