"""Inference: load a model once, then ``generate(prompts, options)`` and ``score(requests)``.

    from megatron_dlm.inference import load_model
    model = load_model("runs/quickstart/checkpoints")        # or an exported HF folder
    out = model.generate([model.tokenize("def f(x):")], SamplingConfig(cache="dual"))
    print(model.detokenize(out.sequences[0]))

* :mod:`~megatron_dlm.inference.loading`: :func:`load_model` (Megatron checkpoint at any saved
  layout through :func:`megatron_dlm.models.load_trained`, one process or a launched world, or
  an HF export).
* :mod:`~megatron_dlm.inference.model`: :class:`InferenceModel` (generation through the
  standalone sampler, scoring: Monte Carlo ELBO or exact AR log-likelihood, greedy match).
* :mod:`~megatron_dlm.inference.megatron`, :mod:`~megatron_dlm.inference.hf`: the logits
  functions with KV caches (exact for AR; Fast-dLLM prefix/dual for DLMs).
* :mod:`~megatron_dlm.inference.likelihood`: the estimators.

tools/generate.py, the lm-eval adapter and bench/ use this package; it is the only place that
loads a model for inference.
"""

from __future__ import annotations

from typing import Any

from megatron_dlm.inference.likelihood import LikelihoodRequest
from megatron_dlm.inference.model import DataParallel, InferenceModel

__all__ = ["DataParallel", "InferenceModel", "LikelihoodRequest", "load_model"]


def __getattr__(name: str) -> Any:
    # Lazy: loading needs megatron-core and transformers, the model class neither.
    if name == "load_model":
        from megatron_dlm.inference.loading import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
