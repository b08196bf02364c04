"""Unique-token budgets, splits and the epochs a compute budget implies.

Pure arithmetic on document lengths (numpy only, no torch or megatron-core import), shared by the
training datasets (:mod:`megatron_dlm.data.datasets`) and ``tools/dataset_info.py``.

Rules (docs/datasets.md):

* A *document* is one sequence of the indexed dataset (``tools/preprocess_data.py`` writes one
  per source document); megatron-core's ``GPTDataset`` splits and shuffles by sequence.
* ``--split 969,30,1`` gives each split a contiguous range of documents, as megatron-core's
  ``BlendedMegatronDatasetBuilder`` does: train first, then valid, then test.
* ``--unique-tokens N`` keeps the *smallest* run of first documents of the training split that
  holds at least N tokens: the boundary document is included whole, so the exact budget is
  ``N <= tokens < N + len(boundary document)``. A budget larger than the split is an error.
* One epoch of ``T`` tokens gives ``(T - 1) // seq_length`` samples of ``seq_length + 1``
  tokens (inputs and next-token labels overlap by one token); the tail of fewer than
  ``seq_length`` tokens is not trained on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")


class BudgetError(ValueError):
    """A unique-token budget the data cannot hold (the message names the flag and the data)."""


@dataclass(frozen=True)
class UniqueTokenBudget:
    """The first documents of a split that hold a unique-token budget.

    Attributes:
        requested_tokens: the budget asked for (``--unique-tokens``, or a blend component's share).
        documents: how many first documents of the split are kept.
        tokens: tokens in those documents (``requested_tokens <= tokens``).
        available_documents: documents in the split.
        available_tokens: tokens in the split.
    """

    requested_tokens: int
    documents: int
    tokens: int
    available_documents: int
    available_tokens: int


def select_budget_documents(
    document_lengths: np.ndarray, unique_tokens: int, *, source: str = "the training split"
) -> UniqueTokenBudget:
    """Apply the boundary rule: the fewest first documents holding ``unique_tokens`` tokens.

    Args:
        document_lengths: tokens per document of the split, in document order, shape ``[D]``.
        unique_tokens: the budget (> 0).
        source: how to name the data in the error message.

    Raises:
        BudgetError: the split holds fewer than ``unique_tokens`` tokens.
    """
    if unique_tokens <= 0:
        raise BudgetError(f"--unique-tokens must be > 0, got {unique_tokens}")
    cumulative = np.cumsum(np.asarray(document_lengths, dtype=np.int64))
    available = int(cumulative[-1]) if cumulative.size else 0
    if available < unique_tokens:
        raise BudgetError(
            f"--unique-tokens {unique_tokens:,} is larger than {source}, which holds "
            f"{available:,} tokens in {cumulative.size:,} documents; lower --unique-tokens "
            f"or add data (a budget is never filled by repeating documents)"
        )
    documents = int(np.searchsorted(cumulative, unique_tokens, side="left")) + 1
    return UniqueTokenBudget(
        requested_tokens=int(unique_tokens),
        documents=documents,
        tokens=int(cumulative[documents - 1]),
        available_documents=int(cumulative.size),
        available_tokens=available,
    )


def proportional_shares(total: int, weights: Sequence[float]) -> list[int]:
    """Split an integer ``total`` in proportion to ``weights`` (largest remainder; sums to total).

    Used for a blend's per-component unique-token budgets and per-cycle draws.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or np.any(w <= 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be positive and finite, got {list(weights)}")
    exact = w / w.sum() * total
    shares = np.floor(exact).astype(np.int64)
    shortfall = int(total - shares.sum())
    # Ties go to the earlier component, so the result does not depend on sort stability.
    order = sorted(range(w.size), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:shortfall]:
        shares[i] += 1
    return [int(s) for s in shares]


def samples_per_epoch(tokens: int, seq_length: int) -> int:
    """Samples one pass over ``tokens`` tokens gives (megatron-core ``GPTDataset``, drop last)."""
    if seq_length <= 1:
        raise ValueError(f"--seq-length must be > 1, got {seq_length}")
    return max(0, (int(tokens) - 1) // seq_length)


@dataclass(frozen=True)
class EpochPlan:
    """How a compute budget replays a unique set.

    Attributes:
        unique_tokens: tokens in the unique set (the budgeted documents).
        seq_length: tokens per sample.
        samples_per_epoch: samples in one pass over the unique set.
        tokens_per_epoch: tokens one epoch trains on (``samples_per_epoch * seq_length``).
        train_samples: samples the compute budget consumes.
        epochs: ``train_samples / samples_per_epoch``.
    """

    unique_tokens: int
    seq_length: int
    samples_per_epoch: int
    tokens_per_epoch: int
    train_samples: int
    epochs: float

    @property
    def full_epochs(self) -> int:
        """Epochs that visit every sample."""
        return self.train_samples // self.samples_per_epoch

    @property
    def last_epoch_samples(self) -> int:
        """Samples of the final, partial epoch (0 when the budget ends on an epoch boundary)."""
        return self.train_samples % self.samples_per_epoch


def epochs_for_budget(
    unique_tokens: int,
    *,
    seq_length: int,
    train_samples: int | None = None,
    train_tokens: int | None = None,
) -> EpochPlan:
    """The epochs a compute budget implies over a unique set of ``unique_tokens`` tokens.

    Args:
        unique_tokens: tokens of the unique set; for ``--unique-tokens N`` pass the exact tokens
            of the budgeted documents (:func:`select_budget_documents` ``.tokens``).
        seq_length: tokens per sample.
        train_samples: the compute budget in samples (``--train-iters`` x global batch), or
        train_tokens: the compute budget in tokens (``--train-tokens``; rounded up to samples).

    Raises:
        ValueError: neither or both budgets given, or the unique set is shorter than one sample.
    """
    if (train_samples is None) == (train_tokens is None):
        raise ValueError("give exactly one of train_samples and train_tokens")
    if train_samples is None:
        train_samples = math.ceil(train_tokens / seq_length)
    per_epoch = samples_per_epoch(unique_tokens, seq_length)
    if per_epoch == 0:
        raise BudgetError(
            f"{unique_tokens:,} unique tokens do not fill one sample of --seq-length "
            f"{seq_length} (+1 token for the labels)"
        )
    return EpochPlan(
        unique_tokens=int(unique_tokens),
        seq_length=seq_length,
        samples_per_epoch=per_epoch,
        tokens_per_epoch=per_epoch * seq_length,
        train_samples=int(train_samples),
        epochs=train_samples / per_epoch,
    )


def split_fractions(split: str) -> list[float]:
    """``"969,30,1"`` -> normalised [train, valid, test] fractions (megatron-core's parsing)."""
    values = [float(v) for v in re.findall(r"[.0-9]+", split)]
    if not 1 <= len(values) <= len(SPLIT_NAMES) or sum(values) <= 0:
        raise ValueError(f"--split must be up to three non-negative weights, got {split!r}")
    values += [0.0] * (len(SPLIT_NAMES) - len(values))
    weights = np.array(values, dtype=np.float64)
    return (weights / weights.sum()).tolist()


def split_document_range(num_documents: int, split: str, split_name: str) -> range | None:
    """The documents ``--split`` gives to one split (None when its weight is zero).

    Same bookends and rounding as megatron-core's ``BlendedMegatronDatasetBuilder``
    (``round(fraction * num_documents)``), checked against it in tests/data.
    """
    fractions = split_fractions(split)
    index = SPLIT_NAMES.index(split_name)
    begin = 0.0
    for fraction in fractions[:index]:
        begin = begin + fraction
    end = begin + fractions[index]
    if end <= begin:
        return None
    return range(int(round(begin * float(num_documents))), int(round(end * float(num_documents))))
