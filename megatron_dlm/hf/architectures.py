"""Stock Hugging Face architectures (Llama, Qwen2, Qwen3, Qwen2-MoE, Mixtral) <-> our model.

Both directions go through :class:`MegatronDLMConfig` (the description of a megatron-core
GPTModel that our own modeling code also reads) and one weight table per architecture
(:mod:`megatron_dlm.hf.weights`):

* import (:func:`read_stock_config`): a transformers config -> ``ModelConfig`` fields. What
  megatron-core's GPTModel expresses exactly is mapped; anything else is refused with
  :class:`UnsupportedModelError` naming the config field.
* export (:func:`stock_export_config`): an AR model that is exactly one of these classes is
  written as that class (no remote code), so vLLM and lm-eval's ``hf`` backend load it.

Numerics that make the logits equal: megatron-core's RoPE without ``rotary_interleaved`` is
transformers' ``rotate_half`` layout (halves rotated; both compute the frequencies in float32);
RMSNorm epsilon is ``rms_norm_eps``; Qwen3's QK-norm is an RMSNorm over each head's dimensions
before RoPE, as megatron-core's ``qk_layernorm``; Mixtral's softmax-then-top-k-then-renormalise
equals megatron-core's softmax over the top-k logits; Qwen2-MoE without ``norm_topk_prob`` is
megatron-core's ``moe_router_pre_softmax`` and its ``shared_expert_gate`` is
``moe_shared_expert_gate`` (sigmoid(x . w) times the shared expert's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig
from megatron_dlm.hf.weights import LLAMA, MIXTRAL, QWEN2_MOE, WeightTable

DEFAULT_SEQ_LENGTH = 4096
"""Training sequence length written for an imported model (capped by its context length)."""


class UnsupportedModelError(ValueError):
    """A Hugging Face model that megatron-core's GPTModel cannot reproduce exactly."""


@dataclass(frozen=True)
class StockArchitecture:
    """A transformers decoder class that megatron-core's GPTModel can be, weight for weight."""

    model_type: str
    causal_lm: str
    """The ``*ForCausalLM`` class name (``architectures`` in config.json)."""
    table: WeightTable
    moe: bool = False
    min_transformers: str = "4.38"
    """The oldest transformers release with this class."""


STOCK = {
    arch.model_type: arch
    for arch in (
        StockArchitecture("llama", "LlamaForCausalLM", LLAMA),
        StockArchitecture("qwen2", "Qwen2ForCausalLM", LLAMA),
        StockArchitecture("qwen3", "Qwen3ForCausalLM", LLAMA, min_transformers="4.51"),
        StockArchitecture(
            "qwen2_moe", "Qwen2MoeForCausalLM", QWEN2_MOE, moe=True, min_transformers="4.40"
        ),
        StockArchitecture("mixtral", "MixtralForCausalLM", MIXTRAL, moe=True),
    )
}
"""Supported architectures by ``model_type``."""


def _field(config, name: str, default: Any = None) -> Any:
    return getattr(config, name, default)


def rope_settings(config) -> tuple[float, dict]:
    """(rope theta, scaling parameters) of a transformers config, v4 or v5 style."""
    params = dict(_field(config, "rope_parameters") or {})  # v5: theta and scaling together
    if not params:
        params = dict(_field(config, "rope_scaling") or {})
        params.setdefault("rope_theta", _field(config, "rope_theta", 10000.0))
    theta = params.pop("rope_theta", _field(config, "rope_theta", 10000.0))
    return float(theta), params


def _refuse(source: str, field: str, value: Any, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{source}: {field}={value!r} is not supported: {why}")


def read_stock_config(config, source: str = "config.json") -> tuple[StockArchitecture, dict]:
    """(architecture, ``ModelConfig`` fields) of a transformers config (``AutoConfig``).

    The vocabulary is left to the tokenizer (the caller). Raises
    :class:`UnsupportedModelError` naming the first field that cannot be mapped exactly.
    """
    model_type = _field(config, "model_type")
    if model_type not in STOCK:
        raise UnsupportedModelError(
            f"{source}: model_type {model_type!r} is not supported; supported: "
            f"{', '.join(STOCK)} (and folders written by tools/convert_to_hf.py)"
        )
    arch = STOCK[model_type]
    if _field(config, "quantization_config"):
        raise _refuse(source, "quantization_config", "...", "load the unquantised weights")
    act = _field(config, "hidden_act", "silu")
    if act != "silu":
        raise _refuse(source, "hidden_act", act, "only SwiGLU (silu) MLPs are mapped")
    theta, scaling = rope_settings(config)
    rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
    if rope_type != "default":
        raise _refuse(
            source, "rope_scaling", rope_type,
            "megatron-dlm trains plain RoPE; use a checkpoint without RoPE scaling",
        )  # fmt: skip
    partial = scaling.pop("partial_rotary_factor", _field(config, "partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise _refuse(source, "partial_rotary_factor", partial, "only full RoPE is mapped")
    if theta != int(theta):
        raise _refuse(source, "rope_theta", theta, "megatron-dlm's --rotary-base is an integer")
    window = "megatron-core's GPTModel attends to the whole sequence"
    if _field(config, "use_sliding_window"):
        raise _refuse(source, "use_sliding_window", True, window)
    if model_type == "mixtral" and _field(config, "sliding_window") is not None:
        raise _refuse(source, "sliding_window", config.sliding_window, window)
    layer_types = set(_field(config, "layer_types") or ["full_attention"])
    if layer_types != {"full_attention"}:
        raise _refuse(source, "layer_types", sorted(layer_types), "only full attention is mapped")
    heads = config.num_attention_heads
    max_positions = int(_field(config, "max_position_embeddings", DEFAULT_SEQ_LENGTH))
    fields: dict[str, Any] = dict(
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        ffn_hidden_size=config.intermediate_size,
        num_attention_heads=heads,
        num_query_groups=_field(config, "num_key_value_heads") or heads,
        kv_channels=_field(config, "head_dim") or config.hidden_size // heads,
        seq_length=min(max_positions, DEFAULT_SEQ_LENGTH),
        max_position_embeddings=max_positions,
        position_embedding_type="rope",
        rotary_base=int(theta),
        rotary_percent=1.0,
        normalization="RMSNorm",
        norm_epsilon=float(config.rms_norm_eps),
        swiglu=True,
        qk_layernorm=model_type == "qwen3",
        untie_embeddings_and_output_weights=not _field(config, "tie_word_embeddings", False),
        disable_bias_linear=True,
        add_qkv_bias=False,
        init_method_std=float(_field(config, "initializer_range", 0.02)),
        attention_dropout=float(_field(config, "attention_dropout", 0.0) or 0.0),
        hidden_dropout=0.0,  # these architectures have no hidden-state dropout
    )
    fields.update(_biases(arch, config, source))
    if arch.moe:
        fields.update(_moe_fields(arch, config, source))
    return arch, fields


def _biases(arch: StockArchitecture, config, source: str) -> dict:
    """Bias settings: megatron-core has either all linear biases or QKV biases alone."""
    if arch.model_type == "qwen2":
        return {"add_qkv_bias": True}
    if arch.model_type == "qwen2_moe":
        return {"add_qkv_bias": bool(_field(config, "qkv_bias", True))}
    attention_bias = bool(_field(config, "attention_bias", False))
    mlp_bias = bool(_field(config, "mlp_bias", False))
    if attention_bias and arch.model_type == "llama" and mlp_bias:
        return {"disable_bias_linear": False}
    if attention_bias or mlp_bias:
        name = "attention_bias" if attention_bias else "mlp_bias"
        raise _refuse(
            source, name, True,
            "megatron-core has biases in all linear layers or in the QKV projection alone",
        )  # fmt: skip
    return {}


def _moe_fields(arch: StockArchitecture, config, source: str) -> dict:
    if arch.model_type == "mixtral":
        jitter = _field(config, "router_jitter_noise", 0.0)
        if jitter:
            raise _refuse(source, "router_jitter_noise", jitter, "no router input jitter")
        return dict(
            num_experts=config.num_local_experts,
            moe_router_topk=config.num_experts_per_tok,
            moe_ffn_hidden_size=config.intermediate_size,
            moe_router_pre_softmax=False,
            moe_aux_loss_coeff=float(_field(config, "router_aux_loss_coef", 0.0) or 0.0),
            moe_token_dispatcher_type="alltoall",
        )
    step = _field(config, "decoder_sparse_step", 1)
    if step != 1:
        raise _refuse(source, "decoder_sparse_step", step, "every layer must be an MoE layer")
    dense = _field(config, "mlp_only_layers") or []
    if dense:
        raise _refuse(source, "mlp_only_layers", dense, "every layer must be an MoE layer")
    shared = _field(config, "shared_expert_intermediate_size") or None
    return dict(
        num_experts=config.num_experts,
        moe_router_topk=config.num_experts_per_tok,
        moe_ffn_hidden_size=config.moe_intermediate_size,
        moe_shared_expert_intermediate_size=shared,
        moe_shared_expert_gate=bool(shared),
        # Without norm_topk_prob the top-k of a softmax over all experts are used as they are.
        moe_router_pre_softmax=not _field(config, "norm_topk_prob", False),
        moe_aux_loss_coeff=float(_field(config, "router_aux_loss_coef", 0.0) or 0.0),
        moe_token_dispatcher_type="alltoall",
    )


# Export --------------------------------------------------------------------------------------


def stock_architecture_for(config: MegatronDLMConfig) -> tuple[StockArchitecture | None, str]:
    """The stock class an AR model is exactly, or (None, why not)."""
    c = config
    if not c.is_causal:
        return None, "a diffusion LM (bidirectional attention) is no stock causal LM"
    checks = [
        (c.position_embedding_type == "rope", "no stock class has learned or no positions"),
        (c.rotary_percent == 1.0, "no stock class has partial RoPE (--rotary-percent)"),
        (c.normalization == "RMSNorm", "no stock class has LayerNorm"),
        (c.swiglu, "no stock class has a GELU MLP (--no-swiglu)"),
    ]
    for ok, why in checks:
        if not ok:
            return None, why
    if c.num_experts is None:
        if c.qk_layernorm:
            if c.add_bias_linear or c.add_qkv_bias:
                return None, "no stock class has QK-norm with biases"
            return STOCK["qwen3"], ""
        if c.add_qkv_bias and not c.add_bias_linear:
            return STOCK["qwen2"], ""
        return STOCK["llama"], ""
    moe_checks = [
        (c.moe_layer_freq == 1, "no stock MoE class has dense layers (--moe-layer-freq)"),
        (c.moe_router_score_function == "softmax", "no stock MoE class has a sigmoid router"),
        (not c.qk_layernorm and not c.add_bias_linear, "no stock MoE class with QK-norm/biases"),
    ]
    for ok, why in moe_checks:
        if not ok:
            return None, why
    if c.moe_shared_expert_intermediate_size:
        if not getattr(c, "moe_shared_expert_gate", False) or not c.add_qkv_bias:
            return None, "a shared expert without Qwen2-MoE's gate and QKV biases"
        return STOCK["qwen2_moe"], ""
    if c.moe_router_pre_softmax or c.add_qkv_bias:
        return None, "pre-softmax routing or QKV biases without a shared expert"
    return STOCK["mixtral"], ""


def stock_export_config(config: MegatronDLMConfig, arch: StockArchitecture):
    """The transformers config (its own class) of ``config`` as ``arch``."""
    import transformers

    c = config
    common = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.norm_epsilon,
        rope_theta=float(c.rotary_base),
        hidden_act="silu",
        tie_word_embeddings=c.tie_word_embeddings,
        initializer_range=c.initializer_range,
        attention_dropout=c.attention_dropout,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
    )
    if arch.model_type == "llama":
        extra = dict(intermediate_size=c.intermediate_size, attention_bias=c.add_bias_linear,
                     mlp_bias=c.add_bias_linear)  # fmt: skip
    elif arch.model_type == "qwen2":
        extra = dict(intermediate_size=c.intermediate_size, use_sliding_window=False)
    elif arch.model_type == "qwen3":
        extra = dict(
            intermediate_size=c.intermediate_size, attention_bias=False, use_sliding_window=False
        )
    elif arch.model_type == "mixtral":
        extra = dict(intermediate_size=c.moe_ffn_hidden_size, num_local_experts=c.num_experts,
                     num_experts_per_tok=c.moe_router_topk, sliding_window=None)  # fmt: skip
    else:  # qwen2_moe
        extra = dict(
            intermediate_size=c.intermediate_size,
            moe_intermediate_size=c.moe_ffn_hidden_size,
            shared_expert_intermediate_size=c.moe_shared_expert_intermediate_size,
            num_experts=c.num_experts,
            num_experts_per_tok=c.moe_router_topk,
            norm_topk_prob=not c.moe_router_pre_softmax,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            qkv_bias=True,
            use_sliding_window=False,
        )
    config_class = getattr(transformers, arch.causal_lm.replace("ForCausalLM", "Config"))
    hf = config_class(**common, **extra)
    hf.architectures = [arch.causal_lm]
    return hf


def legacy_config_keys(values: dict) -> dict:
    """Keys that transformers < 5 (and tools pinned to it) read, added to a v5 config dict:
    ``rope_theta`` (v5 nests it in ``rope_parameters``) and ``torch_dtype`` (v5: ``dtype``)."""
    values = dict(values)
    rope = values.get("rope_parameters") or {}
    if "rope_theta" not in values and "rope_theta" in rope:
        values["rope_theta"] = rope["rope_theta"]
    if "torch_dtype" not in values and values.get("dtype"):
        values["torch_dtype"] = values["dtype"]
    return values
