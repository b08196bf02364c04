"""Checkpoints through megatron-core dist_checkpointing (torch_dist format).

Every tensor is saved under its global (layout-independent) key, so a checkpoint written at one
TP/PP/EP layout loads at any other: dist_checkpointing reshards on load.
"""

from __future__ import annotations

from pathlib import Path

import torch
from megatron.core import dist_checkpointing
from megatron.core.utils import unwrap_model


def model_sharded_state_dict(model_chunks: list[torch.nn.Module]) -> dict:
    """Megatron-LM's layout: ``model`` for one chunk, ``model0``, ``model1``... for several."""
    chunks = unwrap_model(model_chunks)
    if len(chunks) == 1:
        return {"model": chunks[0].sharded_state_dict()}
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(chunks)}


def save_model_weights(model_chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Save only the weights (collective: every rank calls it)."""
    directory = Path(directory)
    if torch.distributed.get_rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    dist_checkpointing.save(model_sharded_state_dict(model_chunks), str(directory))


def load_model_weights(model_chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Load weights saved at any layout into this rank's chunks (collective)."""
    sharded = model_sharded_state_dict(model_chunks)
    state = dist_checkpointing.load(sharded, str(directory))
    chunks = unwrap_model(model_chunks)
    if len(chunks) == 1:
        chunks[0].load_state_dict(state["model"])
    else:
        for i, chunk in enumerate(chunks):
            chunk.load_state_dict(state[f"model{i}"])
