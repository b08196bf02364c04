"""Hugging Face modeling code of a Megatron-DLM model (shipped inside every exported folder).

A plain PyTorch re-implementation of megatron-core's GPTModel (local layer spec) that computes
the same logits from the converted weights:

    tokens -> embedding (+ learned positions) -> N x [norm -> attention -> residual,
    norm -> MLP or MoE -> residual] -> final norm -> output layer -> logits

Attention is bidirectional for diffusion LMs (``objective == "dlm"``) and causal for the AR
baseline. Left or right padding is handled by ``attention_mask``: padded keys are never attended
and positions count from each row's first valid token, so a padded row computes what it would
alone. ``generate()`` runs Megatron-DLM's own sampler (iterative denoising, or left to right for
AR models); its files ship next to this one. The sampler's KV caches (``cache="prefix"`` or
``"dual"``: Fast-dLLM's caches for DLMs, the exact cache for AR models) keep every layer's keys
and values in a :class:`KVCache` (see :meth:`_LanguageModel.logits_with_cache`).

Numerics follow megatron-core 0.16.1: RoPE on the first ``rotary_percent`` of each head's
dimensions, non-interleaved (halves rotated), frequencies in float32; QK-norm per head before
RoPE; GQA heads grouped as megatron-core splits its fused QKV (query head i uses key/value head
i // (heads per group)); SwiGLU = silu(gate) * up; MoE routing as megatron-core's TopKRouter
(softmax over the top-k logits, or over all experts before the top-k with pre-softmax, or
sigmoid scores renormalised over the top-k) with the routing probability applied to each expert's
activations before its output projection.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput, MaskedLMOutput
from transformers.utils import ModelOutput

from .configuration_megatron_dlm import MegatronDLMConfig

try:  # an exported folder ships the sampler next to this file
    from .common import GenerationOutput
    from .generation import generate as sampler_generate
    from .options import SamplingConfig
except ImportError:  # this file inside the megatron_dlm package
    # Imported by name: transformers < 4.40 scans `except` blocks for `from X import` lines and
    # would require megatron_dlm to be installed to load an exported folder.
    _sampling = importlib.import_module("megatron_dlm.sampling")
    GenerationOutput = _sampling.GenerationOutput
    SamplingConfig = _sampling.SamplingConfig
    sampler_generate = _sampling.generate

DREAM_ALGORITHMS = {
    "origin": "random",
    "maskgit_plus": "low_confidence",
    "topk_margin": "margin",
    "entropy": "entropy",
}
"""Dream's ``diffusion_generate(alg=...)`` -> our remasking strategy (which masked positions a
step commits: random, most probable token, largest top-1 - top-2 margin, lowest entropy)."""


@dataclass
class DiffusionGenerateOutput(ModelOutput):
    """What ``diffusion_generate(..., return_dict_in_generate=True)`` returns (Dream's fields).

    Attributes:
        sequences: [b, P + max_new_tokens]: the inputs, then the generated tokens.
        history: with ``output_history``, the sequences after each denoising step.
    """

    sequences: torch.LongTensor | None = None
    history: tuple[torch.LongTensor, ...] | None = None


def make_norm(config: MegatronDLMConfig, size: int) -> nn.Module:
    """The normalisation layer megatron-core's local spec builds (torch RMSNorm or LayerNorm)."""
    if config.normalization == "RMSNorm":
        return nn.RMSNorm(size, eps=config.norm_epsilon)
    return nn.LayerNorm(size, eps=config.norm_epsilon)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted from its row's first valid token. [b, L] -> [b, L]."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def attention_bias(
    attention_mask: torch.Tensor | None, causal: bool, length: int, dtype: torch.dtype, device
) -> torch.Tensor | None:
    """Additive attention bias [b or 1, 1, L, L]: 0 where attended, the dtype's minimum elsewhere.

    Padded keys are masked; causal models also mask future keys. None when nothing is masked.
    """
    blocked = None
    if attention_mask is not None and not bool(attention_mask.all()):
        blocked = ~attention_mask.bool()[:, None, None, :]  # [b, 1, 1, L]: padded keys
    if causal:
        future = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
        blocked = future[None, None] if blocked is None else blocked | future
    if blocked is None:
        return None
    bias = torch.zeros(blocked.shape, dtype=dtype, device=device)
    return bias.masked_fill(blocked, torch.finfo(dtype).min)


