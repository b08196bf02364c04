"""Rank functions for the tensor-parallel objective tests (module level, so they pickle)."""

from __future__ import annotations

import torch

from megatron_dlm.config import ObjectiveConfig, ParallelConfig
from megatron_dlm.objectives import build_objective
from megatron_dlm.runtime.distributed import init_distributed


def score(cfg: dict, batch: dict, logits: torch.Tensor, mask_id: int, seed: int, tp: int) -> dict:
    """Prepare ``batch`` on this rank and score this rank's vocabulary shard of ``logits``.

    ``tp`` = 1 is the single-rank reference (run in-process, no parallel state).
    """
    if tp > 1:
        init_distributed(ParallelConfig(tensor_model_parallel_size=tp), seed=seed)
        rank = torch.distributed.get_rank()
    else:
        rank = 0
    objective = build_objective(ObjectiveConfig(**cfg), mask_id=mask_id, seed=seed)
    b = batch["tokens"].shape[0]
    prepared = objective.prepare(
        batch,
        training=True,
        iteration=3,
        microbatch=1,
        global_positions=torch.arange(b),
        global_batch_size=b,
    )
    logits = logits[:, : prepared.seq_length]  # random-length truncation may have cut the batch
    shard = logits.chunk(tp, dim=-1)[rank].clone().requires_grad_()
    loss_sum, num_tokens, report = objective.loss(shard, prepared)
    loss_sum.backward()
    return {
        "loss_sum": loss_sum.detach(),
        "num_tokens": num_tokens,
        "report": report,
        "grad": shard.grad,
        "inputs": prepared.inputs,
        "loss_weights": prepared.loss_weights,
        "lengths": [objective.sequence_length(64, iteration=i, microbatch=0) for i in range(50)],
    }
