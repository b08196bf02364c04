"""Weight names and layouts between megatron-core's GPTModel and Hugging Face models.

One :class:`WeightTable` per Hugging Face architecture, read in both directions (export:
Megatron -> HF, import: HF -> Megatron), so the two can never disagree. Megatron names are the
TP=PP=EP=1 names of the local layer spec; ``{layer}``, ``{expert}`` and ``{param}`` (``weight``
or ``bias``) are placeholders:

    megatron-core (local spec)                         MEGATRON_DLM (our modeling code)
    embedding.word_embeddings.weight [V_pad, h]        model.embed_tokens.weight [V, h]
    embedding.position_embeddings.weight               model.embed_positions.weight
    L.input_layernorm.*                                model.layers.{i}.input_layernorm.*
    L.self_attention.linear_qkv.*  (fused)             ...self_attn.{q,k,v}_proj.*
    L.self_attention.{q,k}_layernorm.*                 ...self_attn.{q,k}_norm.*
    L.self_attention.linear_proj.*                     ...self_attn.o_proj.*
    L.pre_mlp_layernorm.*                              ...post_attention_layernorm.*
    L.mlp.linear_fc1.*  (fused)                        ...mlp.{gate,up}_proj.*
    L.mlp.linear_fc2.*                                 ...mlp.down_proj.*
    L.mlp.router.*                                     ...mlp.router.*
    L.mlp.experts.local_experts.{e}.linear_fc{1,2}.*   ...mlp.experts.{e}.{gate,up,down}_proj.*
    L.mlp.shared_experts.linear_fc{1,2}.*              ...mlp.shared_expert.{gate,up,down}_proj.*
    L.mlp.shared_experts.gate_weight                   ...mlp.shared_expert_gate.weight
    decoder.final_layernorm.*                          model.norm.*
    output_layer.weight [V_pad, h] (untied only)       lm_head.weight [V, h]

(``L`` = ``decoder.layers.{i}``.) ``LLAMA`` (Llama, Qwen2, Qwen3: the same names; QKV biases
and QK-norm are present or not) is the dense part of it; ``QWEN2_MOE`` names the router
``mlp.gate``; ``MIXTRAL`` has ``block_sparse_moe.gate`` and experts ``w1`` (gate), ``w3``
(up), ``w2`` (down).

Layouts: the fused QKV holds, per key/value group g, that group's query heads, then its key
head, then its value head: rows [g, (heads per group + 2) x head_dim]. The SwiGLU fc1 holds the
gate (SiLU) half first, then the up half. Vocabulary rows past the tokenizer's size (Megatron's
padding for tensor parallelism) are dropped; the reverse mapping pads them back with zeros.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch

from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig


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


Kind = Literal["copy", "qkv", "fc1", "vocab"]


@dataclass(frozen=True)
class Rule:
    """One Megatron tensor and the Hugging Face tensor(s) it is made of.

    Kinds: ``copy`` (same tensor), ``qkv`` (fused <-> q, k, v), ``fc1`` (fused <-> gate, up
    for SwiGLU; the up projection alone otherwise), ``vocab`` (rows past the vocabulary are
    Megatron's padding).
    """

    megatron: str
    hf: tuple[str, ...]
    kind: Kind = "copy"
    _patterns: tuple[re.Pattern, re.Pattern] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_patterns", (_compile(self.megatron), _compile(self.hf[-1])))

    def match_megatron(self, name: str) -> dict[str, str] | None:
        match = self._patterns[0].fullmatch(name)
        return match.groupdict() if match else None

    def match_hf(self, name: str) -> dict[str, str] | None:
        """Matches the rule's last HF name (present for every kind: v, up, or the tensor)."""
        match = self._patterns[1].fullmatch(name)
        return match.groupdict() if match else None


_PLACEHOLDERS = {"{layer}": r"(?P<layer>\d+)", "{expert}": r"(?P<expert>\d+)",
                 "{param}": r"(?P<param>weight|bias)"}  # fmt: skip


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for placeholder, group in _PLACEHOLDERS.items():
        pattern = pattern.replace(re.escape(placeholder), group)
    return re.compile(pattern)


@dataclass(frozen=True)
class WeightTable:
    """The weight names of one Hugging Face architecture (see the module docstring)."""

    name: str
    rules: tuple[Rule, ...]

    def megatron_to_hf(
        self, state: dict[str, torch.Tensor], config: MegatronDLMConfig
    ) -> dict[str, torch.Tensor]:
        """HF tensors from a TP=PP=EP=1 megatron-core state dict (``_extra_state`` ignored).

        Raises:
            WeightMappingError: a tensor is left unmapped, or an expected one is missing.
        """
        state = {k: v for k, v in state.items() if not k.endswith("_extra_state")}
        if config.tie_word_embeddings:
            state.pop("output_layer.weight", None)  # the embedding itself
        for name in _required_megatron(config):
            if name not in state:
                raise WeightMappingError(f"the checkpoint has no {name}")
        out: dict[str, torch.Tensor] = {}
        unmapped = []
        for name in sorted(state):
            rule, groups = self._rule_for_megatron(name)
            if rule is None:
                if name.startswith("decoder.layers."):
                    raise WeightMappingError(f"no Hugging Face name for {name}")
                unmapped.append(name)
                continue
            names = [template.format(**groups) for template in rule.hf]
            out.update(zip(_hf_names(rule, names, config), _split(rule, state[name], config)))
        if unmapped:
            raise WeightMappingError(f"unmapped checkpoint tensors: {', '.join(unmapped)}")
        return out

    def hf_to_megatron(
        self, state: dict[str, torch.Tensor], config: MegatronDLMConfig, padded_vocab_size: int
    ) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`megatron_to_hf`: megatron-core TP=PP=EP=1 names, vocabulary padded
        with zero rows to ``padded_vocab_size``. A tied model's ``lm_head.weight`` (the
        embedding itself) is dropped."""
        state = dict(state)
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        out: dict[str, torch.Tensor] = {}
        for rule in self.rules:
            for name in sorted(k for k in state if rule.match_hf(k) is not None):
                groups = rule.match_hf(name)
                names = _hf_names(rule, [t.format(**groups) for t in rule.hf], config)
                missing = [n for n in names if n not in state]
                if missing:
                    raise WeightMappingError(
                        f"the Hugging Face weights have {name} but not {', '.join(missing)}"
                    )
                parts = [state.pop(n) for n in names]
                out[rule.megatron.format(**groups)] = _fuse(rule, parts, config, padded_vocab_size)
        if state:
            raise WeightMappingError(f"unmapped Hugging Face tensors: {', '.join(sorted(state))}")
        for name in _required_megatron(config):
            if name not in out:
                hf = next(r.hf[0] for r in self.rules if r.megatron == name)
                raise WeightMappingError(f"the Hugging Face weights have no {hf}")
        return out

    def _rule_for_megatron(self, name: str) -> tuple[Rule | None, dict[str, str]]:
        for rule in self.rules:
            groups = rule.match_megatron(name)
            if groups is not None:
                return rule, groups
        return None, {}


def _required_megatron(config: MegatronDLMConfig) -> list[str]:
    names = ["embedding.word_embeddings.weight"]
    if not config.tie_word_embeddings:
        names.append("output_layer.weight")
    if config.position_embedding_type == "learned_absolute":
        names.append("embedding.position_embeddings.weight")
    return names


def _hf_names(rule: Rule, names: list[str], config: MegatronDLMConfig) -> list[str]:
    """The HF names a rule has for this config: a GELU fc1 is the up projection alone."""
    if rule.kind == "fc1" and not config.swiglu:
        return names[-1:]
    return names


def _split(rule: Rule, tensor: torch.Tensor, config: MegatronDLMConfig) -> list[torch.Tensor]:
    if rule.kind == "qkv":
        return list(split_qkv(tensor, config))
    if rule.kind == "fc1" and config.swiglu:
        return list(tensor.chunk(2, dim=0))
    if rule.kind == "vocab":
        return [tensor[: config.vocab_size]]
    return [tensor]


def _fuse(rule: Rule, parts: list[torch.Tensor], config: MegatronDLMConfig, padded: int):
    if rule.kind == "qkv":
        return fuse_qkv(*parts, config)
    if rule.kind == "fc1":
        return torch.cat(parts) if len(parts) > 1 else parts[0]
    if rule.kind == "vocab":
        (tensor,) = parts
        extra = padded - tensor.shape[0]
        if extra < 0:
            raise WeightMappingError(
                f"{rule.hf[0]} has {tensor.shape[0]} rows, more than the {padded} the Megatron "
                "model holds"
            )
        return torch.cat([tensor, tensor.new_zeros(extra, *tensor.shape[1:])]) if extra else tensor
    return parts[0]


# The tables ---------------------------------------------------------------------------------

_L, _H = "decoder.layers.{layer}.", "model.layers.{layer}."


def _mlp(megatron: str, hf: str, gate: str = "gate_proj", up: str = "up_proj",
         down: str = "down_proj") -> tuple[Rule, ...]:  # fmt: skip
    """A (SwiGLU or GELU) MLP: Megatron's fused fc1 and fc2 under ``megatron`` and ``hf``."""
    return (
        Rule(
            f"{megatron}.linear_fc1.{{param}}",
            (f"{hf}.{gate}.{{param}}", f"{hf}.{up}.{{param}}"),
            "fc1",
        ),  # fmt: skip
        Rule(f"{megatron}.linear_fc2.{{param}}", (f"{hf}.{down}.{{param}}",)),
    )


