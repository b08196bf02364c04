"""Rank functions for the checkpoint tests (importable by name for run_distributed)."""

from __future__ import annotations

from megatron_dlm.config import DLMConfig, ModelConfig
from megatron_dlm.models.vocab import Vocab
from tests.modern import modern_model

VOCAB = Vocab(size=128, mask_id=127, eod_id=0, pad_id=1)


def _model():
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig(model=ModelConfig(**modern_model(num_layers=1, hidden_size=32,
                                      num_attention_heads=2,
                                      seq_length=16, max_position_embeddings=16,
                                      use_cpu_initialization=True)))  # fmt: skip
    init_distributed(cfg.parallel, seed=3)
    return cfg, build_model(cfg, VOCAB)


def save_with_a_nan_weight(root: str) -> str:
    """Save once (good), poison a weight, save again: the second save must be refused."""
    import torch

    from megatron_dlm.checkpoint import CheckpointError, CheckpointSaver, TrainState

    cfg, model = _model()
    saver = CheckpointSaver(root, keep_last_k=1)
    saver.save(TrainState(iteration=1), model, config=cfg)
    with torch.no_grad():
        next(model[0].parameters()).view(-1)[0] = float("nan")
    try:
        saver.save(TrainState(iteration=2), model, config=cfg)
    except CheckpointError as exc:
        return str(exc)
    return "saved"


def async_saves_across_close(root: str) -> list[int]:
    """Background saves before and after close() (the end of a training phase): both complete."""
    from megatron_dlm.checkpoint import CheckpointSaver, TrainState, list_checkpoints, read_tracker

    cfg, model = _model()
    saver = CheckpointSaver(root, async_save=True)
    saved = []
    for iteration in (1, 2):
        saver.save(TrainState(iteration=iteration), model, config=cfg)
        saver.close()
        saved.append(read_tracker(root))
    return saved + [len(list_checkpoints(root))]


def load_weights(root: str) -> None:
    from megatron_dlm.checkpoint import load_model_weights, resolve_checkpoint

    _, model = _model()
    load_model_weights(model, resolve_checkpoint(root))


def async_save_then_hang(root: str, flag: str) -> None:
    """One complete background save (iteration 2), then one whose writer never finishes
    (iteration 4); touches ``flag`` once the second is scheduled. Run as a script."""
    import time
    from pathlib import Path

    from megatron.core.dist_checkpointing.strategies.filesystem_async import (
        FileSystemWriterAsync,
    )

    from megatron_dlm.checkpoint import CheckpointSaver, TrainState

    cfg, model = _model()
    saver = CheckpointSaver(root, async_save=True)
    saver.save(TrainState(iteration=2), model, config=cfg)
    saver.finalize(blocking=True)
    original = FileSystemWriterAsync.write_preloaded_data

    def slow_write(*args, **kwargs):
        time.sleep(600)  # the writer is killed before it writes anything
        return original(*args, **kwargs)

    FileSystemWriterAsync.write_preloaded_data = staticmethod(slow_write)
    saver.save(TrainState(iteration=4), model, config=cfg)
    Path(flag).write_text("scheduled")
    time.sleep(600)


if __name__ == "__main__":  # python -m tests.checkpoint.workers ROOT FLAG
    import os
    import sys

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    from megatron_dlm.runtime.distributed import free_port

    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    async_save_then_hang(sys.argv[1], sys.argv[2])
