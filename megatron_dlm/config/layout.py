"""Checks that need more than one config section: does the layout divide the model?"""

from __future__ import annotations

from megatron_dlm.config.base import require
from megatron_dlm.config.model import ModelConfig
from megatron_dlm.config.objective import ObjectiveConfig
from megatron_dlm.config.parallel import ParallelConfig
from megatron_dlm.config.precision import PrecisionConfig


def check_layout(
    model: ModelConfig,
    parallel: ParallelConfig,
    precision: PrecisionConfig,
    objective: ObjectiveConfig,
) -> None:
    """Raise ConfigError (naming the flags) if the parallel layout cannot hold the model."""
    tp = parallel.tensor_model_parallel_size
    pp = parallel.pipeline_model_parallel_size
    cp = parallel.context_parallel_size
    ep = parallel.expert_model_parallel_size
    require(
        model.num_attention_heads % tp == 0,
        f"--num-attention-heads ({model.num_attention_heads}) must be divisible by "
        f"--tensor-model-parallel-size ({tp})",
    )
    require(
        model.num_query_groups % tp == 0,
        f"--num-query-groups ({model.num_query_groups}) must be divisible by "
        f"--tensor-model-parallel-size ({tp})",
    )
    require(
        model.ffn_hidden_size % tp == 0,
        f"--ffn-hidden-size ({model.ffn_hidden_size}) must be divisible by "
        f"--tensor-model-parallel-size ({tp})",
    )
    chunks = pp * (parallel.num_virtual_stages_per_pipeline_rank or 1)
    require(
        model.num_layers % chunks == 0,
        f"--num-layers ({model.num_layers}) must be divisible by --pipeline-model-parallel-size "
        f"({pp})"
        + (
            f" x --num-virtual-stages-per-pipeline-rank "
            f"({parallel.num_virtual_stages_per_pipeline_rank})"
            if parallel.num_virtual_stages_per_pipeline_rank
            else ""
        ),
    )
    if parallel.sequence_parallel:
        require(
            model.seq_length % tp == 0,
            f"--seq-length ({model.seq_length}) must be divisible by --tensor-model-parallel-size "
            f"({tp}) with --sequence-parallel",
        )
    if cp > 1:
        require(
            model.seq_length % (2 * cp) == 0,
            f"--seq-length ({model.seq_length}) must be divisible by 2 x --context-parallel-size "
            f"({cp}) (load-balanced context parallelism)",
        )
        if parallel.sequence_parallel:  # each CP rank's half-chunks are split over TP too
            require(
                model.seq_length % (2 * cp * tp) == 0,
                f"--seq-length ({model.seq_length}) must be divisible by 2 x "
                f"--context-parallel-size ({cp}) x --tensor-model-parallel-size ({tp}) with "
                "--sequence-parallel",
            )
        require(
            model.transformer_impl == "transformer_engine",
            "--context-parallel-size > 1 needs --transformer-impl transformer_engine (the local "
            "attention has no context parallelism)",
        )
    if ep > 1 or parallel.expert_tensor_parallel_size != tp:
        require(
            model.is_moe,
            "--expert-model-parallel-size / --expert-tensor-parallel-size need --num-experts",
        )
    if model.is_moe:
        require(
            model.num_experts % ep == 0,
            f"--num-experts ({model.num_experts}) must be divisible by "
            f"--expert-model-parallel-size ({ep})",
        )
        require(
            model.moe_ffn_hidden_size % parallel.expert_tensor_parallel_size == 0,
            f"--moe-ffn-hidden-size ({model.moe_ffn_hidden_size}) must be divisible by "
            f"--expert-tensor-parallel-size ({parallel.expert_tensor_parallel_size})",
        )
        require(
            not (tp > 1 and ep > 1) or parallel.sequence_parallel,
            "MoE with --tensor-model-parallel-size > 1 and --expert-model-parallel-size > 1 "
            "needs --sequence-parallel (megatron-core requirement)",
        )
        require(
            not model.moe_grouped_gemm or model.transformer_impl == "transformer_engine",
            "--moe-grouped-gemm needs --transformer-impl transformer_engine",
        )
    require(
        not model.apply_layernorm_1p or model.transformer_impl == "transformer_engine",
        "--apply-layernorm-1p needs --transformer-impl transformer_engine (the local norms "
        "have no zero-centred weights)",
    )
    if precision.fp8_param_gather:
        require(precision.fp8_format is not None, "--fp8-param-gather needs --fp8-format")
    if precision.fp8_format is not None:
        require(
            model.transformer_impl == "transformer_engine",
            "--fp8-format needs --transformer-impl transformer_engine",
        )