_COMMON = (
    Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab"),
    Rule("output_layer.weight", ("lm_head.weight",), "vocab"),
    Rule("decoder.final_layernorm.{param}", ("model.norm.{param}",)),
    Rule(_L + "input_layernorm.{param}", (_H + "input_layernorm.{param}",)),
    Rule(
        _L + "self_attention.linear_qkv.{param}",
        tuple(f"{_H}self_attn.{p}_proj.{{param}}" for p in "qkv"),
        "qkv",
    ),
    Rule(_L + "self_attention.q_layernorm.{param}", (_H + "self_attn.q_norm.{param}",)),
    Rule(_L + "self_attention.k_layernorm.{param}", (_H + "self_attn.k_norm.{param}",)),
    Rule(_L + "self_attention.linear_proj.{param}", (_H + "self_attn.o_proj.{param}",)),
    Rule(_L + "pre_mlp_layernorm.{param}", (_H + "post_attention_layernorm.{param}",)),
    *_mlp(_L + "mlp", _H + "mlp"),
)

_EXPERTS = _mlp(_L + "mlp.experts.local_experts.{expert}", _H + "mlp.experts.{expert}")
_SHARED_EXPERT = (
    *_mlp(_L + "mlp.shared_experts", _H + "mlp.shared_expert"),
    Rule(_L + "mlp.shared_experts.gate_weight", (_H + "mlp.shared_expert_gate.weight",)),
)

