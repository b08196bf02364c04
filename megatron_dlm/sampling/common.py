"""Pieces shared by the diffusion and autoregressive samplers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``logits_fn(tokens [b, L] int64, valid [b, L] bool) -> logits [b, L, V]``.

``valid`` is False on left padding; the function must keep padding out of attention (keys) and
number positions from the first valid token, so a padded prompt computes what it would alone.
"""


@dataclass
class GenerationOutput:
    """Generated continuations (prompt excluded), one entry per prompt."""

    sequences: list[list[int]]
    forward_passes: list[int]
    """Model evaluations spent on each sequence (classifier-free guidance counts two)."""
    steps: list[int]
    """Denoising (or decoding) steps each sequence took."""
    stopped_at_eos: list[bool] = field(default_factory=list)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, extra: int, fill_id: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Right-align prompts (pad on the left) and append ``extra`` positions of ``fill_id``.

    Returns tokens [b, P + extra], valid [b, P + extra] and P (the longest prompt).
    """
    if not prompts:
        raise ValueError("no prompts given")
    longest = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), longest + extra), fill_id, dtype=torch.long)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        start = longest - len(prompt)
        tokens[row, :start] = pad_id
        valid[row, :start] = False
        if prompt:
            tokens[row, start:longest] = torch.as_tensor(list(prompt), dtype=torch.long)
    return tokens, valid, longest


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Set logits outside the top-k / nucleus (top-p) sets to -inf. ``logits``: [n, V]."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already reach top_p (the first always stays).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Gumbel-max sampling in float64 (greedy at temperature 0). ``logits``: [n, V] -> [n]."""
    filtered = filter_logits(logits.double(), top_k, top_p)
    if temperature == 0:
        return filtered.argmax(-1)
    uniform = torch.rand(filtered.shape, dtype=torch.float64, generator=generator)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
    return (filtered / temperature + gumbel).argmax(-1)


def check_prompts(
    prompts: Sequence[Sequence[int]], gen_length: int, max_length: int | None
) -> None:
    """Every prompt plus the generation must fit the model's maximum sequence length."""
    if not prompts:
        raise ValueError("no prompts given")
    if max_length is None:
        return
    for index, prompt in enumerate(prompts):
        if len(prompt) + gen_length > max_length:
            raise ValueError(
                f"prompt {index} has {len(prompt)} tokens: with --gen-length {gen_length} that is "
                f"{len(prompt) + gen_length}, more than the model's maximum sequence length "
                f"{max_length}"
            )
