"""Model provider: megatron-core GPTModel chunks for this rank's place in the layout."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_dlm.config import DLMConfig
from megatron_dlm.config.translate import matching_fields
from megatron_dlm.models.specs import decoder_block_spec
from megatron_dlm.models.vocab import Vocab

logger = logging.getLogger(__name__)


def _uses_gloo() -> bool:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_backend() == "gloo"
    return not torch.cuda.is_available()


TRANSFORMER_CONFIG_RENAMES = {
    "norm_epsilon": "layernorm_epsilon",
    "swiglu": "gated_linear_unit",
    "apply_layernorm_1p": "layernorm_zero_centered_gamma",
    "num_experts": "num_moe_experts",
    "num_virtual_stages_per_pipeline_rank": "virtual_pipeline_model_parallel_size",
    "fp8_format": "fp8",
    "fp8_param_gather": "fp8_param",
}
"""Our field (Megatron-LM's flag) -> TransformerConfig's, where the names differ. Every other
field of the model, parallel and precision sections that TransformerConfig has passes through
by name (:func:`megatron_dlm.config.translate.matching_fields`)."""

_FUSIONS = (
    "masked_softmax_fusion",
    "bias_dropout_fusion",
    "apply_rope_fusion",
    "persist_layer_norm",
    "gradient_accumulation_fusion",
)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def transformer_config(cfg: DLMConfig) -> TransformerConfig:
    """megatron-core's TransformerConfig of our config: the fields with the same names pass
    through, :data:`TRANSFORMER_CONFIG_RENAMES` the others; the rest is derived here."""
    from megatron.core.transformer.enums import AttnBackend

    model, parallel, precision = cfg.model, cfg.parallel, cfg.precision
    # Without Transformer Engine installed the spec says what to install (models/specs.py);
    # megatron-core's own checks of the fused kernels would fail first with less to go on.
    use_te = model.transformer_impl == "transformer_engine" and _has_module("transformer_engine")
    kwargs = matching_fields(
        TransformerConfig,
        (model, parallel, precision),
        renames=TRANSFORMER_CONFIG_RENAMES,
        exclude=("bias_gelu_fusion", "bias_swiglu_fusion", "disable_bias_linear"),
    )
    # The fusions are Megatron-LM's flags (on unless --no-...), used where the layers have the
    # kernels: Transformer Engine's (the local layers are plain PyTorch).
    for name in _FUSIONS:
        kwargs[name] = getattr(model, name) and use_te
    # Megatron-LM disables the weight-gradient fusion without its CUDA extension.
    kwargs["gradient_accumulation_fusion"] &= _has_module("fused_weight_gradient_mlp_cuda")
    activation_fusion = model.bias_swiglu_fusion if model.swiglu else model.bias_gelu_fusion
    kwargs.update(
        add_bias_linear=not model.disable_bias_linear,
        activation_func=F.silu if model.swiglu else F.gelu,
        # megatron-core's fused bias-GELU needs the bias (Megatron-LM turns it off without).
        bias_activation_fusion=use_te
        and activation_fusion
        and (model.swiglu or not model.disable_bias_linear),
        attention_backend=AttnBackend[model.attention_backend],
        params_dtype=precision.params_dtype,
        pipeline_dtype=precision.params_dtype,
        # Megatron's per-token loss: loss_func returns (sum, num_tokens) and gradients are
        # divided by the global token count, so the loss does not depend on the layout.
        calculate_per_token_loss=True,
        deallocate_pipeline_outputs=True,
        # gloo has no grouped p2p: batched isend/irecv between the two ranks of a PP=2 pipeline
        # match forward activations with backward gradients (same peer, same tag). The
        # unbatched path sends the two directions over different communicators.
        batch_p2p_comm=not _uses_gloo(),
    )
    if precision.fp8_format is None:
        for name in ("fp8_recipe", "fp8_amax_history_len", "fp8_amax_compute_algo", "fp8_param"):
            kwargs.pop(name, None)
    return TransformerConfig(**kwargs)


def build_model_chunk(
    cfg: DLMConfig,
    vocab: Vocab,
    config: TransformerConfig | None = None,
    vp_stage: int | None = None,
) -> GPTModel:
    """One GPTModel holding this pipeline stage's (virtual stage's) layers."""
    config = config or transformer_config(cfg)
    virtual = cfg.parallel.num_virtual_stages_per_pipeline_rank is not None
    pre_process = parallel_state.is_pipeline_first_stage(
        ignore_virtual=not virtual, vp_stage=vp_stage
    )
    post_process = parallel_state.is_pipeline_last_stage(
        ignore_virtual=not virtual, vp_stage=vp_stage
    )
    spec = decoder_block_spec(
        config,
        bidirectional=cfg.objective.bidirectional,
        transformer_impl=cfg.model.transformer_impl,
        vp_stage=vp_stage,
    )
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=vocab.padded_size(
            cfg.model.make_vocab_size_divisible_by, cfg.parallel.tensor_model_parallel_size
        ),
        max_sequence_length=cfg.model.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=not cfg.model.untie_embeddings_and_output_weights,
        position_embedding_type=cfg.model.position_embedding_type,
        rotary_percent=cfg.model.rotary_percent,
        rotary_base=cfg.model.rotary_base,
        parallel_output=True,
        vp_stage=vp_stage,
    )
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    return model


def build_model(cfg: DLMConfig, vocab: Vocab) -> list[GPTModel]:
    """This rank's model chunks: one per virtual pipeline stage (one without interleaving).

    Megatron-LM's convention: training code always handles a list of chunks.
    """
    config = transformer_config(cfg)
    if cfg.model.is_moe:
        # megatron-core's MoE metrics tracker is process-global and sized by the first model's
        # layer count: a second, deeper model in the same process would index past its end.
        from megatron.core.transformer.moe.moe_utils import get_moe_layer_wise_logging_tracker

        get_moe_layer_wise_logging_tracker().clear()
    vpp = cfg.parallel.num_virtual_stages_per_pipeline_rank
    stages = range(vpp) if vpp else [None]
    chunks = [build_model_chunk(cfg, vocab, config, vp_stage=stage) for stage in stages]
    logger.info(
        "built %d model chunk(s) on rank %d: %s parameters on this rank",
        len(chunks),
        torch.distributed.get_rank() if torch.distributed.is_initialized() else 0,
        f"{sum(p.numel() for c in chunks for p in c.parameters()):,}",
    )
    return chunks
