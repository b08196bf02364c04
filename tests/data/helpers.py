"""Shared helpers for the data tests (importable by spawned ranks too)."""

from __future__ import annotations

import os

import numpy as np

from megatron_dlm.config import DataConfig
from megatron_dlm.data.datasets import DatasetSplits, build_data_loader, build_datasets

SEQ = 64


def build(
    tokenizer,
    cache: str,
    *,
    train_samples: int = 1,
    valid_samples: int = 0,
    seq_length: int = SEQ,
    seed: int = 1,
    **data,
) -> DatasetSplits:
    """``build_datasets`` with a test-local cache and small samples."""
    cfg = DataConfig(data_cache_path=str(cache), **data)
    return build_datasets(
        cfg,
        seq_length=seq_length,
        seed=seed,
        tokenizer=tokenizer,
        train_samples=train_samples,
        valid_samples=valid_samples,
        test_samples=0,
    )


def stream_ids(dataset, start: int = 0, stop: int | None = None) -> list[tuple[int, int]]:
    """(sample_id, epoch) of each stream position, resolved without reading tokens."""
    stop = len(dataset) if stop is None else stop
    return [(p.sample_id, p.epoch) for p in (dataset.position(g) for g in range(start, stop))]


def read_loader(dataset, **kwargs) -> list[dict]:
    """All batches of ``build_data_loader(dataset, **kwargs)``, as numpy dicts."""
    loader = build_data_loader(dataset, **kwargs)
    return [{k: v.numpy() for k, v in batch.items()} for batch in loader]


def flatten(batches: list[dict], key: str) -> np.ndarray:
    return np.concatenate([b[key] for b in batches]) if batches else np.zeros(0)


def directory_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )
