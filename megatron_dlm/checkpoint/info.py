"""The non-tensor part of a checkpoint: what was trained, with what, and how far."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megatron.core import dist_checkpointing

from megatron_dlm.checkpoint.errors import CheckpointError
from megatron_dlm.checkpoint.manifest import verify_manifest
from megatron_dlm.checkpoint.state import TrainState
from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord
from megatron_dlm.checkpoint.tracker import COMMON_FILE, resolve_checkpoint
from megatron_dlm.config import DLMConfig

CHECKPOINT_VERSION = 2
"""1: tokenizer record with keys mask_id/eod/pad/path/sha256; 2: :class:`TokenizerRecord`."""


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, SystemExit))


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint's common state (``common.pt``), typed."""

    directory: Path
    """The ``iter_*`` directory."""
    iteration: int | None
    version: int
    config: dict[str, Any] | None
    """The training run's :meth:`DLMConfig.to_dict` (None for foreign checkpoints)."""
    tokenizer: TokenizerRecord | None
    train_state: TrainState
    world_size: int | None
    extra: dict[str, Any]
    """Every other common entry (the parallel layout, run ids, ...)."""

    @property
    def objective(self) -> str | None:
        """The run's ``--objective`` (None when unknown)."""
        return ((self.config or {}).get("objective") or {}).get("objective")

    def training_config(self) -> DLMConfig:
        """The saved config as a :class:`DLMConfig` (fields added since default)."""
        if not self.config:
            raise CheckpointError(f"{self.directory}: the checkpoint holds no Megatron-DLM config")
        return DLMConfig.from_dict(self.config)


_KNOWN = {"checkpoint_version", "iteration", "train_state", "config", "tokenizer", "world_size"}


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """Read the common state of the checkpoint at ``path`` (a root with a tracker or ``iter_*``).

    Raises:
        CheckpointError: missing, incomplete or unreadable checkpoint, or a malformed record.
    """
    directory = resolve_checkpoint(path)
    verify_manifest(directory, names=[COMMON_FILE], collective=False)
    try:
        common = dist_checkpointing.load_common_state_dict(str(directory))
    except BaseException as exc:  # torch's CheckpointException derives from BaseException
        if _is_fatal(exc):
            raise
        reason = str(exc).split("\n")[0][:200]
        raise CheckpointError(f"{directory}: cannot read the checkpoint's common state "
                              f"({type(exc).__name__}: {reason})") from exc  # fmt: skip
    if not isinstance(common, dict):
        raise CheckpointError(f"{directory}: the common state is not a mapping")
    tokenizer = common.get("tokenizer")
    return CheckpointInfo(
        directory=directory,
        iteration=common.get("iteration"),
        version=int(common.get("checkpoint_version") or 1),
        config=common.get("config"),
        tokenizer=(
            TokenizerRecord.from_dict(tokenizer, f"{directory}: the tokenizer record")
            if tokenizer
            else None
        ),
        train_state=TrainState.from_dict(common.get("train_state") or {}),
        world_size=common.get("world_size"),
        extra={k: v for k, v in common.items() if k not in _KNOWN},
    )


def saved_vocab_rows(directory: str | Path) -> int | None:
    """Rows of the saved (padded) word embedding: the padded vocabulary it was trained with.

    Megatron pads the vocabulary to a multiple of ``make_vocab_size_divisible_by`` x TP, so a
    checkpoint saved at one TP may hold more rows than another TP would pad to.
    """
    directory = resolve_checkpoint(directory)
    try:
        metadata = dist_checkpointing.load_tensors_metadata(str(directory))
    except BaseException as exc:
        if _is_fatal(exc):
            raise
        reason = str(exc).split("\n")[0][:200]
        raise CheckpointError(f"{directory}: cannot read the tensor metadata ({reason})") from exc
    for key, tensor in metadata.items():
        if key.endswith("embedding.word_embeddings.weight"):
            return int(tensor.global_shape[0])
    return None
