"""Model provider (megatron-core GPTModel from layer specs) and :func:`load_trained`."""

from __future__ import annotations

from typing import Any

__all__ = ["TrainedModel", "load_trained", "trained_config"]


def __getattr__(name: str) -> Any:
    # Lazy: importing megatron_dlm.models.vocab must not import megatron-core's model code.
    if name in __all__:
        from megatron_dlm.models import trained

        return getattr(trained, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
