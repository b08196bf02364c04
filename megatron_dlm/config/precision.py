"""Numerical precision: bf16/fp16 mixed precision and FP8 through Transformer Engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from megatron_dlm.config.base import require


@dataclass
class PrecisionConfig:
    """Parameter and compute precision."""

    bf16: bool = False
    """bf16 mixed precision (fp32 main weights and gradient reduction in the optimizer)."""
    fp16: bool = False
    """fp16 mixed precision with dynamic loss scaling."""
    fp8_format: Literal["e4m3", "hybrid"] | None = None
    """FP8 GEMMs through Transformer Engine: 'e4m3' everywhere, or 'hybrid' (e4m3 forward,
    e5m2 gradients). Needs --transformer-impl transformer_engine and an FP8-capable GPU."""
    fp8_recipe: Literal["delayed", "tensorwise", "mxfp8", "blockwise"] = "delayed"
    """FP8 scaling recipe."""
    fp8_amax_history_len: int = 1
    """Amax history length for delayed scaling (Megatron-LM's default 1; 1024 is common)."""
    fp8_amax_compute_algo: Literal["most_recent", "max"] = "most_recent"
    """How delayed scaling reduces the amax history."""
    fp8_param_gather: bool = False
    """Keep the weights in FP8 and all-gather them in FP8 (megatron-core's fp8_param and
    fp8_param_gather); needs --fp8-format."""

    def __post_init__(self):
        require(not (self.bf16 and self.fp16), "--bf16 and --fp16 are mutually exclusive")
        require(self.fp8_amax_history_len >= 1, "--fp8-amax-history-len must be >= 1")
        require(
            self.fp8_format is None or self.bf16 or self.fp16,
            "--fp8-format needs --bf16 (or --fp16) for the non-FP8 parts of the model",
        )

    @property
    def params_dtype(self) -> torch.dtype:
        if self.bf16:
            return torch.bfloat16
        if self.fp16:
            return torch.float16
        return torch.float32
