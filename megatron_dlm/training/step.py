"""One global batch through megatron-core's forward_backward_func.

Megatron's contract: ``forward_step(data_iterator, model) -> (output, partial(loss_func))`` and
``loss_func(output) -> (loss_sum, num_tokens, report)``. The batch is read on tensor-parallel
rank 0 of the first and last pipeline stages and broadcast to the other TP ranks (Megatron's
batch broadcast); the objective then derives the noisy inputs and targets deterministically on
every rank from the batch alone, so no other communication is needed. With context
parallelism every CP rank reads the same samples, prepares the whole sequence and keeps its two
load-balanced chunks (objectives/context_parallel.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_dlm.objectives.context_parallel import split_for_context_parallel

INT_KEYS = ("tokens", "labels", "position_ids", "sample_id", "epoch")
FLOAT_KEYS = ("loss_mask",)


def rank_reads_data() -> bool:
    """Only TP rank 0 of the first and last pipeline stages reads from the data loader."""
    return parallel_state.get_tensor_model_parallel_rank() == 0 and (
        parallel_state.is_pipeline_first_stage(ignore_virtual=True)
        or parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    )


def stage_needs_data() -> bool:
    return parallel_state.is_pipeline_first_stage(
        ignore_virtual=True
    ) or parallel_state.is_pipeline_last_stage(ignore_virtual=True)


def broadcast_batch(batch: dict | None) -> dict:
    """Megatron's batch broadcast from TP rank 0 (shapes included) to the TP group."""
    if parallel_state.get_tensor_model_parallel_world_size() == 1:
        return batch
    ints = tensor_parallel.broadcast_data(
        list(INT_KEYS),
        None if batch is None else {k: batch[k].long() for k in INT_KEYS},
        torch.int64,
    )
    floats = tensor_parallel.broadcast_data(
        list(FLOAT_KEYS),
        None if batch is None else {k: batch[k].float() for k in FLOAT_KEYS},
        torch.float32,
    )
    return {**ints, **floats}


class MicrobatchCache:
    """One step's micro-batches, shared by all model chunks of this rank.

    With virtual pipeline stages every chunk calls ``next()`` on its own iterator; the k-th call
    of any chunk must see micro-batch k. Ranks that do not read data see broadcast batches (TP)
    or ``None`` (middle pipeline stages).
    """

    def __init__(self, source: Iterator[dict] | None, num_microbatches: int):
        self._source = source
        self._num = num_microbatches
        self._batches: list[dict | None] = []

    def _get(self, index: int) -> dict | None:
        while len(self._batches) <= index:
            if not stage_needs_data():
                self._batches.append(None)
                continue
            batch = next(self._source) if self._source is not None else None
            self._batches.append(broadcast_batch(batch))
        return self._batches[index]

    def iterator(self) -> Iterator[tuple[int, dict | None]]:
        for index in range(self._num):
            yield index, self._get(index)


@dataclass
class StepContext:
    """What the forward step needs beyond the batch (fixed for one global batch)."""

    objective: object
    iteration: int
    training: bool
    micro_batch_size: int
    data_parallel_rank: int
    data_parallel_size: int
    global_batch_size: int
    device: torch.device
    context_parallel_size: int = 1
    """CP > 1: the model sees this CP rank's two chunks of each sequence."""


def _global_positions(ctx: StepContext, micro_index: int, batch_size: int) -> torch.Tensor:
    """Each sample's position in the global batch (for stratified t)."""
    per_micro = ctx.micro_batch_size * ctx.data_parallel_size
    start = micro_index * per_micro + ctx.data_parallel_rank * ctx.micro_batch_size
    return torch.arange(start, start + batch_size)


def forward_step(ctx: StepContext, data_iterator, model):
    """Megatron forward step: noised inputs through the model, loss closure for the last stage."""
    micro_index, batch = next(data_iterator)
    if batch is None:  # a middle pipeline stage: its input arrives from the previous stage
        output = model(None, None, attention_mask=None)
        return output, partial(_no_loss)
    prepared = ctx.objective.prepare(
        batch,
        training=ctx.training,
        iteration=ctx.iteration,
        # One truncation length per step, not per micro-batch: the same for every layout, and
        # pipeline stages exchange activations of one shape (run_global_batch's seq_length).
        microbatch=0,
        global_positions=_global_positions(ctx, micro_index, batch["tokens"].shape[0]),
        global_batch_size=ctx.global_batch_size,
    ).to(ctx.device, non_blocking=True)
    if ctx.context_parallel_size > 1:
        # The noise above was drawn on the whole sequence; this rank scores its chunks.
        prepared = split_for_context_parallel(prepared)
    output = model(prepared.inputs, prepared.position_ids, attention_mask=None)
    return output, partial(ctx.objective.loss, prepared=prepared)


def _no_loss(output):  # pragma: no cover - only the last stage calls loss functions
    raise RuntimeError("loss requested on a pipeline stage without the loss")


def run_global_batch(
    model: list[torch.nn.Module],
    ctx: StepContext,
    source: Iterator[dict] | None,
    num_microbatches: int,
    seq_length: int,
    forward_only: bool,
) -> list[dict]:
    """Forward (and backward) over one global batch; returns the last stage's reports."""
    cache = MicrobatchCache(source, num_microbatches)
    iterators = [cache.iterator() for _ in model]
    if ctx.training:
        seq_length = ctx.objective.sequence_length(
            seq_length, iteration=ctx.iteration, microbatch=0
        )
    return get_forward_backward_func()(
        forward_step_func=partial(forward_step, ctx),
        data_iterator=iterators if len(model) > 1 else iterators[0],
        model=model,
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=ctx.micro_batch_size,
        forward_only=forward_only,
    )


def reduce_reports(reports: list[dict]) -> dict[str, float]:
    """Sum each ``[sum, count]`` metric over micro-batches and data-parallel ranks, then divide.

    Names lose their spaces (``masked ce`` -> ``masked_ce``); the objective (``lm loss``) is
    ``loss``.

    Runs on the last pipeline stage (where reports exist); collective over its DP (+CP) group.
    """
    if not reports:
        return {}
    keys = sorted(reports[0])
    stacked = torch.stack(
        [torch.stack([r[k].detach().float().reshape(2) for k in keys]) for r in reports]
    ).sum(0)
    if torch.distributed.get_backend() == "nccl":
        stacked = stacked.cuda()
    torch.distributed.all_reduce(
        stacked, group=parallel_state.get_data_parallel_group(with_context_parallel=True)
    )
    stacked = stacked.cpu()
    out = {}
    for key, (total, count) in zip(keys, stacked.tolist()):
        name = "loss" if key == "lm loss" else key.replace(" ", "_")
        out[name] = total / count if count else float("nan")
        out[f"{name}__count"] = count
    return out
