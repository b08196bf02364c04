"""Batch geometry: global batch, micro-batches per step, steps for a token budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_dlm.config import ConfigError, DLMConfig


@dataclass(frozen=True)
class BatchLayout:
    """Resolved batch geometry (the same on every rank)."""

    micro_batch_size: int
    global_batch_size: int
    data_parallel_size: int
    num_microbatches: int
    seq_length: int
    train_iters: int

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_length


def resolve_batch_layout(cfg: DLMConfig, data_parallel_size: int) -> BatchLayout:
    """Check the batch sizes against the layout and turn the budget into optimizer steps."""
    training = cfg.training
    mbs = training.micro_batch_size
    gbs = training.global_batch_size or mbs * data_parallel_size
    if gbs % (mbs * data_parallel_size):
        raise ConfigError(
            f"--global-batch-size ({gbs}) must be divisible by --micro-batch-size ({mbs}) x "
            f"data-parallel size ({data_parallel_size})"
        )
    seq = cfg.model.seq_length
    if training.train_iters is not None:
        iters = training.train_iters
    elif training.train_samples is not None:
        iters = math.ceil(training.train_samples / gbs)
    elif training.train_tokens is not None:
        iters = math.ceil(training.train_tokens / (gbs * seq))
    else:
        raise ConfigError(
            "give the compute budget: --train-iters, --train-samples or --train-tokens"
        )
    return BatchLayout(
        micro_batch_size=mbs,
        global_batch_size=gbs,
        data_parallel_size=data_parallel_size,
        num_microbatches=gbs // (mbs * data_parallel_size),
        seq_length=seq,
        train_iters=iters,
    )
