"""The exported modeling code's KV cache, and transformers' own cache for other causal LMs."""

from __future__ import annotations

import pytest
import torch

from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig
from megatron_dlm.hf.modeling_megatron_dlm import MegatronDLMForCausalLM, MegatronDLMForMaskedLM
from megatron_dlm.sampling import SamplingConfig
from megatron_dlm.sampling.common import left_pad

PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17], [20], [30, 31, 32, 33, 34]]
MASK, PAD, EOS = 119, 0, 1


def _model(objective: str, **overrides):
    torch.manual_seed(0)
    fields = dict(
        vocab_size=120, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=2, intermediate_size=128, qk_layernorm=True, objective=objective,
        mask_token_id=MASK, pad_token_id=PAD, eos_token_id=EOS, max_position_embeddings=64,
        initializer_range=0.2,
    )  # fmt: skip
    config = MegatronDLMConfig(**{**fields, **overrides})
    cls = MegatronDLMForMaskedLM if objective == "dlm" else MegatronDLMForCausalLM
    return cls(config).eval()


@pytest.mark.parametrize("positions", ["rope", "learned_absolute"])
def test_cached_passes_right_after_the_refresh_are_the_full_pass(positions):
    fn = _model("dlm", position_embedding_type=positions).sampler_logits()
    tokens, valid, start = left_pad(PROMPTS, PAD, 16, MASK)
    full, rows = fn(tokens, valid), torch.arange(len(PROMPTS))
    cache = fn.init_cache(len(PROMPTS), tokens.shape[1])
    block = (start, start + 8)
    refresh = fn.logits_with_cache(cache, rows, tokens, valid, 0, store=True, logits_columns=block)
    torch.testing.assert_close(refresh, full[:, start : start + 8], rtol=1e-5, atol=1e-5)
    pick = torch.tensor([3, 1])
    dual = fn.logits_with_cache(
        cache, pick, tokens[pick, start : start + 8], valid[pick], start, store=False
    )
    prefix = fn.logits_with_cache(
        cache, pick, tokens[pick, start:], valid[pick], start, store=False, logits_columns=block
    )
    for cached in (dual, prefix):
        torch.testing.assert_close(cached, full[pick, start : start + 8], rtol=1e-5, atol=1e-5)


RUNS = [
    dict(gen_length=16, block_length=8, steps=16),
    dict(gen_length=16, block_length=8, steps=16, threshold=0.05, temperature=0.5),
    dict(gen_length=16, block_length=4, steps=8, cfg_scale=1.0, temperature=1.0, top_k=20),
]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("options", RUNS, ids=["greedy", "threshold", "cfg-sampled"])
def test_dlm_generate_with_a_cache_is_batch_invariant(cache, options):
    model = _model("dlm")
    batched = model.generate_sequences(PROMPTS, **options, cache=cache).sequences
    assert batched == [model.generate_sequences([p], **options, cache=cache).sequences[0]
                       for p in PROMPTS]  # fmt: skip


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_ar_generate_with_the_kv_cache_equals_without(cache):
    model = _model("ar")
    options = dict(gen_length=16, block_length=16, steps=16, temperature=0.8, top_p=0.9)
    expected = model.generate_sequences(PROMPTS, **options).sequences
    assert model.generate_sequences(PROMPTS, **options, cache=cache).sequences == expected
    assert [model.generate_sequences([p], **options, cache=cache).sequences[0]
            for p in PROMPTS] == expected  # fmt: skip


def test_stock_causal_lm_uses_transformers_dynamic_cache():
    """A causal LM without our modeling code (a stock Llama export) gets the exact AR cache."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from megatron_dlm.inference.hf import HFCausalLogits, hf_logits_fn
    from megatron_dlm.sampling import autoregressive_generate

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        initializer_range=0.2, pad_token_id=PAD, eos_token_id=EOS,
    )  # fmt: skip
    fn = hf_logits_fn(LlamaForCausalLM(config).eval())
    assert isinstance(fn, HFCausalLogits)
    kwargs = dict(pad_id=PAD, eos_id=EOS, vocab_size=120)
    base = dict(gen_length=12, block_length=12, steps=12)
    for options in (base, dict(base, temperature=1.0, seed=2)):
        plain = autoregressive_generate(fn, PROMPTS, options=SamplingConfig(**options), **kwargs)
        cached = autoregressive_generate(
            fn, PROMPTS, options=SamplingConfig(**options, cache="prefix"), **kwargs
        )
        assert cached.sequences == plain.sequences
        alone = [
            autoregressive_generate(fn, [p], options=SamplingConfig(**options), **kwargs)
            for p in PROMPTS
        ]
        assert [a.sequences[0] for a in alone] == plain.sequences
