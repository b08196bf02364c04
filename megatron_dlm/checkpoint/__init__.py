"""The checkpoint format: megatron-core dist_checkpointing (torch_dist) in Megatron's layout.

    <save>/iter_0000500/                      one dist_checkpointing directory per save
    <save>/latest_checkpointed_iteration.txt  the tracker, written last

A checkpoint holds the model (and optimizer, scheduler, RNG) under global tensor names, so it
loads at any TP/PP/EP layout, plus a common state: the training config, a
:class:`TokenizerRecord`, the :class:`TrainState`. This package depends only on
``megatron_dlm.config`` and megatron-core; rebuilding a model from a checkpoint is
:func:`megatron_dlm.models.load_trained`.
"""

from megatron_dlm.checkpoint.compat import ARCHITECTURE_FIELDS, check_compatible
from megatron_dlm.checkpoint.errors import CheckpointError
from megatron_dlm.checkpoint.info import (
    CHECKPOINT_VERSION,
    CheckpointInfo,
    read_checkpoint_info,
    saved_vocab_rows,
)
from megatron_dlm.checkpoint.loading import load_checkpoint, load_model_weights, verify_checkpoint
from megatron_dlm.checkpoint.manifest import MANIFEST_FILE, verify_manifest, write_manifest
from megatron_dlm.checkpoint.saving import CheckpointSaver, save_checkpoint, save_model_weights
from megatron_dlm.checkpoint.state import TrainState
from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord
from megatron_dlm.checkpoint.tracker import (
    TRACKER_FILE,
    checkpoint_name,
    has_checkpoint,
    list_checkpoints,
    read_tracker,
    resolve_checkpoint,
)

__all__ = [
    "ARCHITECTURE_FIELDS",
    "CHECKPOINT_VERSION",
    "MANIFEST_FILE",
    "CheckpointSaver",
    "TRACKER_FILE",
    "CheckpointError",
    "CheckpointInfo",
    "TokenizerRecord",
    "TrainState",
    "check_compatible",
    "checkpoint_name",
    "has_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_weights",
    "read_checkpoint_info",
    "read_tracker",
    "resolve_checkpoint",
    "save_checkpoint",
    "save_model_weights",
    "saved_vocab_rows",
    "verify_checkpoint",
    "verify_manifest",
    "write_manifest",
]
