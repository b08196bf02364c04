"""Iterative denoising for masked diffusion LMs (LLaDA-style semi-autoregressive blocks).

The generation region starts fully masked. Blocks of ``block_length`` positions are decoded left
to right; inside the current block each step predicts every masked position, then commits some
of them (which ones: the remasking strategy; how many: the linear schedule, or every position
above a confidence threshold). Committed tokens stay committed.

Each prompt owns its random generator (seeded from ``seed``) and its own block/step state, and
padding is kept out of attention by the logits function, so a prompt decodes to the same tokens
alone or in any batch.

With ``cache`` prefix or dual (Fast-dLLM), a block's first step is a full forward pass that stores
every layer's keys and values; its other steps run only the block (dual) or the block and the
masked suffix (prefix) and read the remaining keys and values from that cache. Sequences in
different blocks never share a pass, so the batch invariance holds with the cache too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .common import (
    CachingLogitsFn,
    GenerationOutput,
    LogitsFn,
    check_prompts,
    left_pad,
    make_generator,
    require_cache,
    sample_tokens,
)
from .options import SamplingConfig


def transfer_schedule(block_length: int, steps: int) -> list[int]:
    """Tokens committed at each step of a block: an equal split, the remainder first."""
    base, remainder = divmod(block_length, steps)
    return [base + (1 if step < remainder else 0) for step in range(steps)]


def confidence(
    logits: torch.Tensor, sampled: torch.Tensor, strategy: str, generator: torch.Generator
) -> torch.Tensor:
    """Confidence of each position's sampled token. ``logits`` [n, V] untempered; -> [n].

    Measured on the untempered, unfiltered distribution: temperature and top-k/top-p shape what
    is sampled, not how sure the model is.
    """
    if strategy == "random":
        return torch.rand(
            sampled.shape, dtype=torch.float64, generator=generator, device=sampled.device
        )
    probs = torch.softmax(logits.double(), dim=-1)
    if strategy == "low_confidence":
        return probs.gather(-1, sampled[:, None])[:, 0]
    if strategy == "margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        return top2[:, 0] - top2[:, 1]
    if strategy == "entropy":
        return (probs * torch.log(probs.clamp_min(1e-300))).sum(-1)  # -entropy: higher = surer
    raise ValueError(f"unknown remasking strategy {strategy!r}")


@dataclass
class _Row:
    """One prompt's progress."""

    generator: torch.Generator
    block: int = 0
    step: int = 0
    steps: int = 0
    passes: int = 0
    done: bool = False
    stopped_at_eos: bool = False


def select_positions(
    conf: torch.Tensor, masked: torch.Tensor, count: int, threshold: float | None
) -> torch.Tensor:
    """Which masked positions to commit. ``conf``, ``masked``: [n] -> bool [n].

    Fixed schedule: the ``count`` most confident (ties to the left). Threshold: every position
    above it, and never fewer than ``count`` (so a block still ends within its steps).
    """
    available = int(masked.sum())
    conf = conf.masked_fill(~masked, float("-inf"))
    if threshold is not None:
        chosen = masked & (conf > threshold)
        if int(chosen.sum()) >= max(1, min(count, available)):
            return chosen
    k = min(max(count, 1), available)
    # Stable order: among equal confidences the leftmost position wins.
    order = torch.sort(conf, descending=True, stable=True).indices[:k]
    chosen = torch.zeros_like(masked)
    chosen[order] = True
    return chosen


