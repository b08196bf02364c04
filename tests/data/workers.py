"""Rank functions for the multi-rank data tests (module level, so they pickle)."""

from __future__ import annotations


def read_data_parallel_slice(prefix: str, tokenizer_path: str, cache: str, consumed: int) -> dict:
    """Build the datasets on every rank (rank 0 writes the index cache, the others load it)
    and read this data-parallel rank's micro-batches from ``consumed`` on."""
    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.runtime.distributed import init_distributed
    from tests.data.conftest import load_tokenizer
    from tests.data.helpers import build, read_loader

    ctx = init_distributed(ParallelConfig(), seed=3)
    splits = build(
        load_tokenizer(tokenizer_path),
        cache,
        data_path=[prefix],
        split="90,10,0",
        unique_tokens=8_000,
        train_samples=240,
        seed=3,
    )
    batches = read_loader(
        splits.train,
        consumed_samples=consumed,
        micro_batch_size=3,
        data_parallel_rank=ctx.data_parallel_rank,
        data_parallel_size=ctx.data_parallel_size,
        num_workers=1,
    )
    return {
        "rank": ctx.data_parallel_rank,
        "ids": [list(zip(b["sample_id"].tolist(), b["epoch"].tolist())) for b in batches],
        "tokens": [b["tokens"].tolist() for b in batches],
    }
