"""Log-likelihoods: a Monte Carlo ELBO for DLMs, exact sums for AR models.

For a masked diffusion LM the log-likelihood of a continuation c (|c| = n) given a context is
bounded below by the ELBO

    log p(c | ctx) >= E_{k ~ U{1..n}} E_{M ~ U(size-k subsets of c)} [ n/k * sum_{i in M}
                      log p_theta(c_i | ctx, c with M masked) ]

Only the continuation is masked. The estimator draws ``mc_num`` masks whose sizes k are
stratified over 1..n (one uniform offset, evenly spaced), which keeps it unbiased and lowers its
variance; a one-token continuation is computed exactly in one pass. Each request owns a
generator seeded from ``seed`` and the request's tokens, so a value does not depend on the batch.
Log-probabilities are computed on the logits' device; only the sums leave it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from megatron_dlm.sampling.common import LogitsFn, left_pad


@dataclass(frozen=True)
class LikelihoodRequest:
    context: list[int]
    continuation: list[int]


def _request_generator(seed: int, request: LikelihoodRequest) -> torch.Generator:
    digest = hashlib.sha256(repr((seed, request.context, request.continuation)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def stratified_mask_counts(n: int, samples: int, generator: torch.Generator) -> list[int]:
    """``samples`` mask sizes in 1..n, evenly spaced from one uniform offset (each ~ U{1..n})."""
    offset = float(torch.rand((), generator=generator))
    return [1 + int(((offset + j / samples) % 1.0) * n) for j in range(samples)]


def _masked_logprobs(
    logits_fn: LogitsFn,
    rows: list[torch.Tensor],
    masks: list[torch.Tensor],
    start: list[int],
    mask_id: int,
    cfg_scale: float,
    vocab_size: int | None,
    batch_size: int,
) -> list[float]:
    """Sum of log p(target) over the masked positions of each row (rows may differ in length)."""
    out: list[float] = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        chunk_masks = masks[lo : lo + batch_size]
        noised = [row.masked_fill(mask, mask_id) for row, mask in zip(chunk, chunk_masks)]
        tokens, valid, longest = left_pad([r.tolist() for r in noised], mask_id, 0, mask_id)
        if cfg_scale > 0:
            uncond = []
            for r, s in zip(noised, start[lo : lo + batch_size]):
                u = r.clone()
                u[:s] = mask_id  # the unconditional branch: the context is masked too
                uncond.append(u.tolist())
            u_tokens, _, _ = left_pad(uncond, mask_id, 0, mask_id)
            both = logits_fn(torch.cat([tokens, u_tokens]), torch.cat([valid, valid])).float()
            cond, unc = both[: len(chunk)], both[len(chunk) :]
            logits = unc + (cfg_scale + 1) * (cond - unc)
        else:
            logits = logits_fn(tokens, valid).float()
        if vocab_size is not None:
            logits = logits[..., :vocab_size]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        sums = []
        for i, (row, mask) in enumerate(zip(chunk, chunk_masks)):
            pad = longest - len(row)
            positions = torch.nonzero(mask).flatten().to(logprobs.device)
            targets = row.to(logprobs.device)[positions]
            sums.append(logprobs[i, pad + positions].gather(-1, targets[:, None]).sum())
        out.extend(torch.stack(sums).tolist())
    return out


@torch.no_grad()
def dlm_loglikelihoods(
    logits_fn: LogitsFn,
    requests: Sequence[LikelihoodRequest],
    *,
    mask_id: int,
    mc_num: int = 128,
    mc_batch_size: int = 32,
    cfg_scale: float = 0.0,
    seed: int = 0,
    vocab_size: int | None = None,
) -> list[float]:
    """Monte Carlo ELBO of each continuation (a lower bound on its log-likelihood)."""
    rows, masks, starts, weights, owners = [], [], [], [], []
    for index, request in enumerate(requests):
        if not request.continuation:
            raise ValueError("an empty continuation has no likelihood to estimate")
        row = torch.tensor(request.context + request.continuation, dtype=torch.long)
        start, n = len(request.context), len(request.continuation)
        if n == 1:  # exact: the only mask is the one token
            counts = [1]
        else:
            counts = stratified_mask_counts(n, mc_num, _request_generator(seed, request))
        generator = _request_generator(seed + 1, request)
        for k in counts:
            chosen = torch.randperm(n, generator=generator)[:k]
            mask = torch.zeros(len(row), dtype=torch.bool)
            mask[start + chosen] = True
            rows.append(row)
            masks.append(mask)
            starts.append(start)
            weights.append(n / k)
            owners.append(index)
    sums = _masked_logprobs(
        logits_fn, rows, masks, starts, mask_id, cfg_scale, vocab_size, mc_batch_size
    )
    totals = [0.0] * len(requests)
    counts_per = [0] * len(requests)
    for owner, weight, value in zip(owners, weights, sums):
        totals[owner] += weight * value
        counts_per[owner] += 1
    return [t / c for t, c in zip(totals, counts_per)]


@torch.no_grad()
def ar_loglikelihoods(
    logits_fn: LogitsFn,
    requests: Sequence[LikelihoodRequest],
    *,
    batch_size: int = 16,
    vocab_size: int | None = None,
    pad_id: int = 0,
) -> list[tuple[float, bool]]:
    """Exact sum of log p(continuation token | everything before it), and whether greedy."""
    results: list[tuple[float, bool]] = []
    for lo in range(0, len(requests), batch_size):
        chunk = requests[lo : lo + batch_size]
        # The last continuation token is never an input.
        inputs = [(r.context + r.continuation)[:-1] for r in chunk]
        if any(not x for x in inputs):
            raise ValueError("AR log-likelihood needs a non-empty context (e.g. a BOS/EOD token)")
        tokens, valid, longest = left_pad(inputs, pad_id, 0, pad_id)
        logits = logits_fn(tokens, valid).float()
        if vocab_size is not None:
            logits = logits[..., :vocab_size]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        for i, request in enumerate(chunk):
            n = len(request.continuation)
            lp = logprobs[i, longest - n : longest]
            target = torch.tensor(request.continuation, device=lp.device)
            total = float(lp.gather(-1, target[:, None]).sum())
            greedy = bool((lp.argmax(-1) == target).all())
            results.append((total, greedy))
    return results
