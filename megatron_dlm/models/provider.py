"""Model provider: megatron-core GPTModel chunks for this rank's place in the layout."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_dlm.config import DLMConfig
from megatron_dlm.models.specs import decoder_block_spec
from megatron_dlm.models.vocab import Vocab

logger = logging.getLogger(__name__)


def _uses_gloo() -> bool:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_backend() == "gloo"
    return not torch.cuda.is_available()


def transformer_config(cfg: DLMConfig) -> TransformerConfig:
    """Translate our config sections into megatron-core's TransformerConfig."""
    model, parallel, precision = cfg.model, cfg.parallel, cfg.precision
    use_te = model.transformer_impl == "transformer_engine"
    kwargs = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        kv_channels=model.kv_channels,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        normalization=model.normalization,
        layernorm_epsilon=model.norm_epsilon,
        add_bias_linear=not model.disable_bias_linear,
        add_qkv_bias=model.add_qkv_bias,
        gated_linear_unit=model.swiglu,
        activation_func=F.silu if model.swiglu else F.gelu,
        qk_layernorm=model.qk_layernorm,
        init_method_std=model.init_method_std,
        use_cpu_initialization=model.use_cpu_initialization,
        params_dtype=precision.params_dtype,
        pipeline_dtype=precision.params_dtype,
        bf16=precision.bf16,
        fp16=precision.fp16,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.num_virtual_stages_per_pipeline_rank,
        context_parallel_size=parallel.context_parallel_size,
        expert_model_parallel_size=parallel.expert_model_parallel_size,
        expert_tensor_parallel_size=parallel.expert_tensor_parallel_size,
        sequence_parallel=parallel.sequence_parallel,
        # Megatron's per-token loss: loss_func returns (sum, num_tokens) and gradients are
        # divided by the global token count, so the loss does not depend on the layout.
        calculate_per_token_loss=True,
        deallocate_pipeline_outputs=True,
        # gloo has no grouped p2p: batched isend/irecv between the two ranks of a PP=2 pipeline
        # match forward activations with backward gradients (same peer, same tag). The
        # unbatched path sends the two directions over different communicators.
        batch_p2p_comm=not _uses_gloo(),
        # Fused kernels come from Transformer Engine / apex; the local path uses plain PyTorch.
        bias_activation_fusion=use_te and model.swiglu,
        masked_softmax_fusion=use_te,
        bias_dropout_fusion=use_te,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=use_te,
        recompute_granularity=model.recompute_granularity,
        recompute_method=model.recompute_method,
        recompute_num_layers=model.recompute_num_layers,
    )
    if model.is_moe:
        kwargs.update(
            num_moe_experts=model.num_experts,
            moe_router_topk=model.moe_router_topk,
            moe_ffn_hidden_size=model.moe_ffn_hidden_size,
            moe_shared_expert_intermediate_size=model.moe_shared_expert_intermediate_size,
            moe_shared_expert_gate=model.moe_shared_expert_gate,
            moe_layer_freq=model.moe_layer_freq,
            moe_router_load_balancing_type=model.moe_router_load_balancing_type,
            moe_router_score_function=model.moe_router_score_function,
            moe_router_pre_softmax=model.moe_router_pre_softmax,
            moe_aux_loss_coeff=model.moe_aux_loss_coeff,
            moe_z_loss_coeff=model.moe_z_loss_coeff,
            moe_token_dispatcher_type=model.moe_token_dispatcher_type,
            moe_grouped_gemm=model.moe_grouped_gemm,
        )
    if precision.fp8_format is not None:
        kwargs.update(
            fp8=precision.fp8_format,
            fp8_recipe=precision.fp8_recipe,
            fp8_amax_history_len=precision.fp8_amax_history_len,
            fp8_amax_compute_algo=precision.fp8_amax_compute_algo,
        )
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
