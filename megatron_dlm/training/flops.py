"""Model FLOPs per step and MFU.

Counts the matrix multiplications of the model (no recomputation: model FLOPs, not hardware
FLOPs), forward x3 for forward + backward. Attention scores and values are counted at the full
s x s for bidirectional (DLM) attention and at half of it for causal (AR) attention, which a
causal kernel skips; MoE layers count only the experts a token is routed to (active
parameters) plus the router.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_dlm.config import DLMConfig

# Dense bf16/fp16 tensor-core peak TFLOP/s per device (no sparsity); fp8 doubles it.
PEAK_TFLOPS_BF16 = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card is lower, set --peak-tflops
    "H800": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "GH200": 989.0,
    "B200": 2250.0,
}


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    """All parameters (embedding and output layer counted once if tied)."""
    active: int
    """Parameters a token passes through (MoE: top-k experts of each MoE layer)."""
    embedding: int


def _is_moe_layer(cfg: DLMConfig, layer: int) -> bool:
    return cfg.model.is_moe and layer % cfg.model.moe_layer_freq == 0


def parameter_counts(cfg: DLMConfig, padded_vocab: int) -> ParameterCounts:
    m = cfg.model
    h = m.hidden_size
    q = m.num_attention_heads * m.kv_channels
    kv = m.num_query_groups * m.kv_channels
    per_norm = h * (2 if m.normalization == "LayerNorm" else 1)  # LayerNorm has a bias
    norms = 2 * per_norm
    attention = h * (q + 2 * kv) + q * h + (2 * m.kv_channels if m.qk_layernorm else 0)
    mlp_factor = 3 if m.swiglu else 2
    dense_mlp = mlp_factor * h * m.ffn_hidden_size
    if not m.disable_bias_linear:
        attention += (q + 2 * kv) + h
        dense_mlp += (mlp_factor - 1) * m.ffn_hidden_size + h
    elif m.add_qkv_bias:
        attention += q + 2 * kv
    total = active = 0
    for layer in range(m.num_layers):
        total += attention + norms
        active += attention + norms
        if _is_moe_layer(cfg, layer):
            expert = mlp_factor * h * m.moe_ffn_hidden_size
            shared = mlp_factor * h * (m.moe_shared_expert_intermediate_size or 0)
            total += m.num_experts * expert + h * m.num_experts + shared
            active += m.moe_router_topk * expert + h * m.num_experts + shared
        else:
            total += dense_mlp
            active += dense_mlp
    embedding = padded_vocab * h
    head = embedding if m.untie_embeddings_and_output_weights else 0
    positions = (
        m.max_position_embeddings * h if m.position_embedding_type == "learned_absolute" else 0
    )
    extra = embedding + head + positions + per_norm  # + the final norm
    return ParameterCounts(total=total + extra, active=active + extra, embedding=embedding)


def flops_per_sequence(cfg: DLMConfig, padded_vocab: int, seq_length: int | None = None) -> float:
    """Training (forward + backward) model FLOPs for one sequence."""
    m = cfg.model
    s = seq_length or m.seq_length
    h = m.hidden_size
    q = m.num_attention_heads * m.kv_channels
    kv = m.num_query_groups * m.kv_channels
    attended = s if cfg.objective.bidirectional else (s + 1) / 2  # keys per query on average
    mlp_factor = 3 if m.swiglu else 2
    forward_per_token = 0.0
    for layer in range(m.num_layers):
        forward_per_token += 2 * h * (q + 2 * kv) + 2 * q * h  # QKV and output projections
        forward_per_token += 2 * 2 * q * attended  # scores and weighted values
        if _is_moe_layer(cfg, layer):
            expert = mlp_factor * h * m.moe_ffn_hidden_size
            shared = mlp_factor * h * (m.moe_shared_expert_intermediate_size or 0)
            forward_per_token += 2 * (h * m.num_experts + m.moe_router_topk * expert + shared)
        else:
            forward_per_token += 2 * mlp_factor * h * m.ffn_hidden_size
    forward_per_token += 2 * h * padded_vocab  # output layer
    return 3.0 * forward_per_token * s


def peak_tflops(cfg: DLMConfig, override: float | None = None) -> float | None:
    """Peak TFLOP/s of this device for MFU: --peak-tflops, else the table for known GPUs."""
    if override:
        return override
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS_BF16.items():
        if key in name:
            if cfg.precision.fp8_format:
                return 2 * value
            return value if (cfg.precision.bf16 or cfg.precision.fp16) else value / 2
    return None
