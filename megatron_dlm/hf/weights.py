"""The mapping between megatron-core GPTModel weights (TP=PP=EP=1 names) and the HF model's.

    megatron-core (local spec)                              Hugging Face (modeling_megatron_dlm)
    embedding.word_embeddings.weight [V_pad, h]             model.embed_tokens.weight [V, h]
    embedding.position_embeddings.weight                    model.embed_positions.weight
    decoder.layers.{i}.input_layernorm.*                    model.layers.{i}.input_layernorm.*
    decoder.layers.{i}.self_attention.linear_qkv.*          ...self_attn.{q,k,v}_proj.*  (split)
    decoder.layers.{i}.self_attention.{q,k}_layernorm.*     ...self_attn.{q,k}_norm.*
    decoder.layers.{i}.self_attention.linear_proj.*         ...self_attn.o_proj.*
    decoder.layers.{i}.pre_mlp_layernorm.*                  ...post_attention_layernorm.*
    decoder.layers.{i}.mlp.linear_fc1.*                     ...mlp.{gate,up}_proj.*  (split)
    decoder.layers.{i}.mlp.linear_fc2.*                     ...mlp.down_proj.*
    decoder.layers.{i}.mlp.router.*                         ...mlp.router.*
    ...mlp.experts.local_experts.{e}.linear_fc{1,2}.*       ...mlp.experts.{e}.{gate,up,down}_proj.*
    ...mlp.shared_experts.linear_fc{1,2}.*                  ...mlp.shared_expert.{gate,up,down}_proj
    decoder.final_layernorm.*                               model.norm.*
    output_layer.weight [V_pad, h] (untied only)            lm_head.weight [V, h]

Layouts: the fused QKV holds, per key/value group g, that group's query heads, then its key
head, then its value head: rows [g, (heads per group + 2) x head_dim]. The SwiGLU fc1 holds the
gate (SiLU) half first, then the up half. Vocabulary rows past the tokenizer's size (Megatron's
padding for tensor parallelism) are dropped; the reverse mapping pads them back with zeros.
"""

from __future__ import annotations

import re

import torch

from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig

_LAYER = re.compile(r"decoder\.layers\.(\d+)\.(.+)")
_EXPERT = re.compile(r"mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12])\.(weight|bias)")
_SIMPLE = {  # megatron name inside a layer -> HF name inside the layer
    "input_layernorm": "input_layernorm",
    "self_attention.q_layernorm": "self_attn.q_norm",
    "self_attention.k_layernorm": "self_attn.k_norm",
    "self_attention.linear_proj": "self_attn.o_proj",
    "pre_mlp_layernorm": "post_attention_layernorm",
    "mlp.router": "mlp.router",
    "mlp.linear_fc2": "mlp.down_proj",
    "mlp.shared_experts.linear_fc2": "mlp.shared_expert.down_proj",
}
_FC1 = {"mlp.linear_fc1": "mlp", "mlp.shared_experts.linear_fc1": "mlp.shared_expert"}


class WeightMappingError(ValueError):
    """A state dict does not have the tensors the configuration implies."""


def split_qkv(fused: torch.Tensor, config: MegatronDLMConfig) -> tuple[torch.Tensor, ...]:
    """Megatron's fused QKV weight [(heads + 2 groups) x d, h] (or bias) -> q, k, v."""
    groups, d = config.num_key_value_heads, config.head_dim
    per_group = config.num_attention_heads // groups
    grouped = fused.reshape(groups, (per_group + 2) * d, *fused.shape[1:])
    q, k, v = grouped.split([per_group * d, d, d], dim=1)
    return tuple(t.reshape(-1, *fused.shape[1:]) for t in (q, k, v))


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: MegatronDLMConfig):
    """Inverse of :func:`split_qkv`."""
    groups, rest = config.num_key_value_heads, q.shape[1:]
    parts = [t.reshape(groups, -1, *rest) for t in (q, k, v)]
    return torch.cat(parts, dim=1).reshape(-1, *rest)


