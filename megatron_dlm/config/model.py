"""Model architecture: a megatron-core GPTModel, dense or mixture-of-experts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from megatron_dlm.config.base import flag, require, require_finite

REQUIRED_SIZE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "seq_length")
"""Model-size fields without a default: Megatron-LM requires them too."""


def default_transformer_impl() -> str:
    """Transformer Engine when it is installed and a GPU is present, else the local layers."""
    import importlib.util

    import torch

    has_te = importlib.util.find_spec("transformer_engine") is not None
    return "transformer_engine" if has_te and torch.cuda.is_available() else "local"


@dataclass
class ModelConfig:
    """Transformer architecture (megatron-core GPTModel); flag names follow Megatron-LM."""

    num_layers: int | None = None
    """Number of transformer layers (required, as in Megatron-LM, unless a --config recipe sets
    it)."""
    hidden_size: int | None = None
    """Transformer hidden size (required unless a --config recipe sets it)."""
    ffn_hidden_size: int | None = None
    """MLP hidden size. Default (Megatron-LM's): 4 * hidden size, or with --swiglu
    8/3 * hidden size rounded down to a multiple of 64 (about the parameters of a 4h GELU MLP)."""
    num_attention_heads: int | None = None
    """Number of attention heads (required unless a --config recipe sets it)."""
    group_query_attention: bool = False
    """Grouped-query attention with --num-query-groups key/value heads (1 if that is not given,
    as in Megatron-LM)."""
    num_query_groups: int | None = None
    """Number of key/value heads for grouped-query attention (GQA). Default: one per attention
    head (multi-head attention), or 1 with --group-query-attention. Unlike Megatron-LM, which
    ignores it without --group-query-attention, giving it turns GQA on."""
    kv_channels: int | None = None
    """Dimension of each attention head. Default: hidden size / number of heads."""
    seq_length: int | None = None
    """Training sequence length in tokens (required unless a --config recipe sets it)."""
    max_position_embeddings: int | None = None
    """Maximum sequence length the position embedding supports. Default: --seq-length."""
    position_embedding_type: Literal["learned_absolute", "rope", "none"] = "learned_absolute"
    """Position embedding: learned absolute (Megatron-LM's default), rotary (RoPE), or none."""
    rotary_base: int = 10000
    """RoPE base (theta)."""
    rotary_percent: float = 1.0
    """Fraction of each head's dimensions that RoPE rotates."""
    normalization: Literal["LayerNorm", "RMSNorm"] = "LayerNorm"
    """Normalisation layer."""
    apply_layernorm_1p: bool = False
    """Zero-centred norm weights (the norm multiplies by 1 + weight), as Megatron-LM's flag;
    needs --transformer-impl transformer_engine."""
    norm_epsilon: float = 1e-5
    """Epsilon of the normalisation layers."""
    swiglu: bool = field(default=False, metadata={"negatable": True})
    """SwiGLU MLP (gated SiLU) instead of the GELU MLP."""
    qk_layernorm: bool = False
    """Normalise queries and keys per head before attention (QK-norm)."""
    untie_embeddings_and_output_weights: bool = False
    """Use separate input embedding and output projection matrices."""
    disable_bias_linear: bool = field(default=False, metadata={"negatable": True})
    """No biases in linear layers."""
    add_qkv_bias: bool = False
    """Add a bias to the QKV projection only (Qwen-style), even with --disable-bias-linear."""
    init_method_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    attention_dropout: float = 0.1
    """Dropout probability on attention probabilities."""
    hidden_dropout: float = 0.1
    """Dropout probability on hidden states."""
    attention_softmax_in_fp32: bool = False
    """Compute the attention softmax in fp32 under bf16/fp16 (megatron-core's unfused softmax)."""
    attention_backend: Literal["auto", "flash", "fused", "unfused", "local"] = "auto"
    """Transformer Engine's attention kernel (megatron-core's AttnBackend); the local layers
    always use their own PyTorch attention."""
    make_vocab_size_divisible_by: int = 128
    """Pad the vocabulary to a multiple of this times the tensor-parallel size (Megatron-LM)."""
    transformer_impl: Literal["auto", "local", "transformer_engine"] = "auto"
    """Layer implementation: 'local' (pure PyTorch, runs anywhere), 'transformer_engine' (GPU,
    needed for FP8 and context parallelism), or 'auto' (Transformer Engine when it is installed
    and CUDA is available, else local; --dry-run sizes 'auto' as Transformer Engine)."""
    masked_softmax_fusion: bool = True
    """Fused scale-mask-softmax where the layers have it (Transformer Engine); --no-... turns it
    off (as in Megatron-LM). The local layers have no fused kernels: there every fusion is off."""
    bias_gelu_fusion: bool = True
    """Fused bias + GELU where the layers have it (see --masked-softmax-fusion)."""
    bias_swiglu_fusion: bool = True
    """Fused bias + SwiGLU where the layers have it (see --masked-softmax-fusion)."""
    bias_dropout_fusion: bool = True
    """Fused bias + dropout + residual where the layers have it (see --masked-softmax-fusion)."""
    apply_rope_fusion: bool = field(default=True, metadata={"flag": "--rope-fusion"})
    """Fused RoPE kernel where available (Transformer Engine); --no-rope-fusion turns it off."""
    gradient_accumulation_fusion: bool = True
    """Fuse weight-gradient accumulation into the GEMM where available (needs Transformer
    Engine's or apex's CUDA kernel)."""
    persist_layer_norm: bool = True
    """Transformer Engine's persistent LayerNorm kernel where available."""
    use_cpu_initialization: bool = False
    """Initialise each weight as the full matrix on the CPU and keep this rank's shard, so the
    weights do not depend on the tensor/expert-parallel layout."""

    # Mixture of experts.
    num_experts: int | None = None
    """Number of experts per MoE layer; unset gives a dense model."""
    moe_router_topk: int = 2
    """Experts each token is routed to."""
    moe_ffn_hidden_size: int | None = None
    """Hidden size of each expert's MLP. Default: --ffn-hidden-size."""
    moe_shared_expert_intermediate_size: int | None = None
    """Hidden size of an always-active shared expert (unset: none)."""
    moe_shared_expert_gate: bool = False
    """Scale the shared expert's output by a learned sigmoid gate, sigmoid(x . w) (Qwen2-MoE)."""
    moe_layer_freq: int = 1
    """Every N-th layer is an MoE layer (1: all layers); the others are dense."""
    moe_router_load_balancing_type: Literal["aux_loss", "seq_aux_loss", "none"] = "aux_loss"
    """Router load-balancing loss."""
    moe_router_score_function: Literal["softmax", "sigmoid"] = "softmax"
    """Router score function."""
    moe_router_pre_softmax: bool = False
    """Apply the softmax before the top-k selection (Mixtral applies it after)."""
    moe_aux_loss_coeff: float = 0.0
    """Weight of the load-balancing auxiliary loss (e.g. 1e-2)."""
    moe_z_loss_coeff: float | None = None
    """Weight of the router z-loss (e.g. 1e-3); unset disables it."""
    moe_token_dispatcher_type: Literal["allgather", "alltoall"] = "allgather"
    """How tokens reach their experts across expert-parallel ranks."""
    moe_grouped_gemm: bool = False
    """Run all local experts in one grouped GEMM (needs Transformer Engine)."""

    # Activation recomputation.
    recompute_granularity: Literal["full", "selective"] | None = None
    """Recompute activations in the backward pass: whole layers ('full') or the attention core
    ('selective')."""
    recompute_method: Literal["uniform", "block"] | None = None
    """With full recompute: 'uniform' recomputes groups of --recompute-num-layers layers,
    'block' the first --recompute-num-layers layers of each pipeline stage."""
    recompute_num_layers: int | None = None
    """Layers per recompute group (uniform) or per stage (block)."""

    def __post_init__(self):
        # Set by --dry-run (DLMConfig): "auto" then sizes the GPU job, with Transformer Engine.
        self._transformer_impl_auto = self.transformer_impl == "auto"
        if self.transformer_impl == "auto":
            self.transformer_impl = default_transformer_impl()
        require_finite(self)
        missing = [flag(name) for name in REQUIRED_SIZE_FIELDS if getattr(self, name) is None]
        require(
            not missing,
            f"the model size is required (as in Megatron-LM): give {', '.join(missing)} "
            "(or a --config recipe that sets them)",
        )
        for name in REQUIRED_SIZE_FIELDS:
            require(getattr(self, name) > 0, f"{flag(name)} must be positive")
        if self.max_position_embeddings is None:
            self.max_position_embeddings = self.seq_length
        if self.ffn_hidden_size is None:
            if self.swiglu:  # Megatron-LM's rule (validate_args)
                self.ffn_hidden_size = int((4 * self.hidden_size * 2 / 3) / 64) * 64
            else:
                self.ffn_hidden_size = 4 * self.hidden_size
        if self.num_query_groups is None:
            self.num_query_groups = 1 if self.group_query_attention else self.num_attention_heads
        self.group_query_attention = self.num_query_groups != self.num_attention_heads
        for name in (
            "num_query_groups",
            "ffn_hidden_size",
            "kv_channels",
            "max_position_embeddings",
            "make_vocab_size_divisible_by",
        ):
            value = getattr(self, name)
            require(
                value is None or value >= 1,
                f"--{name.replace('_', '-')} must be >= 1, got {value}",
            )
        require(
            self.num_attention_heads % self.num_query_groups == 0,
            f"--num-attention-heads ({self.num_attention_heads}) must be divisible by "
            f"--num-query-groups ({self.num_query_groups})",
        )
        if self.kv_channels is None:
            require(
                self.hidden_size % self.num_attention_heads == 0,
                f"--hidden-size ({self.hidden_size}) must be divisible by --num-attention-heads "
                f"({self.num_attention_heads}), or set --kv-channels",
            )
            self.kv_channels = self.hidden_size // self.num_attention_heads
        # As Megatron-LM, for every position embedding: the model's limit (recorded in
        # checkpoints and exports, where it caps generation) must hold a training sequence.
        require(
            self.max_position_embeddings >= self.seq_length,
            f"--max-position-embeddings ({self.max_position_embeddings}) must be at least "
            f"--seq-length ({self.seq_length})",
        )
        require(
            0.0 < self.rotary_percent <= 1.0,
            f"--rotary-percent must be in (0, 1], got {self.rotary_percent}",
        )
        for name in ("attention_dropout", "hidden_dropout"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"--{name.replace('_', '-')} must be in [0, 1)")
        if self.num_experts is not None:
            require(self.num_experts >= 1, "--num-experts must be at least 1")
            require(
                1 <= self.moe_router_topk <= self.num_experts,
                f"--moe-router-topk ({self.moe_router_topk}) must be between 1 and --num-experts "
                f"({self.num_experts})",
            )
            require(self.moe_layer_freq >= 1, "--moe-layer-freq must be at least 1")
            if self.moe_ffn_hidden_size is None:
                self.moe_ffn_hidden_size = self.ffn_hidden_size
            require(
                not self.moe_shared_expert_gate or self.moe_shared_expert_intermediate_size,
                "--moe-shared-expert-gate needs --moe-shared-expert-intermediate-size",
            )
        if self.recompute_granularity == "full":
            require(
                self.recompute_method is not None and self.recompute_num_layers is not None,
                "--recompute-granularity full needs --recompute-method and --recompute-num-layers",
            )

    @property
    def is_moe(self) -> bool:
        return self.num_experts is not None
