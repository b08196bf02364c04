"""Writing checkpoints: a temporary directory, renamed when complete, then the tracker.

A save goes to ``iter_XXXXXXX.tmp`` first and is renamed when every rank has written its shards;
the tracker is replaced atomically after that, so a process killed mid-save leaves the previous
checkpoint as the one that loads.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from megatron.core import dist_checkpointing

from megatron_dlm.checkpoint.info import CHECKPOINT_VERSION
from megatron_dlm.checkpoint.sharded import (
    model_sharded_state_dict,
    sharded_metadata,
    training_state_dict,
)
from megatron_dlm.checkpoint.state import TrainState
from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord
from megatron_dlm.checkpoint.tracker import checkpoint_name, list_checkpoints, write_tracker
from megatron_dlm.config import DLMConfig

logger = logging.getLogger(__name__)


def _is_rank0() -> bool:
    return torch.distributed.get_rank() == 0


def save_checkpoint(
    root: str | Path,
    train_state: TrainState,
    model: list[torch.nn.Module],
    optimizer=None,
    scheduler=None,
    *,
    config: DLMConfig | None = None,
    tokenizer: TokenizerRecord | None = None,
    keep_last_k: int | None = None,
) -> Path:
    """Save everything a bit-exact resume needs (collective: every rank calls it).

    Returns the ``iter_*`` directory written.
    """
    root = Path(root)
    final = checkpoint_name(root, train_state.iteration)
    tmp = final.with_name(final.name + ".tmp")
    if _is_rank0():
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a save that was killed
        tmp.mkdir()
    torch.distributed.barrier()
    metadata = sharded_metadata(optimizer)
    state = training_state_dict(
        model, optimizer, scheduler, metadata, with_optimizer=True, is_loading=False
    )
    state.update(
        checkpoint_version=CHECKPOINT_VERSION,
        iteration=train_state.iteration,
        train_state=train_state.to_dict(),
        config=config.to_dict() if config is not None else None,
        tokenizer=tokenizer.to_dict() if tokenizer is not None else None,
        world_size=torch.distributed.get_world_size(),
    )
    dist_checkpointing.save(state, str(tmp), content_metadata=metadata)
    torch.distributed.barrier()
    if _is_rank0():
        replaced = final.with_name(final.name + ".old")
        if final.exists():  # the same iteration saved again: never delete before replacing
            final.rename(replaced)
        tmp.rename(final)
        shutil.rmtree(replaced, ignore_errors=True)
        write_tracker(root, train_state.iteration)
        if keep_last_k:
            remove_old_checkpoints(root, keep_last_k)
    torch.distributed.barrier()
    logger.info("saved checkpoint %s", final)
    return final


def remove_old_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints under ``root``."""
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
        logger.info("removed old checkpoint %s (--keep-last-k %d)", old, keep)


def save_model_weights(model_chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Save only the weights into ``directory`` (collective). For tests and conversions."""
    directory = Path(directory)
    if _is_rank0():
        directory.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    dist_checkpointing.save(model_sharded_state_dict(model_chunks), str(directory))
