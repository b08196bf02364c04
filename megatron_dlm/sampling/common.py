"""Pieces shared by the diffusion and autoregressive samplers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``logits_fn(tokens [b, L] int64, valid [b, L] bool) -> logits [b, L, V]``.

``valid`` is False on left padding; the function must keep padding out of attention (keys) and
number positions from the first valid token, so a padded prompt computes what it would alone.
Logits stay on the model's device; the samplers work there.
"""


@runtime_checkable
class CachingLogitsFn(Protocol):
    """A :data:`LogitsFn` that can also keep every layer's keys and values between calls.

    The cache holds, for ``batch_size`` rows and ``length`` columns, what a forward pass computed
    at each column. :meth:`logits_with_cache` runs the model over the query columns only:

    * ``tokens`` [n, Q]: the tokens at columns ``start .. start + Q - 1`` of cache rows ``rows``
      [n] (int64, indices into the cache's batch);
    * ``valid`` [n, K]: key columns ``0 .. K - 1``, False on padding (never attended). Keys at
      the query columns come from this call, every other key column from the cache (it must
      have been stored before);
    * ``store``: write this call's keys and values into the cache at the query columns;
    * ``logits_columns`` (lo, hi): return logits for these columns only (inside the query
      columns; default all of them) -> [n, hi - lo, V].

    Causal models attend each query to key columns up to its own. Positions count from each
    row's first valid column, as for the plain call.
    """

    def __call__(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor: ...

    def init_cache(self, batch_size: int, length: int) -> Any: ...

    def logits_with_cache(
        self,
        cache: Any,
        rows: torch.Tensor,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        start: int,
        *,
        store: bool,
        logits_columns: tuple[int, int] | None = None,
    ) -> torch.Tensor: ...


def require_cache(logits_fn: LogitsFn, cache: str) -> CachingLogitsFn:
    """``logits_fn`` as a :class:`CachingLogitsFn`, or a clear error for ``--cache``."""
    if not isinstance(logits_fn, CachingLogitsFn):
        raise ValueError(f"--cache {cache}: this model's logits function keeps no KV cache")
    return logits_fn


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` (sampling noise is drawn where the logits are)."""
    return torch.Generator(device=device).manual_seed(seed)


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
    uniform = torch.rand(
        filtered.shape, dtype=torch.float64, generator=generator, device=filtered.device
    )
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
