"""Rank functions for the context-parallel split tests (module level, so they pickle)."""

from __future__ import annotations

import torch

from megatron_dlm.config import ObjectiveConfig, ParallelConfig
from megatron_dlm.objectives import build_objective
from megatron_dlm.runtime.distributed import init_distributed


class LogitsLookup(torch.nn.Module):
    """A stand-in model without attention: the logits of a fixed ``[b, s, V]`` tensor at the
    positions it is given, so any CP split sees exactly the CP=1 logits of its tokens."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, inputs, position_ids, attention_mask=None):
        self.seen = {"inputs": inputs, "position_ids": position_ids}
        rows = torch.arange(inputs.shape[0])[:, None]
        return self.logits[rows, position_ids]


def cp_step(
    cfg: dict,
    batch: dict,
    logits: torch.Tensor,
    mask_id: int,
    seed: int,
    cp: int,
    iteration: int,
    length_multiple: int,
) -> dict:
    """One micro-batch through the trainer's ``forward_step`` at context-parallel size ``cp``.

    ``cp`` = 1 is the reference (in-process, no parallel state); both use ``length_multiple``
    (the trainer's is 2 x CP) so that they truncate alike. Returns what the model saw,
    the loss terms, the reduced metrics (``reduce_reports`` over the DP x CP group for cp > 1)
    and the gradient of the loss sum with respect to the whole logits tensor.
    """
    from megatron_dlm.training.step import StepContext, forward_step, reduce_reports

    if cp > 1:
        init_distributed(ParallelConfig(context_parallel_size=cp), seed=seed)
    objective = build_objective(
        ObjectiveConfig(**cfg), mask_id=mask_id, seed=seed, length_multiple=length_multiple
    )
    b = batch["tokens"].shape[0]
    ctx = StepContext(
        objective=objective,
        iteration=iteration,
        training=True,
        micro_batch_size=b,
        data_parallel_rank=0,
        data_parallel_size=1,
        global_batch_size=b,
        device=torch.device("cpu"),
        context_parallel_size=cp,
    )
    model = LogitsLookup(logits)
    output, loss_func = forward_step(ctx, iter([(0, batch)]), model)
    loss_sum, num_tokens, report = loss_func(output)
    loss_sum.backward()
    if cp > 1:
        metrics = reduce_reports([report])
    else:
        metrics = {
            ("loss" if k == "lm loss" else k.replace(" ", "_")): (v[0] / v[1]).item()
            for k, v in report.items()
        }
    prepared = loss_func.keywords["prepared"]
    return {
        "inputs": model.seen["inputs"],
        "position_ids": model.seen["position_ids"],
        "targets": prepared.targets,
        "loss_weights": prepared.loss_weights,
        "loss_sum": loss_sum.detach(),
        "num_tokens": num_tokens,
        "report": report,
        "metrics": {k: v for k, v in metrics.items() if not k.endswith("__count")},
        "grad": model.logits.grad,
        "seq_length": ctx.objective.sequence_length(
            batch["tokens"].shape[1], iteration=ctx.iteration, microbatch=0
        ),
    }


def split_pieces(tensor: torch.Tensor, cp: int) -> torch.Tensor:
    """This CP rank's split of ``tensor`` (``[b, s, ...]``) by the library function."""
    from megatron_dlm.objectives.context_parallel import split_sequence

    init_distributed(ParallelConfig(context_parallel_size=cp))
    return split_sequence({"x": tensor})["x"]
