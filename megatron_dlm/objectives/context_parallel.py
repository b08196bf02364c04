"""Context parallelism: each CP rank computes two load-balanced chunks of every sequence.

The objective prepares the whole micro-batch first (the diffusion mask, the loss weights and
the truncation length depend on the sequence alone, never on the CP size), then every
``[b, s]`` field is cut the way Megatron-LM's ``get_batch_on_this_cp_rank`` cuts a batch: the
sequence is split into 2 x CP chunks and rank r keeps chunks r and 2·CP - 1 - r, so causal
attention costs every rank the same. The model sees this rank's tokens with their original
``position_ids`` (RoPE picks the same chunks itself), and the loss is a sum over this rank's
tokens: megatron-core's per-token loss normalisation adds the token counts over the DP x CP
group, and the trainer sums every report over it, so the loss and each metric are those of the
whole sequence.
"""

from __future__ import annotations

import dataclasses

import torch
from megatron.core.utils import get_batch_on_this_cp_rank

from megatron_dlm.objectives.base import PreparedBatch

SEQUENCE_FIELDS = ("inputs", "position_ids", "targets", "loss_mask", "loss_weights")
"""The ``[b, s]`` fields of a PreparedBatch; ``t`` (``[b]``) stays whole."""


def split_sequence(
    tensors: dict[str, torch.Tensor], cp_group: torch.distributed.ProcessGroup | None = None
) -> dict[str, torch.Tensor]:
    """This CP rank's two chunks of each ``[b, s, ...]`` tensor (megatron-core's split).

    Args:
        tensors: batch-first tensors whose dim 1 is the whole sequence; its length must be a
            multiple of 2 x CP.
        cp_group: the context-parallel group (default: megatron-core's parallel state).

    Returns:
        The same keys, each ``[b, s / CP, ...]``: chunk ``r`` then chunk ``2·CP - 1 - r``.
    """
    return get_batch_on_this_cp_rank(
        {key: value.contiguous() for key, value in tensors.items()}, cp_group=cp_group
    )


def split_for_context_parallel(
    prepared: PreparedBatch, cp_group: torch.distributed.ProcessGroup | None = None
) -> PreparedBatch:
    """This CP rank's part of a micro-batch prepared on the whole sequence."""
    fields = {name: getattr(prepared, name) for name in SEQUENCE_FIELDS}
    return dataclasses.replace(prepared, **split_sequence(fields, cp_group))