def cached_attention_bias(
    valid: torch.Tensor, start: int, queries: int, causal: bool, dtype: torch.dtype
) -> torch.Tensor | None:
    """Additive bias [b, 1, Q, K] for queries at columns ``start .. start + Q - 1`` over the key
    columns of ``valid`` [b, K] (padded keys, and for causal models later keys, masked)."""
    blocked = ~valid.bool()[:, None, None, :]
    if causal:
        keys = torch.arange(valid.shape[1], device=valid.device)
        query_columns = torch.arange(start, start + queries, device=valid.device)
        blocked = blocked | (keys[None, :] > query_columns[:, None])
    if not bool(blocked.any()):
        return None
    bias = torch.zeros(blocked.shape, dtype=dtype, device=valid.device)
    return bias.masked_fill(blocked, torch.finfo(dtype).min)


class KVCache:
    """Every layer's keys and values at every column, for the sampler's KV caches.

    ``[batch, key/value heads, length, head_dim]`` per layer, after QK-norm and RoPE, allocated
    when first stored.
    """

    def __init__(self, batch_size: int, length: int):
        self.batch_size, self.length = batch_size, length
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}


@dataclass
class CachedPass:
    """One forward pass over query columns ``start .. start + Q - 1`` of cache ``rows`` [n],
    attending to key columns ``0 .. columns - 1``; ``store`` writes this pass's keys/values."""

    cache: KVCache
    rows: torch.Tensor
    start: int
    columns: int
    store: bool

    def merge(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [n, heads, columns, d]: ``key``/``value`` [n, heads, Q, d] where this
        pass ran, the cache's elsewhere."""
        cache, lo = self.cache, self.start
        hi = lo + key.shape[2]
        if layer not in cache.keys:
            shape = (cache.batch_size, key.shape[1], cache.length, key.shape[3])
            cache.keys[layer], cache.values[layer] = key.new_zeros(shape), value.new_zeros(shape)
        if self.store:
            cache.keys[layer][self.rows, :, lo:hi] = key
            cache.values[layer][self.rows, :, lo:hi] = value
        if lo == 0 and hi == self.columns:
            return key, value
        keys = cache.keys[layer][self.rows, :, : self.columns]  # a copy
        values = cache.values[layer][self.rows, :, : self.columns]
        keys[:, :, lo:hi], values[:, :, lo:hi] = key, value
        return keys, values


class RotaryEmbedding(nn.Module):
    """megatron-core's RoPE: angles = position x base^(-2i/d) for the first d = head_dim x
    rotary_percent dimensions, duplicated as [angles, angles] (non-interleaved)."""

    def __init__(self, config: MegatronDLMConfig):
        super().__init__()
        dim = config.head_dim
        if config.rotary_percent < 1.0:
            dim = int(dim * config.rotary_percent)
        self.dim = dim
        self.base = config.rotary_base

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """Angles [b, 1, L, dim] in float32 for ``position_ids`` [b, L]."""
        # Computed on the fly (no buffer): cheap, and never left uninitialised by meta-device
        # loading.
        device = position_ids.device
        exponents = torch.arange(0, self.dim, 2, dtype=torch.float32, device=device) / self.dim
        inv_freq = 1.0 / (self.base**exponents)
        angles = position_ids.float()[..., None] * inv_freq  # [b, L, dim/2]
        return torch.cat([angles, angles], dim=-1)[:, None]


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``angles.shape[-1]`` dims of ``x`` [b, heads, L, head_dim]."""
    dim = angles.shape[-1]
    rotated, passed = x[..., :dim], x[..., dim:]
    first, second = rotated.chunk(2, dim=-1)
    half_turned = torch.cat([-second, first], dim=-1)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return torch.cat([rotated * cos + half_turned * sin, passed], dim=-1)


class Attention(nn.Module):
    """Multi-head / grouped-query self-attention with optional QK-norm and RoPE."""

    def __init__(self, config: MegatronDLMConfig, index: int = 0):
        super().__init__()
        self.index = index
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        qkv_bias = config.add_bias_linear or config.add_qkv_bias
        inner, kv_inner = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_inner, bias=qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_inner, bias=qkv_bias)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=config.add_bias_linear)
        if config.qk_layernorm:
            self.q_norm = make_norm(config, self.head_dim)
            self.k_norm = make_norm(config, self.head_dim)
        else:
            self.q_norm = self.k_norm = None
        self.dropout = config.attention_dropout

    def forward(
        self,
        x: torch.Tensor,
        angles: torch.Tensor | None,
        bias: torch.Tensor | None,
        cached: CachedPass | None = None,
    ) -> torch.Tensor:
        """``x`` [b, L, hidden], ``angles`` [b, 1, L, rot] or None, ``bias`` [b, 1, L, L]
        ([b, 1, L, K] with ``cached``: keys and values of the other columns from its cache)."""
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, length, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [b, heads, L, d]
        if angles is not None:
            q, k = apply_rotary(q, angles), apply_rotary(k, angles)
        if cached is not None:
            k, v = cached.merge(self.index, k, v)
        group = self.num_heads // self.num_kv_heads
        if group > 1:  # query head i reads key/value head i // group, as megatron-core
            k = k.repeat_interleave(group, dim=1)
            v = v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, length, -1))


class MLP(nn.Module):
    """SwiGLU (down(silu(gate(x)) * up(x))) or GELU (down(gelu(up(x)))) MLP."""

    def __init__(self, config: MegatronDLMConfig, hidden: int, bias: bool):
        super().__init__()
        self.swiglu = config.swiglu
        if self.swiglu:
            self.gate_proj = nn.Linear(config.hidden_size, hidden, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [..., hidden]; ``scale`` [...] (an expert's routing probability per token)."""
        if self.swiglu:
            h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        else:
            h = F.gelu(self.up_proj(x))
        if scale is None:
            return self.down_proj(h)
        # megatron-core scales an expert's activations, then adds the scaled output bias.
        out = F.linear(h * scale[..., None].to(h.dtype), self.down_proj.weight)
        if self.down_proj.bias is not None:
            out = out + self.down_proj.bias * scale[..., None].to(out.dtype)
        return out


def route(logits: torch.Tensor, config: MegatronDLMConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """megatron-core's top-k routing. ``logits`` [n, experts] -> probs, expert ids: [n, k]."""
    k = config.moe_router_topk
    if config.moe_router_score_function == "softmax":
        if config.moe_router_pre_softmax:
            scores = torch.softmax(logits, dim=-1, dtype=torch.float32).type_as(logits)
            return torch.topk(scores, k, dim=-1)
        top, experts = torch.topk(logits, k, dim=-1)
        return torch.softmax(top, dim=-1, dtype=torch.float32).type_as(logits), experts
    scores = torch.sigmoid(logits.float()).type_as(logits)
    probs, experts = torch.topk(scores, k, dim=-1)
    if k > 1:
        probs = probs / (probs.sum(dim=-1, keepdim=True) + 1e-20)
    return probs, experts


class MoE(nn.Module):
    """Top-k routed experts plus an optional always-active shared expert (optionally scaled by
    a sigmoid gate, as megatron-core's ``moe_shared_expert_gate``)."""

    def __init__(self, config: MegatronDLMConfig):
        super().__init__()
        self.config = config
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=config.add_bias_linear)
        self.experts = nn.ModuleList(
            MLP(config, config.moe_ffn_hidden_size, config.add_bias_linear)
            for _ in range(config.num_experts)
        )
        self.shared_expert = self.shared_expert_gate = None
        if config.moe_shared_expert_intermediate_size:
            self.shared_expert = MLP(
                config, config.moe_shared_expert_intermediate_size, config.add_bias_linear
            )
            if getattr(config, "moe_shared_expert_gate", False):
                self.shared_expert_gate = nn.Linear(config.hidden_size, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [b, L, hidden] -> [b, L, hidden]."""
        flat = x.reshape(-1, x.shape[-1])
        probs, experts = route(self.router(flat), self.config)  # [n, k] each
        out = torch.zeros_like(flat)
        for index, expert in enumerate(self.experts):
            tokens, slot = torch.where(experts == index)
            if tokens.numel():
                out.index_add_(0, tokens, expert(flat[tokens], scale=probs[tokens, slot]))
        out = out.view_as(x)
        if self.shared_expert is not None:
            shared = self.shared_expert(x)
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(x)) * shared
            out = out + shared
        return out


class DecoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, config: MegatronDLMConfig, index: int):
        super().__init__()
        self.input_layernorm = make_norm(config, config.hidden_size)
        self.self_attn = Attention(config, index)
        self.post_attention_layernorm = make_norm(config, config.hidden_size)
        if config.is_moe_layer(index):
            self.mlp = MoE(config)
        else:
            self.mlp = MLP(config, config.intermediate_size, config.add_bias_linear)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x, angles, bias, cached: CachedPass | None = None):
        x = x + self.dropout(self.self_attn(self.input_layernorm(x), angles, bias, cached))
        return x + self.dropout(self.mlp(self.post_attention_layernorm(x)))


class MegatronDLMPreTrainedModel(PreTrainedModel):
    config_class = MegatronDLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


class MegatronDLMModel(MegatronDLMPreTrainedModel):
    """The transformer without the output layer: final-norm hidden states [b, L, hidden]."""

    def __init__(self, config: MegatronDLMConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = None
        self.rotary = None
        if config.position_embedding_type == "learned_absolute":
            self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        elif config.position_embedding_type == "rope":
            self.rotary = RotaryEmbedding(config)
        self.dropout = nn.Dropout(config.hidden_dropout)
        layers = range(config.num_hidden_layers)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in layers)
        self.norm = make_norm(config, config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        kv_cache: CachedPass | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        """Hidden states for ``input_ids`` [b, L] (or ``inputs_embeds`` [b, L, hidden]).

        Args:
            attention_mask: [b, L], 1 (or True) for tokens, 0 for padding (either side).
            position_ids: [b, L]; default: counted from each row's first valid token.
            kv_cache: the sampler's cached pass: the inputs are the query columns,
                ``attention_mask`` [b, K] covers the key columns, ``position_ids`` is required.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if kv_cache is not None and (position_ids is None or attention_mask is None):
            raise ValueError("a cached pass needs position_ids and attention_mask")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, length = x.shape[:2]
        if position_ids is None:
            if attention_mask is not None:
                position_ids = positions_from_mask(attention_mask)
            else:
                position_ids = torch.arange(length, device=x.device).expand(b, -1)
        if self.embed_positions is not None:
            x = x + self.embed_positions(position_ids)
        x = self.dropout(x)
        angles = self.rotary(position_ids) if self.rotary is not None else None
        if kv_cache is not None:
            bias = cached_attention_bias(
                attention_mask, kv_cache.start, length, self.config.is_causal, x.dtype
            )
        else:
            bias = attention_bias(attention_mask, self.config.is_causal, length, x.dtype, x.device)
        hidden_states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, angles, bias, kv_cache)
            if output_hidden_states:
                hidden_states.append(x)
        x = self.norm(x)
        if return_dict is False:
            return (x, tuple(hidden_states)) if output_hidden_states else (x,)
        return BaseModelOutput(
            last_hidden_state=x, hidden_states=tuple(hidden_states) if hidden_states else None
        )


class _LanguageModel(MegatronDLMPreTrainedModel):
    """Shared by both heads: the transformer, the output layer, and sampling."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MegatronDLMConfig):
        super().__init__(config)
        self.model = MegatronDLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @classmethod
    def can_generate(cls) -> bool:
        """Yes (our own ``generate``): makes transformers load generation_config.json."""
        return True

    def _logits_and_loss(self, shift: bool, labels, **inputs):
        """(loss or None, logits [b, L, vocab], hidden states); ``shift`` for next-token CE."""
        out = self.model(**inputs)
        logits = self.lm_head(out.last_hidden_state)
        loss = None
        if labels is not None:
            scores, targets = (logits[:, :-1], labels[:, 1:]) if shift else (logits, labels)
            loss = F.cross_entropy(
                scores.reshape(-1, scores.shape[-1]).float(),
                targets.reshape(-1).to(scores.device),
                ignore_index=-100,
            )
        return loss, logits, out.hidden_states

    # Sampling ------------------------------------------------------------------------------

    def _logits_fn(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The sampler's ``logits_fn``: float32 logits [b, L, V] on the model's device."""
        device = self.lm_head.weight.device
        with torch.no_grad():
            out = self(input_ids=tokens.to(device), attention_mask=valid.to(device))
        return out.logits.float()

    def init_cache(self, batch_size: int, length: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` rows of ``length`` columns."""
        return KVCache(batch_size, length)

    @torch.no_grad()
    def logits_with_cache(
        self,
        cache: KVCache,
        rows: torch.Tensor,
        tokens: torch.Tensor,
        valid: torch.Tensor,
        start: int,
        *,
        store: bool,
        logits_columns: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Logits [n, hi - lo, V] (float32) of query columns ``start .. start + Q - 1``.

        ``tokens`` [n, Q] are those columns of cache ``rows`` [n]; ``valid`` [n, K] marks the
        key columns (False = padding). Keys and values of the query columns come from this pass
        (and are written to the cache with ``store``), all others from the cache.
        ``logits_columns`` (lo, hi): only these columns' logits (default: all query columns).
        """
        device = self.lm_head.weight.device
        tokens, valid, rows = tokens.to(device), valid.to(device), rows.to(device)
        queries = tokens.shape[1]
        lo, hi = logits_columns or (start, start + queries)
        positions = positions_from_mask(valid)[:, start : start + queries]
        cached = CachedPass(cache, rows, start, valid.shape[1], store)
        out = self.model(
            input_ids=tokens, attention_mask=valid, position_ids=positions, kv_cache=cached
        )
        return self.lm_head(out.last_hidden_state[:, lo - start : hi - start]).float()

    def sampler_logits(self) -> _SamplerLogits:
        """This model as the sampler's logits function (with the KV cache methods)."""
        return _SamplerLogits(self)

    def sampling_options(
        self, generation_config: GenerationConfig | None = None, **kwargs
    ) -> SamplingConfig:
        """Sampler options: ``generation_config`` (default: the folder's
        generation_config.json), then ``kwargs``.

        Keys are :class:`SamplingConfig` fields (``gen_length``, ``steps``, ``block_length``,
        ``remasking``, ``threshold``, ``temperature``, ``top_k``, ``top_p``, ``cfg_scale``,
        ``seed``, ``cache`` none/prefix/dual, ...). Hugging Face names work too:
        ``max_new_tokens`` is ``gen_length``, and ``do_sample=False`` means greedy
        (temperature 0) unless a temperature is passed here.
        """
        config = generation_config or self.generation_config
        fields = set(SamplingConfig.__dataclass_fields__)
        aliases = {"max_new_tokens": "gen_length"}
        unknown = set(kwargs) - fields - set(aliases) - {"do_sample"}
        if unknown:
            raise TypeError(f"unknown generation options: {', '.join(sorted(unknown))}")
        values = {}
        for source in (config.to_dict() if config is not None else {}, kwargs):
            for key, value in source.items():
                key = aliases.get(key, key)
                if key in fields and value is not None:
                    values[key] = value
        do_sample = kwargs.get("do_sample", getattr(config, "do_sample", None))
        if do_sample is False and "temperature" not in kwargs:
            values["temperature"] = 0.0
        elif do_sample and not values.get("temperature"):
            values["temperature"] = 1.0
        return SamplingConfig(**values)

    def _sample(self, prompts, options: SamplingConfig) -> GenerationOutput:
        config = self.config
        if not config.is_causal and config.mask_token_id is None:
            raise ValueError("config.mask_token_id is not set: diffusion sampling needs it")
        return sampler_generate(
            self.sampler_logits(),
            prompts,
            bidirectional=not config.is_causal,
            mask_id=config.mask_token_id,
            pad_id=config.pad_token_id,
            eos_id=config.eos_token_id,
            options=options,
            vocab_size=config.vocab_size,
            max_length=config.max_position_embeddings,
            device=self.lm_head.weight.device,
        )

    @torch.no_grad()
    def generate_sequences(
        self, prompts: list[list[int]], generation_config: GenerationConfig | None = None, **kwargs
    ) -> GenerationOutput:
        """Generate after each prompt (token ids, any lengths) with Megatron-DLM's sampler.

        Returns the generated tokens per prompt (prompt excluded), with the forward passes and
        steps each took. Options: see :meth:`sampling_options`.
        """
        was_training = self.training
        self.eval()
        try:
            return self._sample(prompts, self.sampling_options(generation_config, **kwargs))
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """Hugging Face-style generation: ``input_ids`` [b, P] -> [b, P + gen_length].

        The prompt of each row is its tokens where ``attention_mask`` is 1 (pad on the left, as
        for any decoder). Generated tokens follow the last column; sequences that end early are
        filled with ``pad_token_id``. Options: see :meth:`sampling_options`.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool().cpu()
        prompts = [row[mask].tolist() for row, mask in zip(input_ids.cpu(), keep)]
        result = self.generate_sequences(prompts, generation_config, **kwargs)
        width = max(len(s) for s in result.sequences)
        new = torch.full((len(prompts), width), self.config.pad_token_id, dtype=input_ids.dtype)
        for row, sequence in enumerate(result.sequences):
            new[row, : len(sequence)] = torch.tensor(sequence, dtype=input_ids.dtype)
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)


class _SamplerLogits:
    """A model as the sampler's logits function with a KV cache (``CachingLogitsFn``)."""

    def __init__(self, model: _LanguageModel):
        self.model = model

    def __call__(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.model._logits_fn(tokens, valid)

    def init_cache(self, batch_size: int, length: int) -> KVCache:
        return self.model.init_cache(batch_size, length)

    def logits_with_cache(self, cache, rows, tokens, valid, start, *, store, logits_columns=None):
        return self.model.logits_with_cache(
            cache, rows, tokens, valid, start, store=store, logits_columns=logits_columns
        )


class MegatronDLMForMaskedLM(_LanguageModel):
    """A masked diffusion LM: bidirectional attention, logits for every position (no shift).

    ``generate()`` decodes by iterative denoising (Megatron-DLM's sampler).
    """

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        """Logits [b, L, vocab]; with ``labels`` [b, L] (-100 = ignored) the mean CE as loss."""
        loss, logits, hidden = self._logits_and_loss(
            False,
            labels,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        if return_dict is False:
            return tuple(v for v in (loss, logits, hidden) if v is not None)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=hidden)

    @torch.no_grad()
    def diffusion_generate(
        self,
        inputs: torch.Tensor,
        generation_config: GenerationConfig | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        steps: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        alg: str = "origin",
        alg_temp: float | None = None,
        output_history: bool = False,
        return_dict_in_generate: bool = False,
        **kwargs,
    ) -> DiffusionGenerateOutput | torch.Tensor:
        """Dream's ``diffusion_generate``, run by the same sampler as :meth:`generate`.

        ``inputs`` [b, P] (left-padded, with ``attention_mask``) -> [b, P + max_new_tokens]:
        Dream's semantics by default: the whole generation is one block denoised in ``steps``
        steps, the output has its full length (no stop or cut at the end-of-sequence token).
        ``alg`` maps to our remasking (:data:`DREAM_ALGORITHMS`); ``alg_temp`` (sampling the
        positions to commit) is not supported. Other :meth:`sampling_options` keys
        (``block_length``, ``threshold``, ``cfg_scale``, ``seed``, ``stop_at_eos``, ...) pass
        through. With ``return_dict_in_generate`` the result has ``sequences`` and, with
        ``output_history``, ``history`` (the sequences after each step).
        """
        if alg not in DREAM_ALGORITHMS:
            raise ValueError(f"alg must be one of {', '.join(DREAM_ALGORITHMS)}, got {alg!r}")
        if alg_temp:
            raise ValueError(
                "alg_temp > 0 (sampling which positions to commit) is not supported: "
                "Megatron-DLM's sampler commits the most confident positions (alg_temp=0)"
            )
        if max_new_tokens is None and max_length is not None:
            max_new_tokens = max_length - inputs.shape[1]
        if max_new_tokens is None:
            max_new_tokens = self.sampling_options(generation_config).gen_length
        options = dict(
            max_new_tokens=max_new_tokens,
            block_length=max_new_tokens,
            remasking=DREAM_ALGORITHMS[alg],
            stop_at_eos=False,
            truncate_after_eos=False,
        )
        given = dict(steps=steps, temperature=temperature, top_p=top_p, top_k=top_k)
        options.update({k: v for k, v in given.items() if v is not None}, **kwargs)
        history = [] if output_history and return_dict_in_generate else None
        if history is not None:
            resolved = self.sampling_options(generation_config, **options)
            if resolved.threshold is not None or resolved.stop_at_eos:
                raise ValueError("output_history needs a fixed number of steps per sequence: "
                                 "no threshold, stop_at_eos=False")  # fmt: skip
            if resolved.cache != "none":
                raise ValueError("output_history records uncached passes: use cache='none'")
            self._logits_fn = self._recording_logits_fn(history, len(inputs))
        try:
            sequences = self.generate(inputs, attention_mask, generation_config, **options)
        finally:
            self.__dict__.pop("_logits_fn", None)
        if not return_dict_in_generate:
            return sequences
        if history is not None:
            states = [*history[1:], sequences[:, -max_new_tokens:].cpu()]
            generated = [torch.cat([inputs, s.to(inputs)[:, -max_new_tokens:]], 1) for s in states]
            history = tuple(generated)
        return DiffusionGenerateOutput(sequences=sequences, history=history)

    def _recording_logits_fn(self, history: list[torch.Tensor], batch: int):
        """The sampler's logits function, recording the tokens it is given (the state before
        each step; the first ``batch`` rows: classifier-free guidance adds unconditional
        ones)."""
        logits_fn = type(self)._logits_fn.__get__(self)

        def record(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
            history.append(tokens[:batch].clone())
            return logits_fn(tokens, valid)

        return record


class MegatronDLMForCausalLM(_LanguageModel):
    """The matched autoregressive baseline: causal attention, next-token prediction.

    ``generate()`` samples left to right with Megatron-DLM's AR sampler (``cache="prefix"``:
    the exact KV cache).
    """

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutput | tuple:
        """Logits [b, L, vocab]; with ``labels`` [b, L] the shifted next-token CE as loss."""
        loss, logits, hidden = self._logits_and_loss(
            True,
            labels,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        if return_dict is False:
            return tuple(v for v in (loss, logits, hidden) if v is not None)
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=hidden)


__all__ = [
    "DiffusionGenerateOutput",
    "KVCache",
    "MegatronDLMForCausalLM",
    "MegatronDLMForMaskedLM",
    "MegatronDLMModel",
    "MegatronDLMPreTrainedModel",
]