MEGATRON_DLM = WeightTable(
    "megatron_dlm",
    (
        *_COMMON,
        Rule("embedding.position_embeddings.weight", ("model.embed_positions.weight",)),
        Rule(_L + "mlp.router.{param}", (_H + "mlp.router.{param}",)),
        *_EXPERTS,
        *_SHARED_EXPERT,
    ),
)
"""Our own modeling code (``modeling_megatron_dlm.py``): every architecture we train."""

LLAMA = WeightTable("llama", _COMMON)
"""``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``."""

QWEN2_MOE = WeightTable(
    "qwen2_moe",
    (*_COMMON, Rule(_L + "mlp.router.weight", (_H + "mlp.gate.weight",)), *_EXPERTS,
     *_SHARED_EXPERT),
)  # fmt: skip
"""``Qwen2MoeForCausalLM`` (and Qwen3-MoE's names: no shared expert)."""

MIXTRAL = WeightTable(
    "mixtral",
    (
        *_COMMON,
        Rule(_L + "mlp.router.weight", (_H + "block_sparse_moe.gate.weight",)),
        *_mlp(_L + "mlp.experts.local_experts.{expert}", _H + "block_sparse_moe.experts.{expert}",
              gate="w1", up="w3", down="w2"),
    ),
)  # fmt: skip
"""``MixtralForCausalLM``."""


def megatron_to_hf(
    state: dict[str, torch.Tensor], config: MegatronDLMConfig, table: WeightTable = MEGATRON_DLM
) -> dict[str, torch.Tensor]:
    """:meth:`WeightTable.megatron_to_hf` of ``table`` (default: our own modeling code)."""
    return table.megatron_to_hf(state, config)


def hf_to_megatron(
    state: dict[str, torch.Tensor],
    config: MegatronDLMConfig,
    padded_vocab_size: int,
    table: WeightTable = MEGATRON_DLM,
) -> dict[str, torch.Tensor]:
    """:meth:`WeightTable.hf_to_megatron` of ``table`` (default: our own modeling code)."""
    return table.hf_to_megatron(state, config, padded_vocab_size)
