"""Exported Hugging Face models as the sampler's logits function.

Megatron-DLM's own exports (``modeling_megatron_dlm.py``) provide ``sampler_logits()``: their
forward with a KV cache for every ``--cache`` mode. Any other causal LM (e.g. a stock Llama or
Qwen export of an AR baseline) gets the exact AR cache through ``transformers``' own
:class:`~transformers.DynamicCache`; other models run without a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class HFTextTokenizer:
    """An ``AutoTokenizer`` with the ``tokenize``/``detokenize`` calls our tools use."""

    tokenizer: object

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def is_causal_config(config) -> bool:
    """Our configs say ``is_causal``; for others, a ``*ForMaskedLM`` architecture is not."""
    if hasattr(config, "is_causal"):
        return bool(config.is_causal)
    return not any(a.endswith("ForMaskedLM") for a in (config.architectures or []))


def load_exported(path: str | Path, device: torch.device, dtype: str = "float32"):
    """(model in eval mode on ``device``, its config) through the Auto classes with
    ``trust_remote_code``: DLMs as ``AutoModelForMaskedLM``, AR models ``AutoModelForCausalLM``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype}: choose one of {', '.join(DTYPES)}")
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    auto = AutoModelForCausalLM if is_causal_config(config) else AutoModelForMaskedLM
    model = auto.from_pretrained(path, trust_remote_code=True, dtype=DTYPES[dtype])
    return model.to(device).eval(), config


def _positions(valid: torch.Tensor) -> torch.Tensor:
    return (valid.long().cumsum(-1) - 1).clamp_min(0)


class HFLogits:
    """Any ``transformers`` LM: padding masked, positions from each row's first valid token."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        out = self.model(
            input_ids=tokens, attention_mask=valid.long(), position_ids=_positions(valid)
        )
        return out.logits.float()


@dataclass
class _DynamicRows:
    cache: object
    rows: list[int]


class HFCausalLogits(HFLogits):
    """A causal ``transformers`` LM with the exact KV cache (``DynamicCache``)."""

    def init_cache(self, batch_size: int, length: int) -> _DynamicRows:
        from transformers import DynamicCache

        return _DynamicRows(DynamicCache(config=self.model.config), list(range(batch_size)))

    @torch.no_grad()
    def logits_with_cache(
        self, cache, rows, tokens, valid, start, *, store, logits_columns=None
    ) -> torch.Tensor:
        if not store:
            raise ValueError("the AR KV cache stores every pass")
        rows = rows.tolist()
        if rows != cache.rows:  # sequences that stopped leave the batch, and the cache
            keep = torch.tensor([cache.rows.index(r) for r in rows], device=self.device)
            cache.cache.batch_select_indices(keep)
            cache.rows = rows
        tokens, valid = tokens.to(self.device), valid.to(self.device)
        queries = tokens.shape[1]
        lo, hi = logits_columns or (start, start + queries)
        out = self.model(
            input_ids=tokens,
            attention_mask=valid.long(),
            position_ids=_positions(valid)[:, start : start + queries],
            past_key_values=cache.cache,
            use_cache=True,
        )
        cache.cache = out.past_key_values
        return out.logits[:, lo - start : hi - start].float()


def hf_logits_fn(model: torch.nn.Module):
    """The sampler's logits function for ``model`` (with a KV cache where it has one)."""
    if hasattr(model, "sampler_logits"):  # Megatron-DLM's modeling code
        return model.sampler_logits()
    if is_causal_config(model.config):
        return HFCausalLogits(model)
    return HFLogits(model)
