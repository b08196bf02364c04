"""Unique-token budgets, splits and the epochs a compute budget implies.

Pure arithmetic on document lengths (numpy only, no torch or megatron-core import), shared by the
training datasets (:mod:`megatron_dlm.data.datasets`) and ``tools/dataset_info.py``.

Rules (docs/datasets.md):

* A *document* is one sequence of the indexed dataset (``tools/preprocess_data.py`` writes one
  per source document); megatron-core's ``GPTDataset`` splits and shuffles by sequence.
* ``--split 969,30,1`` gives each split a contiguous range of documents, as megatron-core's
  ``BlendedMegatronDatasetBuilder`` does: train first, then valid, then test.
* ``--unique-tokens N`` draws the unique set from the training split's documents: in a seeded
  random order (``--unique-tokens-sample random``, the default, keyed by ``(--seed, blend
  component)``) or in file order (``first``), it keeps the shortest run of that order holding at
  least N tokens. The boundary document (the last one kept) is cut after the tokens that make
  the count exactly N (``--unique-tokens-boundary cut``, the default) or kept whole (``whole``:
  ``N <= tokens < N + len(boundary document)``). The random order does not depend on N, so a
  smaller budget's set is part of a larger one's. A budget larger than the split is an error.
* One epoch of ``T`` tokens gives ``(T - 1) // seq_length`` samples of ``seq_length + 1``
  tokens (inputs and next-token labels overlap by one token); the tail of fewer than
  ``seq_length`` tokens is not trained on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")


class BudgetError(ValueError):
    """A unique-token budget the data cannot hold (the message names the flag and the data)."""


BudgetSample = Literal["random", "first"]
BudgetBoundary = Literal["cut", "whole"]
_DRAW_STREAM = 0x756E_6971  # "uniq": keeps this draw apart from other uses of the seed


@dataclass(frozen=True)
class UniqueTokenBudget:
    """The documents of a split that hold a unique-token budget.

    Attributes:
        requested_tokens: the budget asked for (``--unique-tokens``, or a blend component's share).
        documents: how many documents of the split are kept (the boundary document included).
        tokens: tokens kept (exactly ``requested_tokens`` when the boundary document is cut).
        available_documents: documents in the split.
        available_tokens: tokens in the split.
        sample: how the documents were drawn (``random`` or ``first``).
        boundary: what happens to the boundary document (``cut`` or ``whole``).
        seed: the seed of a random draw (None for ``first``).
        boundary_document: position in the split of the boundary document (the last one drawn).
        boundary_tokens: tokens kept of it (its first ones).
        boundary_length: its length in the dataset.
        selected: positions in the split of the kept documents, ascending, int64 ``[documents]``
            (not compared: it follows from the fields above and the split).
    """

    requested_tokens: int
    documents: int
    tokens: int
    available_documents: int
    available_tokens: int
    sample: BudgetSample
    boundary: BudgetBoundary
    seed: int | None
    boundary_document: int
    boundary_tokens: int
    boundary_length: int
    selected: np.ndarray = field(compare=False, repr=False)

    @property
    def is_cut(self) -> bool:
        """Whether the boundary document is kept only in part."""
        return self.boundary_tokens < self.boundary_length

    def describe(self) -> str:
        """One phrase: ``50,000 tokens in 12 of 969 documents, drawn at random (seed 1234), the
        last cut to 1,234 of its 5,678 tokens``."""
        how = f"drawn at random (seed {self.seed})" if self.sample == "random" else "the first ones"
        text = (
            f"{self.tokens:,} tokens in {self.documents:,} of {self.available_documents:,} "
            f"documents, {how}"
        )
        if self.is_cut:
            return (
                f"{text}, the last cut to {self.boundary_tokens:,} of its "
                f"{self.boundary_length:,} tokens"
            )
        return f"{text}, the last one whole"


def budget_document_order(
    num_documents: int, *, sample: BudgetSample, seed: int | None = None, component: int = 0
) -> np.ndarray:
    """The order in which a budget draws the documents of a split.

    Args:
        num_documents: documents in the split.
        sample: ``random`` (a permutation keyed by ``(seed, component)``, numpy PCG64) or
            ``first`` (file order).
        seed: the run's seed (``--seed``); required for ``random``.
        component: the blend component, so that components draw independently.

    Returns:
        Positions in the split, int64 ``[num_documents]``.
    """
    if sample == "first":
        return np.arange(num_documents, dtype=np.int64)
    if sample != "random":
        raise ValueError(f"--unique-tokens-sample must be random or first, got {sample!r}")
    if seed is None:
        raise ValueError("a random unique-token draw needs a seed")
    entropy = np.random.SeedSequence([_DRAW_STREAM, seed, component])
    rng = np.random.Generator(np.random.PCG64(entropy))
    return rng.permutation(num_documents).astype(np.int64)


def select_budget_documents(
    document_lengths: np.ndarray,
    unique_tokens: int,
    *,
    sample: BudgetSample,
    boundary: BudgetBoundary,
    seed: int | None = None,
    component: int = 0,
    source: str = "the training split",
) -> UniqueTokenBudget:
    """Apply the budget rule: the shortest run of the draw order holding ``unique_tokens``.

    Args:
        document_lengths: tokens per document of the split, in document order, shape ``[D]``.
        unique_tokens: the budget (> 0).
        sample: the draw order (:func:`budget_document_order`).
        boundary: ``cut`` keeps the boundary document's first tokens so that the count is
            exactly ``unique_tokens``; ``whole`` keeps it whole.
        seed: the run's seed (required for ``random``).
        component: the blend component (keys a random draw).
        source: how to name the data in the error message.

    Raises:
        BudgetError: the split holds fewer than ``unique_tokens`` tokens.
    """
    if unique_tokens <= 0:
        raise BudgetError(f"--unique-tokens must be > 0, got {unique_tokens}")
    if boundary not in ("cut", "whole"):
        raise ValueError(f"--unique-tokens-boundary must be cut or whole, got {boundary!r}")
    lengths = np.asarray(document_lengths, dtype=np.int64)
    available = int(lengths.sum())
    if available < unique_tokens:
        raise BudgetError(
            f"--unique-tokens {unique_tokens:,} is larger than {source}, which holds "
            f"{available:,} tokens in {lengths.size:,} documents; lower --unique-tokens "
            f"or add data (a budget is never filled by repeating documents)"
        )
    order = budget_document_order(lengths.size, sample=sample, seed=seed, component=component)
    cumulative = np.cumsum(lengths[order])
    documents = int(np.searchsorted(cumulative, unique_tokens, side="left")) + 1
    last = int(order[documents - 1])
    before = int(cumulative[documents - 2]) if documents > 1 else 0
    kept = unique_tokens - before if boundary == "cut" else int(lengths[last])
    return UniqueTokenBudget(
        requested_tokens=int(unique_tokens),
        documents=documents,
        tokens=before + kept,
        available_documents=int(lengths.size),
        available_tokens=available,
        sample=sample,
        boundary=boundary,
        seed=None if sample == "first" else seed,
        boundary_document=last,
        boundary_tokens=kept,
        boundary_length=int(lengths[last]),
        selected=np.sort(order[:documents]),
    )


def blend_budgets(
    lengths: Sequence[np.ndarray],
    unique_tokens: int,
    *,
    weights: Sequence[float] | None,
    sample: BudgetSample,
    boundary: BudgetBoundary,
    seed: int | None,
    names: Sequence[str],
) -> list[UniqueTokenBudget]:
    """Each component's budget: ``unique_tokens`` split by weight (else by size), drawn per
    component (component ``i`` keys its random draw with ``(seed, i)``).

    Args:
        lengths: per component, tokens per document of its training split.
        unique_tokens: the blend's budget.
        weights: blend weights (None: shares follow the components' token counts).
        sample, boundary, seed: as :func:`select_budget_documents`.
        names: the components' prefixes (for messages).

    Raises:
        BudgetError: a component too small for its share, or a share of zero tokens.
    """
    if len(lengths) == 1:
        shares = [unique_tokens]
    else:
        shares = proportional_shares(
            unique_tokens, weights or [max(int(np.sum(x)), 1) for x in lengths]
        )
    budgets = []
    for i, (name, length, share) in enumerate(zip(names, lengths, shares)):
        source = f"the training split of {name}"
        if len(lengths) > 1:
            source += f" (its share of the blend's budget: {share:,} tokens)"
        if share == 0:
            raise BudgetError(
                f"--unique-tokens {unique_tokens:,} gives {name} no tokens in the blend"
            )
        budgets.append(
            select_budget_documents(
                length,
                share,
                sample=sample,
                boundary=boundary,
                seed=seed,
                component=i,
                source=source,
            )
        )
    return budgets


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
        unique_tokens: tokens of the unique set; for ``--unique-tokens N`` pass the tokens the
            budget kept (:func:`select_budget_documents` ``.tokens``: N when the boundary
            document is cut).
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
