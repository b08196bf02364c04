"""Rebuild a trained model from a Megatron-DLM checkpoint, at any parallel layout."""

from __future__ import annotations

import dataclasses

import torch

from megatron_dlm.config import DLMConfig, ParallelConfig
from megatron_dlm.models.provider import build_model
from megatron_dlm.models.vocab import Vocab


def checkpoint_config(path: str, parallel: ParallelConfig | None = None) -> tuple[DLMConfig, dict]:
    """The training config stored in a checkpoint, with ``parallel`` as the new layout.

    Returns the config and the tokenizer record (vocab size, special ids, model path).
    Sequence parallelism is turned off: inference batches rarely divide the sequence.
    """
    from megatron_dlm.training.checkpointing import (
        CheckpointError,
        read_checkpoint_info,
        saved_vocab_rows,
    )

    info = read_checkpoint_info(path)
    if not info.get("config"):
        raise CheckpointError(f"{path}: the checkpoint holds no Megatron-DLM config")
    saved = dict(info["config"])
    layout = parallel or ParallelConfig()
    saved["parallel"] = dataclasses.asdict(dataclasses.replace(layout, sequence_parallel=False))
    rows = saved_vocab_rows(path)
    tp = layout.tensor_model_parallel_size
    if rows is not None:
        # Pad to exactly the saved rows at the new TP (the saved TP may have padded further).
        if rows % tp:
            raise CheckpointError(
                f"{path}: its {rows}-row embedding cannot be split over "
                f"--tensor-model-parallel-size {tp}"
            )
        saved["model"] = {**saved["model"], "make_vocab_size_divisible_by": rows // tp}
    return DLMConfig.from_dict(saved), dict(info.get("tokenizer") or {})


def load_model_from_checkpoint(
    path: str, parallel: ParallelConfig | None = None
) -> tuple[DLMConfig, list[torch.nn.Module], Vocab, dict]:
    """Build this rank's chunks for the checkpoint's architecture and load its weights.

    ``torch.distributed`` and megatron-core's parallel state must already be initialised with
    ``parallel`` (see :func:`megatron_dlm.runtime.distributed.init_distributed`). The weights are
    resharded from whatever layout they were saved at.
    """
    from megatron_dlm.training.checkpointing import load_model_weights, resolve_checkpoint

    cfg, tokenizer = checkpoint_config(path, parallel)
    vocab = Vocab(
        size=tokenizer["vocab_size"],
        mask_id=tokenizer["mask_id"],
        eod_id=tokenizer["eod"],
        pad_id=tokenizer["pad"],
    )
    model = build_model(cfg, vocab)
    load_model_weights(model, resolve_checkpoint(path))
    for chunk in model:
        chunk.eval()
    return cfg, model, vocab, tokenizer
