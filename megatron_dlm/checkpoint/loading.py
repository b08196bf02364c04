"""Reading checkpoints into a run (any saved layout) or into a model alone."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from megatron.core import dist_checkpointing

from megatron_dlm.checkpoint.compat import check_compatible
from megatron_dlm.checkpoint.errors import CheckpointError
from megatron_dlm.checkpoint.info import read_checkpoint_info
from megatron_dlm.checkpoint.manifest import verify_manifest
from megatron_dlm.checkpoint.sharded import (
    load_model_state,
    model_sharded_state_dict,
    set_rng_state,
    training_state_dict,
    uses_distributed_optimizer,
)
from megatron_dlm.checkpoint.state import TrainState
from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord
from megatron_dlm.checkpoint.tracker import resolve_checkpoint
from megatron_dlm.config import DLMConfig

logger = logging.getLogger(__name__)


def _load(state: dict, directory: Path, what: str) -> dict:
    """dist_checkpointing.load with its failures as one CheckpointError naming ``directory``."""
    try:
        return dist_checkpointing.load(state, str(directory))
    except BaseException as exc:  # torch's CheckpointException derives from BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"{directory}: failed to load {what} ({type(exc).__name__}: {reason})"
        ) from exc


def _collective() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def verify_checkpoint(directory: Path) -> None:
    """Check the files against the manifest (split over the ranks when a world exists)."""
    if not verify_manifest(directory, collective=_collective()):
        logger.warning("%s has no manifest (written by an older version): its files cannot "
                       "be checked for damage", directory)  # fmt: skip


def _check_finite(model: list[torch.nn.Module], directory: Path) -> None:
    bad = [
        name
        for chunk in model
        for name, p in chunk.named_parameters()
        if not bool(torch.isfinite(p.detach()).all())
    ]
    flag = torch.tensor([float(len(bad))])
    if _collective():
        if torch.distributed.get_backend() == "nccl":
            flag = flag.cuda()
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item() > 0:
        where = f" (e.g. {bad[0]})" if bad else ""
        raise CheckpointError(f"{directory}: the loaded weights hold NaN/Inf values{where}")


def load_checkpoint(
    path: str | Path,
    model: list[torch.nn.Module],
    optimizer=None,
    scheduler=None,
    *,
    config: DLMConfig | None = None,
    tokenizer: TokenizerRecord | None = None,
    load_optim: bool = True,
    load_rng: bool = True,
    finetune: bool = False,
) -> TrainState:
    """Load a checkpoint saved at any layout into this rank's model (collective).

    Returns the train state to continue from (a fresh one with ``finetune``).
    """
    directory = resolve_checkpoint(path)
    verify_checkpoint(directory)
    info = read_checkpoint_info(directory)
    check_compatible(info, config, tokenizer, finetune=finetune)
    with_optimizer = load_optim and not finetune and optimizer is not None
    metadata = dist_checkpointing.load_content_metadata(str(directory)) or {}
    if with_optimizer and uses_distributed_optimizer(optimizer) != (
        "distrib_optim_sharding_type" in metadata
    ):
        raise CheckpointError(
            f"{directory}: optimizer state was saved "
            f"{'with' if 'distrib_optim_sharding_type' in metadata else 'without'} "
            "--use-distributed-optimizer; load it the same way, or pass --no-load-optim"
        )
    state = training_state_dict(
        model, optimizer, scheduler, metadata, with_optimizer=with_optimizer, is_loading=True
    )
    same_world = info.world_size in (None, torch.distributed.get_world_size())
    restore_rng = load_rng and not finetune and same_world
    if not restore_rng:
        state.pop("rng_state")
    loaded = _load(state, directory, "the checkpoint")
    load_model_state(model, loaded)
    _check_finite(model, directory)
    if with_optimizer:
        optimizer.load_state_dict(loaded["optimizer"])
        if scheduler is not None and loaded.get("opt_param_scheduler"):
            scheduler.load_state_dict(loaded["opt_param_scheduler"])
    if restore_rng:
        set_rng_state(loaded["rng_state"])
    elif load_rng and not finetune:
        logger.warning("world size changed since the checkpoint: RNG states start fresh")
    if finetune:
        return TrainState()
    return info.train_state


def load_model_weights(
    model_chunks: list[torch.nn.Module], directory: str | Path, *, verify: bool = True
) -> None:
    """Load weights saved at any layout (by either save function) into this rank's chunks.

    With ``verify``, the files are checked against the manifest first (when there is one) and
    the loaded weights must be finite.
    """
    directory = Path(directory)
    if verify:
        verify_checkpoint(directory)
    state = _load(model_sharded_state_dict(model_chunks), directory, "the model weights")
    load_model_state(model_chunks, state)
    if verify:
        _check_finite(model_chunks, directory)
