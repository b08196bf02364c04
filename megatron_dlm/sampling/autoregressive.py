"""Left-to-right sampling for the AR baseline, with the same temperature/top-k/top-p options."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .common import (
    GenerationOutput,
    LogitsFn,
    check_prompts,
    left_pad,
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
) -> GenerationOutput:
    """Generate up to ``options.gen_length`` tokens per prompt, one token per forward pass.

    Prompts are left-padded so every sequence's next position is the last column; each prompt
    owns its generator, so results do not depend on the batch. A sequence stops at EOS.
    (No KV cache: each step re-runs the whole sequence, fine for evaluation-sized models.)
    """
    opts = options or SamplingConfig()
    check_prompts(prompts, opts.gen_length, max_length)
    tokens, valid, start = left_pad(prompts, pad_id, 0, pad_id)
    generators = [torch.Generator().manual_seed(opts.seed) for _ in prompts]
    generated: list[list[int]] = [[] for _ in prompts]
    passes = [0] * len(prompts)
    stopped = [False] * len(prompts)
    active = list(range(len(prompts)))
    for _ in range(opts.gen_length):
        if not active:
            break
        index = torch.tensor(active)
        logits = logits_fn(tokens[index], valid[index])[:, -1].float()
        if vocab_size is not None:
            logits = logits[:, :vocab_size]
        if mask_id is not None and mask_id < logits.shape[-1]:
            logits[:, mask_id] = float("-inf")
        next_tokens = torch.empty(len(active), dtype=torch.long)
        for position, i in enumerate(active):
            next_tokens[position] = sample_tokens(
                logits[position : position + 1], opts.temperature, opts.top_k, opts.top_p,
                generators[i],
            )[0]  # fmt: skip
            passes[i] += 1
        column = torch.full((len(prompts), 1), pad_id, dtype=torch.long)
        column[index, 0] = next_tokens
        tokens = torch.cat([tokens, column], dim=1)
        grown = torch.zeros((len(prompts), 1), dtype=torch.bool)
        grown[index, 0] = True
        valid = torch.cat([valid, grown], dim=1)
        still = []
        for position, i in enumerate(active):
            token = int(next_tokens[position])
            generated[i].append(token)
            if eos_id is not None and token == eos_id:
                stopped[i] = True
            else:
                still.append(i)
        active = still
    if opts.truncate_after_eos and eos_id is not None:
        generated = [g[: g.index(eos_id)] if eos_id in g else g for g in generated]
    return GenerationOutput(
        sequences=generated, forward_passes=passes, steps=list(passes), stopped_at_eos=stopped
    )
