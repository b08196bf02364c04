"""Generation over any ``logits_fn``: iterative denoising for DLMs, left-to-right for AR.

``options``, ``common``, ``diffusion``, ``autoregressive`` and ``generation`` depend on torch and
the standard library only and import each other relatively: tools/convert_to_hf.py copies them
verbatim into every exported Hugging Face folder (:data:`STANDALONE_MODULES`), where the model's
``generate()`` runs this same sampler. Loading a model and giving it a logits function (with a
KV cache) is :mod:`megatron_dlm.inference`'s job.
"""

from megatron_dlm.sampling.autoregressive import autoregressive_generate
from megatron_dlm.sampling.common import CachingLogitsFn, GenerationOutput, LogitsFn
from megatron_dlm.sampling.diffusion import diffusion_generate
from megatron_dlm.sampling.generation import generate
from megatron_dlm.sampling.options import SamplingConfig

STANDALONE_MODULES = ("options", "common", "diffusion", "autoregressive", "generation")
"""Modules of this package that ship inside exported Hugging Face folders."""

__all__ = [
    "STANDALONE_MODULES",
    "CachingLogitsFn",
    "GenerationOutput",
    "LogitsFn",
    "SamplingConfig",
    "autoregressive_generate",
    "diffusion_generate",
    "generate",
]
