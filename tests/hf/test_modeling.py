"""Pieces of the HF model against megatron-core's own functions, and the weight mapping."""

from __future__ import annotations

import ast
import sys

import pytest
import torch

from megatron_dlm.config import ParallelConfig
from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig
from megatron_dlm.hf.convert import CODE_FILES
from megatron_dlm.hf.modeling_megatron_dlm import RotaryEmbedding, apply_rotary, route
from megatron_dlm.hf.weights import WeightMappingError, fuse_qkv, megatron_to_hf, split_qkv
from megatron_dlm.testing import run_distributed
from tests.hf import workers
from tests.hf.conftest import CASES, model_config


@pytest.mark.parametrize(
    "score_function, pre_softmax", [("softmax", False), ("softmax", True), ("sigmoid", False)]
)
@pytest.mark.parametrize("topk", [1, 2, 3])
def test_routing_matches_megatron_core(score_function, pre_softmax, topk):
    logits = torch.randn(64, 6, generator=torch.Generator().manual_seed(topk)) * 3
    (expected,) = run_distributed(
        workers.megatron_routing, 1, args=(logits, topk, score_function, pre_softmax)
    )
    config = MegatronDLMConfig(
        num_experts=6,
        moe_router_topk=topk,
        moe_router_score_function=score_function,
        moe_router_pre_softmax=pre_softmax,
    )
    probs, experts = route(logits, config)
    dense = torch.zeros_like(logits).scatter(1, experts, probs)
    torch.testing.assert_close(dense, expected, rtol=0, atol=0)


@pytest.mark.parametrize("rotary_percent", [1.0, 0.5])
def test_rope_matches_megatron_core(rotary_percent):
    seq, batch, heads, dim = 12, 2, 3, 16
    x = torch.randn(seq, batch, heads, dim, generator=torch.Generator().manual_seed(0))
    (expected,) = run_distributed(workers.megatron_rope, 1, args=(x, dim, rotary_percent, 500))
    config = MegatronDLMConfig(
        hidden_size=heads * dim, num_attention_heads=heads, rotary_percent=rotary_percent,
        rotary_base=500,
    )  # fmt: skip
    positions = torch.arange(seq).expand(batch, -1)
    angles = RotaryEmbedding(config)(positions)
    ours = apply_rotary(x.permute(1, 2, 0, 3), angles).permute(2, 0, 1, 3)  # [b, h, s, d] back
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)


def test_qkv_split_follows_megatron_group_layout():
    config = MegatronDLMConfig(hidden_size=8, num_attention_heads=4, num_key_value_heads=2)
    d = config.head_dim  # 2; per group: q heads 2, then k, then v
    rows = torch.arange(2 * (2 + 2) * d).float()[:, None]
    q, k, v = split_qkv(rows, config)
    assert q[:, 0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert k[:, 0].tolist() == [4, 5, 12, 13]
    assert v[:, 0].tolist() == [6, 7, 14, 15]
    assert torch.equal(fuse_qkv(q, k, v, config), rows)


@pytest.mark.parametrize("case", ["ar_dense_pp2", "dlm_moe_pp2"])
def test_weight_mapping_round_trip(case):
    _, objective, model = CASES[case]
    (bad,) = run_distributed(
        workers.state_dict_round_trip, 1, args=(model_config(ParallelConfig(), objective, **model),)
    )
    assert bad == []


@pytest.mark.parametrize(
    "table, model",
    [
        ("LLAMA", dict(num_query_groups=2, qk_layernorm=True, add_qkv_bias=True)),
        ("QWEN2_MOE", dict(num_experts=4, moe_shared_expert_intermediate_size=40,
                           moe_shared_expert_gate=True, add_qkv_bias=True)),
        ("MIXTRAL", dict(num_experts=4, num_query_groups=2)),
        ("MEGATRON_DLM", dict(num_experts=4, moe_shared_expert_intermediate_size=40,
                              moe_shared_expert_gate=True)),
    ],
)  # fmt: skip
def test_every_table_maps_both_ways(table, model):
    cfg = model_config(ParallelConfig(), "ar", untie_embeddings_and_output_weights=True, **model)
    (bad,) = run_distributed(workers.state_dict_round_trip, 1, args=(cfg, table))
    assert bad == []


def test_weight_mapping_rejects_unknown_and_missing_tensors():
    small = dict(vocab_size=4, hidden_size=4, num_attention_heads=1, num_hidden_layers=0)
    config = MegatronDLMConfig(**small)
    state = {"embedding.word_embeddings.weight": torch.zeros(8, 4)}
    assert set(megatron_to_hf(dict(state), config)) == {"model.embed_tokens.weight"}
    with pytest.raises(WeightMappingError, match="unmapped checkpoint tensors: decoder.extra"):
        megatron_to_hf({**state, "decoder.extra.weight": torch.zeros(1)}, config)
    with pytest.raises(WeightMappingError, match="no Hugging Face name for decoder.layers.0.x"):
        megatron_to_hf({**state, "decoder.layers.0.x.weight": torch.zeros(1)}, config)
    untied = MegatronDLMConfig(**small, tie_word_embeddings=False)
    with pytest.raises(WeightMappingError, match="has no output_layer.weight"):
        megatron_to_hf(dict(state), untied)


def _imports(path) -> set[str]:
    """Top-level packages a file imports outside ``try`` blocks (what must be installed)."""
    found = set()

    def visit(node):
        if isinstance(node, ast.Try):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_shipped_code_needs_only_torch_and_transformers():
    allowed = {"torch", "transformers", "__future__"} | set(sys.stdlib_module_names)
    for name, source in CODE_FILES.items():
        assert source.is_file(), name
        assert _imports(source) <= allowed, (name, _imports(source) - allowed)
        tree = ast.parse(source.read_text())
        relative = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level
        }
        # transformers copies `from .x import` files next to the modeling file: they must ship.
        assert {f"{m}.py" for m in relative if m} <= set(CODE_FILES), (name, relative)


TINY_SIZE = dict(num_layers=2, hidden_size=128, num_attention_heads=4, seq_length=256)


def test_config_mapping_and_refusals():
    from megatron_dlm.checkpoint import TokenizerRecord
    from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig
    from megatron_dlm.hf.convert import ExportError, hf_config_from_megatron

    record = TokenizerRecord(vocab_size=10, mask_id=9, eod_id=1, pad_id=0)
    cfg = DLMConfig(
        model=ModelConfig(
            **TINY_SIZE,
            num_query_groups=2,
            kv_channels=24,
            untie_embeddings_and_output_weights=True,
        ),
        objective=ObjectiveConfig(objective="ar"),
    )
    config = hf_config_from_megatron(cfg, record)
    assert (config.num_key_value_heads, config.head_dim, config.tie_word_embeddings) == (
        2,
        24,
        False,
    )
    assert config.is_causal and config.architectures == ["MegatronDLMForCausalLM"]
    assert config.auto_map["AutoModelForCausalLM"] == "modeling_megatron_dlm.MegatronDLMForCausalLM"
    moe_with_bias = DLMConfig(
        model=ModelConfig(**TINY_SIZE, num_experts=2, disable_bias_linear=False)
    )
    with pytest.raises(ExportError, match="MoE models with linear biases"):
        hf_config_from_megatron(moe_with_bias, record)
    with pytest.raises(ValueError, match="contradicts"):
        MegatronDLMConfig(objective="dlm", is_causal=True)
