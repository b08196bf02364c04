"""Generation options: :class:`SamplingConfig`, defined in :mod:`megatron_dlm.sampling.options`.

The definition lives with the sampler because it ships (standard library only) inside exported
Hugging Face folders; this module keeps it reachable beside the other config sections.
"""

from megatron_dlm.sampling.options import SamplingConfig

__all__ = ["SamplingConfig"]
