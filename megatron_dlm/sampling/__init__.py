"""Generation over any ``logits_fn``: iterative denoising for DLMs, left-to-right for AR.

``options``, ``common``, ``diffusion`` and ``autoregressive`` depend on torch and the standard
library only and import each other relatively: tools/convert_to_hf.py copies them verbatim into
every exported Hugging Face folder (:data:`STANDALONE_MODULES`), where the model's ``generate()``
runs this same sampler. ``megatron_model`` (the Megatron logits adapter) needs megatron-core.
"""

from megatron_dlm.sampling.autoregressive import autoregressive_generate
from megatron_dlm.sampling.common import GenerationOutput, LogitsFn
from megatron_dlm.sampling.diffusion import diffusion_generate
from megatron_dlm.sampling.options import SamplingConfig

STANDALONE_MODULES = ("options", "common", "diffusion", "autoregressive")
"""Modules of this package that ship inside exported Hugging Face folders."""

__all__ = [
    "STANDALONE_MODULES",
    "GenerationOutput",
    "LogitsFn",
    "SamplingConfig",
    "autoregressive_generate",
    "diffusion_generate",
]
