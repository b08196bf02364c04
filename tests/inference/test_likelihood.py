"""Monte Carlo ELBO (DLM) and exact AR log-likelihoods on toy models with exact answers."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
import torch

from megatron_dlm.inference.likelihood import (
    LikelihoodRequest,
    ar_loglikelihoods,
    dlm_loglikelihoods,
    stratified_mask_counts,
)

V, MASK = 7, 6
TABLE = torch.randn(V + 1, V + 1, V, generator=torch.Generator().manual_seed(0)) * 2


def toy_dlm(tokens, valid):
    """Each position's logits depend on its left and right neighbours (masked or not)."""
    b, length = tokens.shape
    left = torch.cat([torch.full((b, 1), V), tokens[:, :-1]], dim=1)
    right = torch.cat([tokens[:, 1:], torch.full((b, 1), V)], dim=1)
    left = left.masked_fill(~torch.cat([torch.zeros(b, 1, dtype=torch.bool), valid[:, :-1]], 1), V)
    return TABLE[left, right]


def exact_elbo(context, continuation):
    n, start = len(continuation), len(context)
    row = torch.tensor([context + continuation])
    total = 0.0
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        inner = 0.0
        for subset in subsets:
            noised = row.clone()
            for i in subset:
                noised[0, start + i] = MASK
            logp = torch.log_softmax(
                toy_dlm(noised, torch.ones_like(noised, dtype=torch.bool)).double(), -1
            )
            inner += (n / k) * sum(float(logp[0, start + i, continuation[i]]) for i in subset)
        total += inner / len(subsets)
    return total / n


def test_stratified_counts_cover_one_to_n():
    counts = stratified_mask_counts(5, 10, torch.Generator().manual_seed(1))
    assert sorted(set(counts)) == [1, 2, 3, 4, 5] and len(counts) == 10


def test_single_token_continuation_is_exact():
    request = LikelihoodRequest([1, 2, 3], [4])
    (value,) = dlm_loglikelihoods(toy_dlm, [request], mask_id=MASK, mc_num=64)
    assert value == pytest.approx(exact_elbo([1, 2, 3], [4]), abs=1e-9)


def test_mc_estimate_is_unbiased_and_its_variance_falls_with_mc_num():
    context, continuation = [1, 2], [3, 0, 4, 2]
    exact = exact_elbo(context, continuation)
    request = LikelihoodRequest(context, continuation)
    spread = {}
    for mc_num in (2, 32):
        values = [
            dlm_loglikelihoods(toy_dlm, [request], mask_id=MASK, mc_num=mc_num, seed=s)[0]
            for s in range(60)
        ]
        spread[mc_num] = statistics.pstdev(values)
        # The mean over seeds is within 4 standard errors of the exact ELBO.
        assert abs(statistics.fmean(values) - exact) < 4 * spread[mc_num] / math.sqrt(60) + 1e-9
    assert spread[32] < spread[2] / 2


def test_estimates_do_not_depend_on_batching():
    requests = [LikelihoodRequest([1], [2, 3]), LikelihoodRequest([1, 2, 3, 4], [0, 1, 5])]
    together = dlm_loglikelihoods(toy_dlm, requests, mask_id=MASK, mc_num=8, mc_batch_size=5)
    alone = [dlm_loglikelihoods(toy_dlm, [r], mask_id=MASK, mc_num=8)[0] for r in requests]
    assert together == pytest.approx(alone, abs=1e-9)


def toy_causal(tokens, valid):
    b, length = tokens.shape
    left = torch.cat([torch.full((b, 1), V), tokens[:, :-1]], dim=1)
    left = left.masked_fill(~torch.cat([torch.zeros(b, 1, dtype=torch.bool), valid[:, :-1]], 1), V)
    return TABLE[tokens, left]  # depends on the current and previous token only


def test_ar_loglikelihood_is_the_sum_of_token_logprobs():
    requests = [LikelihoodRequest([1, 2], [3, 4, 0]), LikelihoodRequest([5], [2])]
    results = ar_loglikelihoods(toy_causal, requests)
    for request, (value, greedy) in zip(requests, results):
        seq = request.context + request.continuation
        direct, all_greedy = 0.0, True
        for pos in range(len(request.context), len(seq)):
            prefix = torch.tensor([seq[:pos]])
            logp = torch.log_softmax(
                toy_causal(prefix, torch.ones_like(prefix, dtype=torch.bool))[0, -1].double(), -1
            )
            direct += float(logp[seq[pos]])
            all_greedy &= int(logp.argmax()) == seq[pos]
        assert value == pytest.approx(direct, abs=1e-9)
        assert greedy == all_greedy
