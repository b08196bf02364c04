"""The one place that chooses between iterative denoising (DLMs) and left-to-right (AR)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .autoregressive import autoregressive_generate
from .common import GenerationOutput, LogitsFn
from .diffusion import diffusion_generate
from .options import SamplingConfig


def generate(
    logits_fn: LogitsFn,
    prompts: Sequence[Sequence[int]],
    *,
    bidirectional: bool,
    mask_id: int | None,
    pad_id: int,
    eos_id: int | None = None,
    options: SamplingConfig | None = None,
    vocab_size: int | None = None,
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> GenerationOutput:
    """Generate after each prompt: denoising for a bidirectional model, else left to right.

    Arguments as :func:`~.diffusion.diffusion_generate` (a DLM needs ``mask_id``); an AR model
    never predicts ``mask_id``.
    """
    common = dict(
        pad_id=pad_id, eos_id=eos_id, options=options, vocab_size=vocab_size,
        max_length=max_length, device=device,
    )  # fmt: skip
    if bidirectional:
        if mask_id is None:
            raise ValueError("a diffusion LM needs its mask token id to generate")
        return diffusion_generate(logits_fn, prompts, mask_id=mask_id, **common)
    return autoregressive_generate(logits_fn, prompts, mask_id=mask_id, **common)
