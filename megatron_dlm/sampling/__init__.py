"""Generation over any ``logits_fn``: iterative denoising for DLMs, left-to-right for AR."""

from megatron_dlm.config.sampling import SamplingConfig
from megatron_dlm.sampling.autoregressive import autoregressive_generate
from megatron_dlm.sampling.common import GenerationOutput, LogitsFn
from megatron_dlm.sampling.diffusion import diffusion_generate

__all__ = [
    "GenerationOutput",
    "LogitsFn",
    "SamplingConfig",
    "autoregressive_generate",
    "diffusion_generate",
]
