"""The sharded state dict a checkpoint is written from and read into (Megatron-LM's keys).

Every tensor is keyed by its global (layout-independent) name, so dist_checkpointing reshards a
checkpoint saved at one TP/PP/EP layout into any other on load.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from megatron.core import tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.utils import unwrap_model

from megatron_dlm.checkpoint.optimizer_state import (
    DP_RESHARDABLE,
    FULLY_RESHARDABLE,
    materialize_optimizer_state,
    uses_distributed_optimizer,
)
from megatron_dlm.checkpoint.schedule import scheduler_state


def model_sharded_state_dict(model_chunks: list[torch.nn.Module], metadata=None) -> dict:
    """Megatron-LM's layout: ``model`` for one chunk, ``model0``, ``model1``... for several."""
    chunks = unwrap_model(model_chunks)
    kwargs = {"metadata": metadata} if metadata is not None else {}
    if len(chunks) == 1:
        return {"model": chunks[0].sharded_state_dict(**kwargs)}
    return {f"model{i}": chunk.sharded_state_dict(**kwargs) for i, chunk in enumerate(chunks)}


def load_model_state(model_chunks: list[torch.nn.Module], state: dict) -> None:
    """Copy loaded model tensors (from :func:`model_sharded_state_dict` keys) into the chunks."""
    chunks = unwrap_model(model_chunks)
    if len(chunks) == 1:
        chunks[0].load_state_dict(state["model"])
    else:
        for i, chunk in enumerate(chunks):
            chunk.load_state_dict(state[f"model{i}"])


def sharded_metadata(optimizer, *, fully_reshardable: bool = False) -> dict[str, Any]:
    """dist_checkpointing content metadata: how the optimizer state is laid out on disk
    (:mod:`megatron_dlm.checkpoint.optimizer_state`)."""
    metadata: dict[str, Any] = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}
    if optimizer is not None and uses_distributed_optimizer(optimizer):
        sharding = FULLY_RESHARDABLE if fully_reshardable else DP_RESHARDABLE
        metadata["distrib_optim_sharding_type"] = sharding
    return metadata


def rng_state() -> ShardedObject:
    """This rank's RNG states; one shard per rank, restored only at the same world size."""
    state = {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    return ShardedObject("rng_state", state, (world,), (rank,), replica_id=0)


def set_rng_state(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def training_state_dict(model, optimizer, scheduler, metadata, *, with_optimizer: bool,
                        is_loading: bool) -> dict:  # fmt: skip
    """Model (+ optimizer and scheduler) + RNG: what a training checkpoint holds."""
    state = model_sharded_state_dict(model, metadata)
    if with_optimizer and optimizer is not None:
        materialize_optimizer_state(optimizer)
        state["optimizer"] = optimizer.sharded_state_dict(
            state, is_loading=is_loading, metadata=metadata
        )
        state["opt_param_scheduler"] = scheduler_state(scheduler) if scheduler is not None else None
    state["rng_state"] = rng_state()
    return state