@torch.no_grad()
def diffusion_generate(
    logits_fn: LogitsFn,
    prompts: Sequence[Sequence[int]],
    *,
    mask_id: int,
    pad_id: int,
    eos_id: int | None = None,
    options: SamplingConfig | None = None,
    vocab_size: int | None = None,
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> GenerationOutput:
    """Generate ``options.gen_length`` tokens after each prompt by iterative denoising.

    Args:
        logits_fn: the model, see :data:`LogitsFn` (a :class:`CachingLogitsFn` for
            ``options.cache`` other than none).
        prompts: token ids per prompt (lengths may differ).
        mask_id, pad_id, eos_id: the tokenizer's special ids.
        vocab_size: real vocabulary size; logits of padded vocabulary rows are ignored.
        max_length: the model's maximum sequence length (prompt + generation must fit).
        device: where tokens, logits and sampling live (the model's device; default CPU).
    """
    opts = options or SamplingConfig()
    check_prompts(prompts, opts.gen_length, max_length)
    device = torch.device(device or "cpu")
    tokens, valid, start = left_pad(prompts, pad_id, opts.gen_length, mask_id)
    tokens, valid = tokens.to(device), valid.to(device)
    rows = [_Row(make_generator(opts.seed, device)) for _ in prompts]
    schedule = transfer_schedule(opts.block_length, opts.steps_per_block)
    prompt_region = valid.clone()
    prompt_region[:, start:] = False
    cache = None
    if opts.cache != "none":
        logits_fn = require_cache(logits_fn, opts.cache)
        branches = 2 if opts.cfg_scale > 0 else 1
        cache = logits_fn.init_cache(branches * len(prompts), tokens.shape[1])
    passes_per_step = 2 if opts.cfg_scale > 0 else 1
    while True:
        active = [i for i, row in enumerate(rows) if not row.done]
        if not active:
            break
        if cache is None:
            # Every step recomputes every position of every active sequence.
            index = torch.tensor(active, device=device)
            logits = _guided(
                logits_fn, tokens[index], valid[index], prompt_region[index], opts, mask_id
            )
            logits = _prediction_logits(logits, vocab_size, mask_id)
            for position, i in enumerate(active):
                lo = start + rows[i].block * opts.block_length
                block_logits = logits[position, lo : lo + opts.block_length]
                _denoise_step(tokens[i], block_logits, lo, rows[i], opts, schedule, mask_id, eos_id)
                rows[i].passes += passes_per_step
            continue
        # Rows of different blocks cannot share a cached pass, so a row that finishes its block
        # early (threshold decoding) waits for the others: one batched call per step instead of
        # one per block in flight. Every row still gets exactly its own passes and tokens.
        current = min(rows[i].block for i in active)
        for group in _cache_groups([i for i in active if rows[i].block == current], rows):
            lo = start + rows[group[0]].block * opts.block_length
            block_logits = _cached_block_logits(
                logits_fn, cache, group, tokens, valid, prompt_region, lo,
                refresh=rows[group[0]].step == 0, opts=opts, mask_id=mask_id,
            )  # fmt: skip
            block_logits = _prediction_logits(block_logits, vocab_size, mask_id)
            for position, i in enumerate(group):
                _denoise_step(
                    tokens[i], block_logits[position], lo, rows[i], opts, schedule, mask_id, eos_id
                )
                rows[i].passes += passes_per_step
    sequences = []
    for i in range(len(rows)):
        generated = tokens[i, start:].tolist()
        if opts.truncate_after_eos and eos_id is not None and eos_id in generated:
            generated = generated[: generated.index(eos_id)]
        sequences.append(generated)
    return GenerationOutput(
        sequences=sequences,
        forward_passes=[row.passes for row in rows],
        steps=[row.steps for row in rows],
        stopped_at_eos=[row.stopped_at_eos for row in rows],
    )


def _guided(
    logits_fn: LogitsFn,
    batch: torch.Tensor,
    batch_valid: torch.Tensor,
    prompt_region: torch.Tensor,
    opts: SamplingConfig,
    mask_id: int,
) -> torch.Tensor:
    """Full-sequence logits [n, L, V] (float32), classifier-free guided if ``cfg_scale`` > 0."""
    if opts.cfg_scale > 0:
        unconditional = batch.masked_fill(prompt_region, mask_id)
        both = logits_fn(torch.cat([batch, unconditional]), torch.cat([batch_valid] * 2))
        cond, uncond = both[: len(batch)].float(), both[len(batch) :].float()
        return uncond + (opts.cfg_scale + 1) * (cond - uncond)
    return logits_fn(batch, batch_valid).float()


def _prediction_logits(logits: torch.Tensor, vocab_size: int | None, mask_id: int) -> torch.Tensor:
    """Drop padded vocabulary rows; the mask token is never a prediction. [..., V] -> [..., v]."""
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    logits[..., mask_id] = float("-inf")
    return logits


def _cache_groups(in_block: list[int], rows: list[_Row]) -> list[list[int]]:
    """Sequences of one block that can share one cached forward pass: all starting it (a full
    pass that refreshes the cache) or all inside it. Rows that start a block together stay in
    step, so this is one group; the split guards the refresh flag taken from the first row."""
    groups: dict[bool, list[int]] = {}
    for i in in_block:
        groups.setdefault(rows[i].step == 0, []).append(i)
    return list(groups.values())


def _cached_block_logits(
    logits_fn: CachingLogitsFn,
    cache: object,
    group: list[int],
    tokens: torch.Tensor,
    valid: torch.Tensor,
    prompt_region: torch.Tensor,
    lo: int,
    *,
    refresh: bool,
    opts: SamplingConfig,
    mask_id: int,
) -> torch.Tensor:
    """Logits [n, block_length, V] of the current block [lo, lo + block_length) of ``group``.

    A block's first step runs every position and stores the keys and values (the refresh);
    later steps run the block and, with the prefix cache, the masked suffix after it, reading
    every other position from the cache.
    """
    hi = lo + opts.block_length
    index = torch.tensor(group, device=tokens.device)
    batch, batch_valid, cache_rows = tokens[index], valid[index], index
    if opts.cfg_scale > 0:  # cache rows [b, 2b) hold the unconditional branch
        unconditional = batch.masked_fill(prompt_region[index], mask_id)
        batch = torch.cat([batch, unconditional])
        batch_valid = torch.cat([batch_valid] * 2)
        cache_rows = torch.cat([index, index + len(tokens)])
    length = batch.shape[1]
    if refresh:
        q_lo, q_hi = 0, length
    elif opts.cache == "prefix":
        q_lo, q_hi = lo, length
    else:  # dual
        q_lo, q_hi = lo, hi
    logits = logits_fn.logits_with_cache(
        cache, cache_rows, batch[:, q_lo:q_hi], batch_valid, q_lo, store=refresh,
        logits_columns=(lo, hi),
    ).float()  # fmt: skip
    if opts.cfg_scale > 0:
        cond, uncond = logits[: len(group)], logits[len(group) :]
        return uncond + (opts.cfg_scale + 1) * (cond - uncond)
    return logits


def _denoise_step(
    row_tokens: torch.Tensor,
    block_logits: torch.Tensor,
    lo: int,
    row: _Row,
    opts: SamplingConfig,
    schedule: list[int],
    mask_id: int,
    eos_id: int | None,
) -> None:
    """One step on one sequence's current block [lo, lo + block_length) (``row_tokens`` [T] is
    updated in place; ``block_logits`` [block_length, V])."""
    hi = lo + opts.block_length
    masked = row_tokens[lo:hi] == mask_id
    sampled = sample_tokens(block_logits, opts.temperature, opts.top_k, opts.top_p, row.generator)
    conf = confidence(block_logits, sampled, opts.remasking, row.generator)
    last_block = row.block == opts.num_blocks - 1
    if opts.suppress_early_eos and eos_id is not None and not last_block:
        conf = torch.where(sampled == eos_id, torch.zeros_like(conf), conf)
    count = schedule[min(row.step, len(schedule) - 1)]
    chosen = select_positions(conf, masked, count, opts.threshold)
    row_tokens[lo:hi] = torch.where(chosen, sampled, row_tokens[lo:hi])
    row.step += 1
    row.steps += 1
    if bool((row_tokens[lo:hi] == mask_id).any()):
        return
    # The block is complete.
    if opts.stop_at_eos and eos_id is not None and bool((row_tokens[lo:hi] == eos_id).any()):
        row_tokens[hi:] = eos_id
        row.done = row.stopped_at_eos = True
    elif last_block:
        row.done = True
    else:
        row.block += 1
        row.step = 0
