"""Per-token cross-entropy and argmax over vocab-parallel logits.

With tensor parallelism each rank of the TP group holds a contiguous shard of the vocabulary
(rank r: ids ``[r * V/TP, (r + 1) * V/TP)``), as megatron-core's output layer produces it.
The cross-entropy is megatron-core's ``vocab_parallel_cross_entropy``; the argmax (for
accuracy) is a max + all-reduce over the TP group. Without initialised model parallelism
(a single process, e.g. evaluation scripts or unit tests) the logits are taken as the full
vocabulary and plain PyTorch is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core import parallel_state, tensor_parallel


def tensor_parallel_group() -> torch.distributed.ProcessGroup | None:
    """megatron-core's TP group, or None without initialised model parallelism."""
    if not parallel_state.model_parallel_is_initialized():
        return None
    return parallel_state.get_tensor_model_parallel_group()


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each token, in fp32, over vocab-parallel logits.

    Args:
        logits: ``[..., V/TP]`` (e.g. ``[b, s, V/TP]`` from GPTModel): this rank's vocabulary
            shard. Only the last dimension is the vocabulary, so no transpose to megatron's
            ``[s, b]`` order is needed. fp32 logits are overwritten in place (megatron-core's
            kernel reuses them for the softmax); compute anything else from them first.
        targets: int64 ``[...]``, the target ids (full-vocabulary ids).

    Returns:
        fp32 ``[...]``: ``-log softmax(logits)[target]``, differentiable w.r.t. ``logits``.
    """
    if tensor_parallel_group() is None:
        flat = logits.float().reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, targets.reshape(-1), reduction="none").view(targets.shape)
    return tensor_parallel.vocab_parallel_cross_entropy(logits.float(), targets)


@torch.no_grad()
def vocab_parallel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Index of the largest logit over the whole (sharded) vocabulary.

    Ties go to the smallest id, as ``torch.argmax`` on the gathered logits, so the result
    does not depend on the TP size.

    Args:
        logits: ``[..., V/TP]``, this rank's vocabulary shard.

    Returns:
        int64 ``[...]``: full-vocabulary ids, identical on every rank of the TP group.
    """
    local_max, local_arg = logits.max(dim=-1)
    group = tensor_parallel_group()
    if group is None or group.size() == 1:
        return local_arg
    offset = torch.distributed.get_rank(group) * logits.shape[-1]
    global_max = local_max.float().clone()
    torch.distributed.all_reduce(global_max, op=torch.distributed.ReduceOp.MAX, group=group)
    # Among the shards that hold the maximum, the smallest id wins.
    no_candidate = torch.iinfo(torch.int64).max
    arg = torch.where(local_max.float() == global_max, local_arg + offset, no_candidate)
    torch.distributed.all_reduce(arg, op=torch.distributed.ReduceOp.MIN, group=group)
    return arg
