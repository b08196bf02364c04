"""Parameter counts and FLOPs: the formulas agree with the model megatron-core builds."""

from __future__ import annotations

import pytest

from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig
from megatron_dlm.models.vocab import Vocab
from megatron_dlm.testing import run_distributed
from megatron_dlm.training.flops import flops_per_sequence, parameter_counts
from tests.modern import modern_model

VOCAB = Vocab(size=300, mask_id=299, eod_id=0, pad_id=1)

CONFIGS = {
    "dense-tied": dict(),
    "gqa-untied-qknorm": dict(
        num_query_groups=2, untie_embeddings_and_output_weights=True, qk_layernorm=True
    ),
    "gelu-layernorm-bias": dict(swiglu=False, normalization="LayerNorm", disable_bias_linear=False),
    "swiglu-bias": dict(disable_bias_linear=False),
    "qkv-bias": dict(add_qkv_bias=True),
    "moe": dict(num_experts=4, moe_router_topk=2, moe_ffn_hidden_size=96),
    "moe-every-other-shared": dict(
        num_experts=4, moe_layer_freq=2, moe_shared_expert_intermediate_size=64
    ),
}


def _cfg(objective="dlm", **model) -> DLMConfig:
    base = dict(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=32)
    return DLMConfig(
        model=ModelConfig(**modern_model(**{**base, **model})), objective=ObjectiveConfig(objective)
    )


def count_built_parameters(cfg_dict: dict) -> int:
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel)
    (model,) = build_model(cfg, VOCAB)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_matches_the_built_model(name):
    cfg = _cfg(**CONFIGS[name])
    padded = VOCAB.padded_size(cfg.model.make_vocab_size_divisible_by, 1)
    (built,) = run_distributed(count_built_parameters, 1, args=(cfg.to_dict(),))
    assert parameter_counts(cfg, padded).total == built


def test_flops_are_six_times_matmul_parameters_plus_attention():
    cfg = _cfg()
    m = cfg.model
    padded = 384
    counts = parameter_counts(cfg, padded)
    norms = (2 * m.num_layers + 1) * m.hidden_size
    matmul_params = counts.active - norms  # tied: the embedding is the output layer
    s, q = m.seq_length, m.num_attention_heads * m.kv_channels
    attention = 3 * m.num_layers * 4 * q * s * s  # bidirectional: every query sees s keys
    assert flops_per_sequence(cfg, padded) == pytest.approx(6 * matmul_params * s + attention)


def test_causal_attention_counts_half_and_moe_counts_active_experts():
    dlm, ar = _cfg("dlm"), _cfg("ar")
    assert flops_per_sequence(dlm, 384) > flops_per_sequence(ar, 384)
    moe2 = _cfg(num_experts=8, moe_router_topk=2)
    moe1 = _cfg(num_experts=8, moe_router_topk=1)
    assert parameter_counts(moe2, 384).total == parameter_counts(moe1, 384).total
    assert parameter_counts(moe2, 384).active > parameter_counts(moe1, 384).active
    assert flops_per_sequence(moe2, 384) > flops_per_sequence(moe1, 384)
