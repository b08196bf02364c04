"""Model chunks wrapped for training: Float16Module (bf16/fp16) and megatron-core DDP."""

from __future__ import annotations

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.transformer.module import Float16Module

from megatron_dlm.config import DLMConfig
from megatron_dlm.config.translate import matching_fields
from megatron_dlm.models.provider import build_model
from megatron_dlm.models.vocab import Vocab

DDP_CONFIG_RENAMES = {"ddp_bucket_size": "bucket_size"}
"""Our field -> DistributedDataParallelConfig's where the names differ; the others (overlap_*,
use_distributed_optimizer, num_distributed_optimizer_instances, fp8_param_gather) match."""


def setup_model(cfg: DLMConfig, vocab: Vocab) -> list[DistributedDataParallel]:
    """Build this rank's chunks, cast for mixed precision, wrap in DDP, wire the schedule hooks.

    The hooks megatron-core's forward_backward_func reads from the (shared) TransformerConfig:
    ``finalize_model_grads_func`` (DP reduction, tied-embedding and sequence-parallel norm
    reductions, per-token scaling), and with --overlap-grad-reduce ``no_sync_func``.
    """
    chunks = build_model(cfg, vocab)
    config = chunks[0].config
    if cfg.precision.bf16 or cfg.precision.fp16:
        chunks = [Float16Module(config, chunk) for chunk in chunks]
    opt = cfg.optimizer
    ddp_config = DistributedDataParallelConfig(
        **matching_fields(
            DistributedDataParallelConfig,
            (opt, cfg.parallel, cfg.precision),
            renames=DDP_CONFIG_RENAMES,
        ),
        grad_reduce_in_fp32=not opt.grad_reduce_in_bf16,
        # NaN/Inf are checked on the global grad norm (training/trainer.py): stop or skip.
        check_for_nan_in_grad=False,
    )
    model = [
        DistributedDataParallel(
            config=config,
            ddp_config=ddp_config,
            module=chunk,
            # Megatron-LM: only the first chunk buckets, so later chunks overlap their reduction.
            disable_bucketing=index > 0,
        )
        for index, chunk in enumerate(chunks)
    ]
    for chunk in model:
        chunk.broadcast_params()  # identical replicas across data-parallel ranks
    config.finalize_model_grads_func = finalize_model_grads
    if opt.overlap_grad_reduce:
        no_sync = [chunk.no_sync for chunk in model]
        config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    return model


def count_parameters(model: list[torch.nn.Module]) -> int:
    """Parameters held by this rank (shards count once, as stored)."""
    return sum(p.numel() for chunk in model for p in chunk.parameters())
