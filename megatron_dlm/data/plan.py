"""The data plan of a run: which documents each split uses and how the budget replays them.

Computed from the ``.idx`` files alone (numpy; no torch or megatron-core), so tools and dry runs
can print it without building anything. :func:`~megatron_dlm.data.datasets.build_datasets`
builds exactly this plan and checks that megatron-core agrees with it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from megatron_dlm.config import ConfigError, DataConfig
from megatron_dlm.data.blend import Blend, split_blends
from megatron_dlm.data.budget import (
    SPLIT_NAMES,
    UniqueTokenBudget,
    blend_budgets,
    proportional_shares,
    samples_per_epoch,
    split_document_range,
)
from megatron_dlm.data.dataset_checks import DatasetError, IndexFileSummary, check_indexed_dataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComponentInfo:
    """One prefix of one split.

    Attributes:
        prefix: dataset prefix.
        weight: its blend weight (None for unweighted blends).
        split_documents: the documents ``--split`` (or a per-split path) gives this split.
        documents: how many of them it uses (all, or those the budget keeps).
        tokens: tokens it uses (with a cut boundary document, only its kept tokens count).
        samples_per_epoch: samples of one pass over them.
        draws_per_cycle: samples the stream draws from it per blend cycle; equals
            ``samples_per_epoch`` (a cycle is one epoch of every component) except for weighted
            blends without ``--unique-tokens``, where the weights set the mix.
        budget: the unique-token budget applied (training split with --unique-tokens only).
    """

    prefix: str
    weight: float | None
    split_documents: range
    documents: int
    tokens: int
    samples_per_epoch: int
    draws_per_cycle: int
    budget: UniqueTokenBudget | None = None

    @property
    def document_ids(self) -> np.ndarray:
        """The documents it uses, as indices into the indexed dataset, ascending, int64 ``[D]``."""
        if self.budget is None:
            return np.arange(self.split_documents.start, self.split_documents.stop, dtype=np.int64)
        return self.split_documents.start + self.budget.selected

    def describe(self) -> str:
        weight = "" if self.weight is None else f"{self.weight:g} x "
        span = f"documents {self.split_documents.start}-{self.split_documents.stop - 1}"
        if self.budget is not None:
            span = f"{self.documents:,} of {span}"
        return (
            f"{weight}{self.prefix} [{span}: {self.tokens:,} tokens, "
            f"{self.samples_per_epoch:,} samples/epoch]"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What the training data is and how the compute budget replays it.

    Attributes:
        unique_documents: training documents in the unique set (all components).
        unique_tokens: tokens in them (exactly ``--unique-tokens`` when the boundary document
            is cut).
        samples_per_epoch: training samples in one pass over the unique set.
        tokens_per_epoch: tokens one epoch trains on (``samples_per_epoch * seq_length``).
        train_samples: samples the compute budget consumes.
        epochs: ``train_samples / samples_per_epoch``.
        blend: human-readable description of every split.
        components: per split name (present splits only), one :class:`ComponentInfo` per prefix.
    """

    unique_documents: int
    unique_tokens: int
    samples_per_epoch: int
    tokens_per_epoch: int
    train_samples: int
    epochs: float
    blend: str
    components: dict[str, list[ComponentInfo]] = field(default_factory=dict)

    def component_epochs(self) -> list[float]:
        """Epochs of each training component (equal unless a weighted blend without a budget
        replays its components at different rates)."""
        train = self.components["train"]
        cycle = sum(c.draws_per_cycle for c in train)
        return [self.train_samples * c.draws_per_cycle / cycle / c.samples_per_epoch for c in train]


