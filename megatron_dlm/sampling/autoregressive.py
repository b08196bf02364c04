"""Left-to-right sampling for the AR baseline, with the same temperature/top-k/top-p options."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import (
    GenerationOutput,
    LogitsFn,
    check_prompts,
    left_pad,
    make_generator,
    require_cache,
    sample_tokens,
)
from .options import SamplingConfig


@torch.no_grad()
def autoregressive_generate(
    logits_fn: LogitsFn,
    prompts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    eos_id: int | None = None,
    mask_id: int | None = None,
    options: SamplingConfig | None = None,
    vocab_size: int | None = None,
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> GenerationOutput:
    """Generate up to ``options.gen_length`` tokens per prompt, one token per forward pass.

    Prompts are left-padded so every sequence's next position is the last column; each prompt
    owns its generator, so results do not depend on the batch. A sequence stops at EOS.
    Without a cache each step re-runs the whole sequence; with ``options.cache`` prefix or dual
    (the exact KV cache) the prompt runs once and each step runs only the newest token.
    ``device``: where tokens, logits and sampling live (the model's device; default CPU).
    """
    opts = options or SamplingConfig()
    check_prompts(prompts, opts.gen_length, max_length)
    device = torch.device(device or "cpu")
    tokens, valid, start = left_pad(prompts, pad_id, 0, pad_id)
    tokens, valid = tokens.to(device), valid.to(device)
    cache = None
    if opts.cache != "none":
        logits_fn = require_cache(logits_fn, opts.cache)
        cache = logits_fn.init_cache(len(prompts), start + opts.gen_length)
    generators = [make_generator(opts.seed, device) for _ in prompts]
    generated: list[list[int]] = [[] for _ in prompts]
    passes = [0] * len(prompts)
    stopped = [False] * len(prompts)
    active = list(range(len(prompts)))
    for step in range(opts.gen_length):
        if not active:
            break
        index = torch.tensor(active, device=device)
        length = tokens.shape[1]
        if cache is None:
            logits = logits_fn(tokens[index], valid[index])[:, -1].float()
        else:
            # The first pass stores the prompt; each later one the token sampled last.
            first = 0 if step == 0 else length - 1
            logits = logits_fn.logits_with_cache(
                cache, index, tokens[index, first:], valid[index], first, store=True,
                logits_columns=(length - 1, length),
            )[:, -1].float()  # fmt: skip
        if vocab_size is not None:
            logits = logits[:, :vocab_size]
        if mask_id is not None and mask_id < logits.shape[-1]:
            logits[:, mask_id] = float("-inf")
        next_tokens = torch.empty(len(active), dtype=torch.long, device=device)
        for position, i in enumerate(active):
            next_tokens[position] = sample_tokens(
                logits[position : position + 1], opts.temperature, opts.top_k, opts.top_p,
                generators[i],
            )[0]  # fmt: skip
            passes[i] += 1
        column = torch.full((len(prompts), 1), pad_id, dtype=torch.long, device=device)
        column[index, 0] = next_tokens
        tokens = torch.cat([tokens, column], dim=1)
        grown = torch.zeros((len(prompts), 1), dtype=torch.bool, device=device)
        grown[index, 0] = True
        valid = torch.cat([valid, grown], dim=1)
        still = []
        for position, token in zip(active, next_tokens.tolist()):
            generated[position].append(token)
            if eos_id is not None and token == eos_id:
                stopped[position] = True
            else:
                still.append(position)
        active = still
    if opts.truncate_after_eos and eos_id is not None:
        generated = [g[: g.index(eos_id)] if eos_id in g else g for g in generated]
    return GenerationOutput(
        sequences=generated, forward_passes=passes, steps=list(passes), stopped_at_eos=stopped
    )
