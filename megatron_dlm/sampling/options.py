"""Generation options shared by tools/generate.py, the HF model's generate() and lm-eval.

Depends on the standard library only: this file ships verbatim inside every exported Hugging
Face folder (with common.py, diffusion.py and autoregressive.py), so ``generate()`` works where
megatron_dlm is not installed. ``megatron_dlm.config.sampling`` re-exports :class:`SamplingConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

try:  # inside megatron_dlm: the project's configuration error (a ValueError)
    from megatron_dlm.config.base import ConfigError
except ImportError:  # shipped in an exported Hugging Face folder
    ConfigError = ValueError


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


@dataclass
class SamplingConfig:
    """Iterative denoising (DLM) and left-to-right (AR) sampling."""

    gen_length: int = 128
    """Tokens to generate after each prompt."""
    steps: int = 128
    """Denoising steps in total (split equally over the blocks). With --threshold it is an upper
    bound: a block ends as soon as it has no masked position left."""
    block_length: int = 32
    """Semi-autoregressive block length: blocks are decoded left to right, the positions inside
    a block in parallel. --gen-length must be a multiple of it."""
    remasking: Literal["low_confidence", "random", "margin", "entropy"] = "low_confidence"
    """Which masked positions to commit at each step: highest probability of the sampled token,
    random, largest top-1 minus top-2 probability, or lowest entropy."""
    threshold: float | None = None
    """Confidence-threshold parallel decoding: commit every masked position of the current block
    whose confidence exceeds this (at least one per step) instead of a fixed count."""
    temperature: float = 0.0
    """Sampling temperature (Gumbel-max in float64); 0 is greedy."""
    top_k: int | None = None
    """Sample only among the k most likely tokens."""
    top_p: float | None = None
    """Sample only from the smallest set of tokens with cumulative probability >= p."""
    cfg_scale: float = 0.0
    """Classifier-free guidance: logits = u + (s + 1)(c - u), u from the prompt fully masked."""
    stop_at_eos: bool = True
    """Stop a sequence once its current block is complete and holds an end-of-sequence token."""
    truncate_after_eos: bool = True
    """Drop everything after the first end-of-sequence token from the output."""
    suppress_early_eos: bool = False
    """Give end-of-sequence tokens zero confidence until the last block, so they are not
    committed early (a known failure: EOS floods in the first blocks)."""
    seed: int = 0
    """Seed for sampling noise and random remasking (per prompt, independent of the batch)."""
    cache: Literal["none", "prefix", "dual"] = "none"
    """Key/value caching. DLMs (Fast-dLLM, arXiv 2505.22618): prefix keeps the keys and values
    of everything before the current block, dual also those of the masked positions after it;
    both are computed by a full pass when a block starts and reused until it completes (an
    approximation: outputs may differ from none). AR models: prefix or dual is the exact KV
    cache (the same tokens as none, one position per forward pass)."""

    def __post_init__(self):
        require(self.gen_length >= 1, "--gen-length must be >= 1")
        require(self.block_length >= 1, "--block-length must be >= 1")
        require(
            self.gen_length % self.block_length == 0,
            f"--gen-length ({self.gen_length}) must be divisible by --block-length "
            f"({self.block_length})",
        )
        blocks = self.gen_length // self.block_length
        require(
            self.steps >= blocks and self.steps % blocks == 0,
            f"--steps ({self.steps}) must be a positive multiple of the number of blocks "
            f"({blocks} = --gen-length {self.gen_length} / --block-length {self.block_length})",
        )
        require(self.temperature >= 0, "--temperature must be >= 0")
        require(self.top_k is None or self.top_k >= 1, "--top-k must be >= 1")
        require(self.top_p is None or 0 < self.top_p <= 1, "--top-p must be in (0, 1]")
        require(self.threshold is None or 0 < self.threshold < 1, "--threshold must be in (0, 1)")
        require(self.cfg_scale >= 0, "--cfg-scale must be >= 0")
        require(
            self.cache in ("none", "prefix", "dual"),
            f"--cache must be none, prefix or dual, got {self.cache!r}",
        )

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        return self.steps // self.num_blocks