def _plan_split(
    name: str,
    blend: Blend,
    split: str | None,
    summaries: dict[str, IndexFileSummary],
    data: DataConfig,
    seq_length: int,
    seed: int,
) -> list[ComponentInfo] | None:
    """The components of one split (None if ``--split`` gives it no weight)."""
    ranges = []
    for prefix in blend.prefixes:
        count = summaries[prefix].num_sequences
        ranges.append(range(count) if split is None else split_document_range(count, split, name))
    if any(r is None for r in ranges):
        return None
    lengths = [
        summaries[p].sequence_lengths[r.start : r.stop] for p, r in zip(blend.prefixes, ranges)
    ]
    budgets: list[UniqueTokenBudget | None] = [None] * len(ranges)
    if name == "train" and data.unique_tokens is not None:
        budgets = blend_budgets(
            lengths,
            data.unique_tokens,
            weights=blend.weights,
            sample=data.unique_tokens_sample,
            boundary=data.unique_tokens_boundary,
            seed=seed,
            names=blend.prefixes,
        )
    sizes, tokens, counts = [], [], []
    for prefix, length, budget in zip(blend.prefixes, lengths, budgets):
        tokens.append(int(length.sum()) if budget is None else budget.tokens)
        counts.append(len(length) if budget is None else budget.documents)
        sizes.append(samples_per_epoch(tokens[-1], seq_length))
        if sizes[-1] == 0:
            where = f"--split {split}" if split else blend.flag
            raise DatasetError(
                f"the {name} split of {prefix} ({where}) holds {tokens[-1]:,} tokens in "
                f"{counts[-1]:,} documents, fewer than one sample of --seq-length {seq_length} "
                f"+ 1: add data or change --split/--seq-length"
                + (" or --unique-tokens" if budget is not None else "")
            )
    draws = sizes
    if blend.weights is not None and not (name == "train" and data.unique_tokens is not None):
        draws = [max(d, 1) for d in proportional_shares(sum(sizes), blend.weights)]
    return [
        ComponentInfo(
            prefix=prefix,
            weight=None if blend.weights is None else blend.weights[i],
            split_documents=ranges[i],
            documents=counts[i],
            tokens=tokens[i],
            samples_per_epoch=sizes[i],
            draws_per_cycle=draws[i],
            budget=budgets[i],
        )
        for i, prefix in enumerate(blend.prefixes)
    ]


def _check_disjoint(components: dict[str, list[ComponentInfo]]) -> None:
    """Validation and test documents never overlap the training split (nor so its budget)."""
    train = [(os.path.realpath(c.prefix), c.split_documents) for c in components["train"]]
    for name in SPLIT_NAMES[1:]:
        for c in components.get(name, []):
            for path, docs in train:
                theirs = c.split_documents
                if path == os.path.realpath(c.prefix) and range(
                    max(docs.start, theirs.start), min(docs.stop, theirs.stop)
                ):
                    raise DatasetError(
                        f"the {name} documents {theirs} of {c.prefix} overlap its training "
                        f"documents {docs}"
                    )


def plan_datasets(
    data: DataConfig,
    *,
    seq_length: int,
    train_samples: int,
    seed: int,
    valid_samples: int = 0,
    test_samples: int = 0,
    summaries: dict[str, IndexFileSummary] | None = None,
) -> DatasetInfo:
    """Resolve flags, split, blend and budget into per-component documents and epochs.

    Args:
        data: the data section.
        seq_length: tokens per sample.
        train_samples: samples the compute budget consumes (> 0).
        seed: the run's seed (``--seed``): keys the random unique-token draw.
        valid_samples: validation samples (0: plan no validation split).
        test_samples: test samples (0: plan no test split).
        summaries: already checked ``.idx`` summaries by prefix (read here otherwise).

    Raises:
        ConfigError: contradictory or missing flags.
        DatasetError: a missing, corrupt or empty dataset, or a split too small for a sample.
        BudgetError: --unique-tokens larger than the training data.
    """
    if train_samples <= 0:
        raise ConfigError(f"train_samples must be > 0 (the compute budget), got {train_samples}")
    blends, split = split_blends(data)
    summaries = dict(summaries or {})
    for blend in filter(None, blends.values()):
        for prefix in blend.prefixes:
            if prefix not in summaries:
                summaries[prefix] = check_indexed_dataset(prefix, blend.flag)
    wanted = {"train": train_samples, "valid": valid_samples, "test": test_samples}
    components: dict[str, list[ComponentInfo]] = {}
    for name in SPLIT_NAMES:
        if blends[name] is None or wanted[name] <= 0:
            continue
        planned = _plan_split(name, blends[name], split, summaries, data, seq_length, seed)
        if planned is None:
            if name == "train":
                raise ConfigError(f"--split {split} gives the training split no documents")
            logger.warning(
                "%d %s samples asked for, but --split %s has none", wanted[name], name, split
            )
            continue
        components[name] = planned
    _check_disjoint(components)
    train = components["train"]
    per_epoch = sum(c.samples_per_epoch for c in train)
    return DatasetInfo(
        unique_documents=sum(c.documents for c in train),
        unique_tokens=sum(c.tokens for c in train),
        samples_per_epoch=per_epoch,
        tokens_per_epoch=per_epoch * seq_length,
        train_samples=train_samples,
        epochs=train_samples / per_epoch,
        blend="; ".join(
            f"{name}: " + " + ".join(c.describe() for c in parts)
            for name, parts in components.items()
        ),
        components=components,
    )
