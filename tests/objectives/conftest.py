"""Shared builders for the objective tests."""

from __future__ import annotations

import torch

from megatron_dlm.config import ObjectiveConfig
from megatron_dlm.objectives import Objective, build_objective

VOCAB = 50
MASK_ID = 49
SEED = 1234


def make_batch(
    sample_id,
    epoch=0,
    seq: int = 64,
    pad_from: dict[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """A data batch as the dataset yields it; tokens depend on the sample id only.

    Args:
        sample_id: ids of the rows ``[b]``.
        epoch: one epoch for all rows, or one per row.
        seq: sequence length.
        pad_from: row -> first padded position (loss_mask 0 from there on).
    """
    sample_id = torch.as_tensor(sample_id, dtype=torch.int64)
    b = sample_id.numel()
    tokens = torch.stack(
        [
            torch.randint(0, MASK_ID, (seq + 1,), generator=torch.Generator().manual_seed(int(i)))
            for i in sample_id
        ]
    )
    loss_mask = torch.ones(b, seq)
    for row, start in (pad_from or {}).items():
        loss_mask[row, start:] = 0
    return {
        "tokens": tokens[:, :-1].contiguous(),
        "labels": tokens[:, 1:].contiguous(),
        "loss_mask": loss_mask,
        "position_ids": torch.arange(seq).expand(b, seq).contiguous(),
        "sample_id": sample_id,
        "epoch": torch.as_tensor(epoch, dtype=torch.int64).expand(b).contiguous(),
    }


def make_objective(seed: int = SEED, **cfg) -> Objective:
    cfg.setdefault("dlm_random_length_prob", 0.0)
    return build_objective(ObjectiveConfig(**cfg), mask_id=MASK_ID, seed=seed)


def rows(batch: dict[str, torch.Tensor], index) -> dict[str, torch.Tensor]:
    """The rows ``index`` of a batch."""
    index = torch.as_tensor(index)
    return {key: value[index] for key, value in batch.items()}
