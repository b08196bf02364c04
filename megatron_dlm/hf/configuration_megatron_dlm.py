"""Hugging Face configuration of a Megatron-DLM model (shipped inside every exported folder).

The fields describe the megatron-core GPTModel the checkpoint was trained as. Names that the
Hugging Face ecosystem reads (``hidden_size``, ``num_key_value_heads``, ``vocab_size``, ...)
follow transformers; the rest keep Megatron-LM's flag names:

    Megatron-DLM flag                        config field
    --num-layers                             num_hidden_layers
    --ffn-hidden-size                        intermediate_size
    --num-query-groups                       num_key_value_heads
    --kv-channels                            head_dim
    --untie-embeddings-and-output-weights    tie_word_embeddings (negated)
    --disable-bias-linear                    add_bias_linear (negated)
    --objective dlm|ar                       objective (is_causal = objective == "ar")
    everything else                          the same name without dashes

``vocab_size`` is the tokenizer's vocabulary: the rows Megatron pads the embedding with for
tensor parallelism are dropped by the converter.
"""

from __future__ import annotations

from transformers import PretrainedConfig

OBJECTIVES = ("dlm", "ar")
POSITION_EMBEDDINGS = ("rope", "learned_absolute", "none")
NORMALIZATIONS = ("RMSNorm", "LayerNorm")
SCORE_FUNCTIONS = ("softmax", "sigmoid")


class MegatronDLMConfig(PretrainedConfig):
    """A megatron-core GPTModel: bidirectional (masked diffusion LM) or causal (AR baseline).

    Args:
        vocab_size: tokens in the vocabulary (unpadded).
        hidden_size: transformer hidden size.
        intermediate_size: MLP hidden size of the dense layers.
        num_hidden_layers: transformer layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention); default: one per head.
        head_dim: dimension of each head; default: hidden_size / num_attention_heads.
        max_position_embeddings: longest sequence the model supports.
        position_embedding_type: ``rope``, ``learned_absolute`` or ``none``.
        rotary_base: RoPE base (theta).
        rotary_percent: fraction of each head's dimensions that RoPE rotates (the first ones).
        normalization: ``RMSNorm`` or ``LayerNorm``.
        norm_epsilon: epsilon of every normalisation layer.
        swiglu: gated SiLU MLP; otherwise a GELU MLP.
        qk_layernorm: normalise queries and keys per head before RoPE.
        add_bias_linear: biases in every linear layer.
        add_qkv_bias: a bias in the query/key/value projection only.
        objective: ``dlm`` (bidirectional attention) or ``ar`` (causal attention).
        mask_token_id: the ``<|mask|>`` token a diffusion LM denoises.
        num_experts: experts per MoE layer; None for a dense model.
        moe_router_topk: experts each token is routed to.
        moe_ffn_hidden_size: hidden size of each expert's MLP.
        moe_shared_expert_intermediate_size: hidden size of the always-active shared expert.
        moe_shared_expert_gate: scale the shared expert's output by a learned sigmoid gate
            (Qwen2-MoE's ``shared_expert_gate``).
        moe_layer_freq: every N-th layer (0, N, 2N, ...) is an MoE layer.
        moe_router_score_function: ``softmax`` or ``sigmoid``.
        moe_router_pre_softmax: softmax over all experts before the top-k (else over the top-k).
        hidden_dropout, attention_dropout: dropout probabilities (training only).
        initializer_range: standard deviation of the normal initialisation.
    """

    model_type = "megatron_dlm"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 128,
        intermediate_size: int = 512,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        max_position_embeddings: int = 256,
        position_embedding_type: str = "rope",
        rotary_base: float = 10000,
        rotary_percent: float = 1.0,
        normalization: str = "RMSNorm",
        norm_epsilon: float = 1e-5,
        swiglu: bool = True,
        qk_layernorm: bool = False,
        add_bias_linear: bool = False,
        add_qkv_bias: bool = False,
        objective: str = "dlm",
        mask_token_id: int | None = None,
        pad_token_id: int | None = None,
        eos_token_id: int | None = None,
        bos_token_id: int | None = None,
        tie_word_embeddings: bool = True,
        num_experts: int | None = None,
        moe_router_topk: int = 2,
        moe_ffn_hidden_size: int | None = None,
        moe_shared_expert_intermediate_size: int | None = None,
        moe_shared_expert_gate: bool = False,
        moe_layer_freq: int = 1,
        moe_router_score_function: str = "softmax",
        moe_router_pre_softmax: bool = False,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        is_causal = kwargs.pop("is_causal", None)  # derived; stored in config.json for readers
        if is_causal is not None and is_causal != (objective == "ar"):
            raise ValueError(f"is_causal={is_causal} contradicts objective={objective!r}")
        if position_embedding_type not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding_type must be one of {POSITION_EMBEDDINGS}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}")
        if moe_router_score_function not in SCORE_FUNCTIONS:
            raise ValueError(f"moe_router_score_function must be one of {SCORE_FUNCTIONS}")
        num_key_value_heads = num_key_value_heads or num_attention_heads
        if num_attention_heads % num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        # Base class first: transformers 4.x resets token ids and tie_word_embeddings in it.
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.position_embedding_type = position_embedding_type
        self.rotary_base = rotary_base
        self.rotary_percent = rotary_percent
        self.normalization = normalization
        self.norm_epsilon = norm_epsilon
        self.swiglu = swiglu
        self.qk_layernorm = qk_layernorm
        self.add_bias_linear = add_bias_linear
        self.add_qkv_bias = add_qkv_bias
        self.objective = objective
        self.is_causal = objective == "ar"
        self.mask_token_id = mask_token_id
        self.num_experts = num_experts
        self.moe_router_topk = moe_router_topk
        self.moe_ffn_hidden_size = moe_ffn_hidden_size or intermediate_size
        self.moe_shared_expert_intermediate_size = moe_shared_expert_intermediate_size
        self.moe_shared_expert_gate = moe_shared_expert_gate
        self.moe_layer_freq = moe_layer_freq
        self.moe_router_score_function = moe_router_score_function
        self.moe_router_pre_softmax = moe_router_pre_softmax
        self.hidden_dropout = hidden_dropout
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.tie_word_embeddings = tie_word_embeddings
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.bos_token_id = bos_token_id

    @property
    def bidirectional(self) -> bool:
        """Diffusion LMs attend both ways; the AR baseline is causal."""
        return not self.is_causal

    def is_moe_layer(self, index: int) -> bool:
        """Whether layer ``index`` (0-based) is an MoE layer, as megatron-core's moe_layer_freq."""
        return self.num_experts is not None and index % self.moe_layer_freq == 0