def megatron_to_hf(
    state: dict[str, torch.Tensor], config: MegatronDLMConfig
) -> dict[str, torch.Tensor]:
    """HF tensors from a TP=PP=EP=1 megatron-core state dict (``_extra_state`` is ignored).

    Raises:
        WeightMappingError: a tensor is left unmapped, or an expected one is missing.
    """
    state = {k: v for k, v in state.items() if not k.endswith("_extra_state")}
    vocab = config.vocab_size
    out: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise WeightMappingError(f"the checkpoint has no {name}")
        return state.pop(name)

    out["model.embed_tokens.weight"] = take("embedding.word_embeddings.weight")[:vocab]
    if config.position_embedding_type == "learned_absolute":
        out["model.embed_positions.weight"] = take("embedding.position_embeddings.weight")
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = take("output_layer.weight")[:vocab]
    for suffix in ("weight", "bias"):
        if f"decoder.final_layernorm.{suffix}" in state:
            out[f"model.norm.{suffix}"] = take(f"decoder.final_layernorm.{suffix}")
    for name in sorted(k for k in state if _LAYER.match(k)):
        layer, rest = _LAYER.match(name).groups()
        prefix = f"model.layers.{layer}."
        module, _, suffix = rest.rpartition(".")
        tensor = take(name)
        if module == "self_attention.linear_qkv":
            for proj, part in zip("qkv", split_qkv(tensor, config)):
                out[f"{prefix}self_attn.{proj}_proj.{suffix}"] = part
        elif module in _SIMPLE:
            out[f"{prefix}{_SIMPLE[module]}.{suffix}"] = tensor
        elif module in _FC1:
            out.update(_split_fc1(tensor, f"{prefix}{_FC1[module]}", suffix, config))
        elif match := _EXPERT.fullmatch(rest):
            expert, fc, suffix = match.groups()
            target = f"{prefix}mlp.experts.{expert}"
            if fc == "linear_fc1":
                out.update(_split_fc1(tensor, target, suffix, config))
            else:
                out[f"{target}.down_proj.{suffix}"] = tensor
        else:
            raise WeightMappingError(f"no Hugging Face name for {name}")
    if state:
        raise WeightMappingError(f"unmapped checkpoint tensors: {', '.join(sorted(state))}")
    return out


def _split_fc1(tensor: torch.Tensor, target: str, suffix: str, config: MegatronDLMConfig):
    if not config.swiglu:
        return {f"{target}.up_proj.{suffix}": tensor}
    gate, up = tensor.chunk(2, dim=0)
    return {f"{target}.gate_proj.{suffix}": gate, f"{target}.up_proj.{suffix}": up}


def hf_to_megatron(
    state: dict[str, torch.Tensor], config: MegatronDLMConfig, padded_vocab_size: int
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`megatron_to_hf`: megatron-core TP=PP=EP=1 names, vocabulary padded
    with zero rows to ``padded_vocab_size``."""
    state = dict(state)
    out: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise WeightMappingError(f"the Hugging Face weights have no {name}")
        return state.pop(name)

    def pad_vocab(tensor: torch.Tensor) -> torch.Tensor:
        extra = padded_vocab_size - tensor.shape[0]
        return torch.cat([tensor, tensor.new_zeros(extra, *tensor.shape[1:])]) if extra else tensor

    embed = take("model.embed_tokens.weight")
    out["embedding.word_embeddings.weight"] = pad_vocab(embed)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the embedding itself
    else:
        out["output_layer.weight"] = pad_vocab(take("lm_head.weight"))
    if config.position_embedding_type == "learned_absolute":
        out["embedding.position_embeddings.weight"] = take("model.embed_positions.weight")
    for suffix in ("weight", "bias"):
        if f"model.norm.{suffix}" in state:
            out[f"decoder.final_layernorm.{suffix}"] = take(f"model.norm.{suffix}")
    reverse = {hf: meg for meg, hf in _SIMPLE.items()}
    for layer in range(config.num_hidden_layers):
        src, dst = f"model.layers.{layer}.", f"decoder.layers.{layer}."
        for suffix in ("weight", "bias"):
            q = state.pop(f"{src}self_attn.q_proj.{suffix}", None)
            if q is not None:
                k = take(f"{src}self_attn.k_proj.{suffix}")
                v = take(f"{src}self_attn.v_proj.{suffix}")
                out[f"{dst}self_attention.linear_qkv.{suffix}"] = fuse_qkv(q, k, v, config)
        for hf_name, meg_name in reverse.items():
            for suffix in ("weight", "bias"):
                key = f"{src}{hf_name}.{suffix}"
                if key in state:
                    out[f"{dst}{meg_name}.{suffix}"] = state.pop(key)
        mlps = {"mlp": "mlp.linear_fc1", "mlp.shared_expert": "mlp.shared_experts.linear_fc1"}
        for e in range(config.num_experts or 0):
            mlps[f"mlp.experts.{e}"] = f"mlp.experts.local_experts.{e}.linear_fc1"
        for hf_name, meg_fc1 in mlps.items():
            for suffix in ("weight", "bias"):
                up = state.pop(f"{src}{hf_name}.up_proj.{suffix}", None)
                if up is None:
                    continue
                if config.swiglu:
                    up = torch.cat([take(f"{src}{hf_name}.gate_proj.{suffix}"), up])
                out[f"{dst}{meg_fc1}.{suffix}"] = up
                if hf_name.startswith("mlp.experts."):
                    meg_fc2 = meg_fc1.replace("linear_fc1", "linear_fc2")
                    out[f"{dst}{meg_fc2}.{suffix}"] = take(f"{src}{hf_name}.down_proj.{suffix}")
    if state:
        raise WeightMappingError(f"unmapped Hugging Face tensors: {', '.join(sorted(state))}")
    return out
