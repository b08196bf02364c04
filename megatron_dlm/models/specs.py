"""Layer specs: megatron-core's GPT specs with the attention mask chosen by the objective.

A diffusion LM is a GPTModel whose self-attention spec says ``attn_mask_type=no_mask``
(bidirectional); the AR baseline keeps ``causal``. Nothing else about the model changes, so no
fork of GPTModel is needed.
"""

from __future__ import annotations

import copy
import importlib

import torch
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.transformer_layer import TransformerLayerSubmodules


class MissingDependencyError(ImportError):
    """An optional dependency needed by the chosen options is not installed."""


def require_transformer_engine() -> None:
    """Raise :class:`MissingDependencyError` unless Transformer Engine imports."""
    try:
        importlib.import_module("transformer_engine.pytorch")
    except (ImportError, RuntimeError) as exc:
        # PyPI's bare `transformer-engine` installs a meta package whose import raises
        # RuntimeError; the real one needs CUDA.
        raise MissingDependencyError(
            "--transformer-impl transformer_engine needs NVIDIA Transformer Engine with CUDA: "
            "use the NGC PyTorch container, or `pip install 'megatron-dlm[gpu]'` "
            "(transformer-engine[pytorch]) on a CUDA machine. Without a GPU use "
            f"--transformer-impl local. ({type(exc).__name__}: {exc})"
        ) from exc


class TorchNorm:
    """torch LayerNorm/RMSNorm for the local spec that also works with sequence parallelism.

    megatron-core's WrappedTorchNorm refuses sequence parallelism, although a norm applied to a
    sequence shard is correct as long as its gradients are summed over the TP group. That is
    what the ``sequence_parallel`` attribute on the parameters asks ``finalize_model_grads``
    to do.
    """

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_):
        if config.normalization == "RMSNorm":
            norm = torch.nn.RMSNorm(hidden_size, eps=eps)
        elif config.normalization == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"unsupported normalization {config.normalization!r}")
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm


def _with_local_norms(layer_spec: ModuleSpec) -> ModuleSpec:
    subs: TransformerLayerSubmodules = layer_spec.submodules
    attn_subs = subs.self_attention.submodules
    for name in ("q_layernorm", "k_layernorm"):
        current = getattr(attn_subs, name, None)
        if current is not None and getattr(current, "__name__", "") == "WrappedTorchNorm":
            setattr(attn_subs, name, TorchNorm)
    for name in ("input_layernorm", "pre_mlp_layernorm"):
        current = getattr(subs, name)
        if getattr(current, "__name__", "") == "WrappedTorchNorm":
            setattr(subs, name, TorchNorm)
    return layer_spec


def decoder_block_spec(
    config: TransformerConfig,
    *,
    bidirectional: bool,
    transformer_impl: str,
    vp_stage: int | None = None,
) -> TransformerBlockSubmodules:
    """The decoder layers this pipeline stage builds, with the objective's attention mask.

    Dense and MoE (``config.num_moe_experts``, ``moe_layer_freq``) both come from megatron-core's
    ``get_gpt_decoder_block_spec``; we only set the mask type and, for the local spec, norms
    that support sequence parallelism.
    """
    use_te = transformer_impl == "transformer_engine"
    if use_te:
        require_transformer_engine()
    block = get_gpt_decoder_block_spec(
        config, use_transformer_engine=use_te, normalization=config.normalization, vp_stage=vp_stage
    )
    mask_type = AttnMaskType.no_mask if bidirectional else AttnMaskType.causal
    layer_specs = []
    seen: dict[int, ModuleSpec] = {}
    for spec in block.layer_specs:
        # The same spec object is shared by many layers: copy each distinct one once.
        if id(spec) not in seen:
            new = copy.deepcopy(spec)
            new.submodules.self_attention.params = {
                **new.submodules.self_attention.params,
                "attn_mask_type": mask_type,
            }
            seen[id(spec)] = new if use_te else _with_local_norms(new)
        layer_specs.append(seen[id(spec)])
    layer_norm = block.layer_norm
    if not use_te and getattr(layer_norm, "__name__", "") == "WrappedTorchNorm":
        layer_norm = TorchNorm
    return TransformerBlockSubmodules(layer_specs=layer_specs, layer_norm=layer_norm)
