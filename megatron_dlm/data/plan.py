"""The data plan of a run: which documents each split uses and how the budget replays them.

Computed from the ``.idx`` files alone (numpy; no torch or megatron-core), so tools and dry runs
can print it without building anything. :func:`~megatron_dlm.data.datasets.build_datasets`
builds exactly this plan and checks that megatron-core agrees with it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from megatron_dlm.config import ConfigError, DataConfig
from megatron_dlm.data.blend import Blend, split_blends
from megatron_dlm.data.budget import (
    SPLIT_NAMES,
    UniqueTokenBudget,
    proportional_shares,
    samples_per_epoch,
    select_budget_documents,
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
        documents: its documents in the indexed dataset (after the budget).
        tokens: tokens in those documents.
        samples_per_epoch: samples of one pass over them.
        draws_per_cycle: samples the stream draws from it per blend cycle; equals
            ``samples_per_epoch`` (a cycle is one epoch of every component) except for weighted
            blends without ``--unique-tokens``, where the weights set the mix.
        budget: the unique-token budget applied (training split with --unique-tokens only).
    """

    prefix: str
    weight: float | None
    documents: range
    tokens: int
    samples_per_epoch: int
    draws_per_cycle: int
    budget: UniqueTokenBudget | None = None

    def describe(self) -> str:
        weight = "" if self.weight is None else f"{self.weight:g} x "
        docs = f"{self.documents.start}-{self.documents.stop - 1}"
        return (
            f"{weight}{self.prefix} [documents {docs}: {self.tokens:,} tokens, "
            f"{self.samples_per_epoch:,} samples/epoch]"
        )


@dataclass(frozen=True)
class DatasetInfo:
    """What the training data is and how the compute budget replays it.

    Attributes:
        unique_documents: training documents in the unique set (all components).
        unique_tokens: tokens in them (exact, after the boundary rule).
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


def _budgets(blend: Blend, lengths: list, unique_tokens: int) -> list[UniqueTokenBudget]:
    """Each training component's budget: ``--unique-tokens`` split by weight (else by size)."""
    if len(blend.prefixes) == 1:
        shares = [unique_tokens]
    else:
        weights = blend.weights or [max(int(x.sum()), 1) for x in lengths]
        shares = proportional_shares(unique_tokens, weights)
    budgets = []
    for prefix, length, share in zip(blend.prefixes, lengths, shares):
        source = f"the training split of {prefix}"
        if len(blend.prefixes) > 1:
            source += f" (its share of the blend's budget: {share:,} tokens)"
        if share == 0:
            raise DatasetError(
                f"--unique-tokens {unique_tokens:,} gives {prefix} no tokens in the blend"
            )
        budgets.append(select_budget_documents(length, share, source=source))
    return budgets


def _plan_split(
    name: str,
    blend: Blend,
    split: str | None,
    summaries: dict[str, IndexFileSummary],
    data: DataConfig,
    seq_length: int,
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
        budgets = _budgets(blend, lengths, data.unique_tokens)
        ranges = [range(r.start, r.start + b.documents) for r, b in zip(ranges, budgets)]
    sizes, tokens = [], []
    for prefix, docs in zip(blend.prefixes, ranges):
        tokens.append(int(summaries[prefix].sequence_lengths[docs.start : docs.stop].sum()))
        sizes.append(samples_per_epoch(tokens[-1], seq_length))
        if sizes[-1] == 0:
            where = f"--split {split}" if split else blend.flag
            raise DatasetError(
                f"the {name} split of {prefix} ({where}) holds {tokens[-1]:,} tokens in "
                f"{len(docs):,} documents, fewer than one sample of --seq-length {seq_length} "
                f"+ 1: add data or change --split/--seq-length"
            )
    draws = sizes
    if blend.weights is not None and not (name == "train" and data.unique_tokens is not None):
        draws = [max(d, 1) for d in proportional_shares(sum(sizes), blend.weights)]
    return [
        ComponentInfo(
            prefix=prefix,
            weight=None if blend.weights is None else blend.weights[i],
            documents=ranges[i],
            tokens=tokens[i],
            samples_per_epoch=sizes[i],
            draws_per_cycle=draws[i],
            budget=budgets[i],
        )
        for i, prefix in enumerate(blend.prefixes)
    ]


def _check_disjoint(components: dict[str, list[ComponentInfo]]) -> None:
    """Validation and test documents never overlap the (budgeted) training documents."""
    train = [(os.path.realpath(c.prefix), c.documents) for c in components["train"]]
    for name in SPLIT_NAMES[1:]:
        for c in components.get(name, []):
            for path, docs in train:
                if path == os.path.realpath(c.prefix) and range(
                    max(docs.start, c.documents.start), min(docs.stop, c.documents.stop)
                ):
                    raise DatasetError(
                        f"the {name} documents {c.documents} of {c.prefix} overlap its training "
                        f"documents {docs}"
                    )


def plan_datasets(
    data: DataConfig,
    *,
    seq_length: int,
    train_samples: int,
    valid_samples: int = 0,
    test_samples: int = 0,
    summaries: dict[str, IndexFileSummary] | None = None,
) -> DatasetInfo:
    """Resolve flags, split, blend and budget into per-component document ranges and epochs.

    Args:
        data: the data section.
        seq_length: tokens per sample.
        train_samples: samples the compute budget consumes (> 0).
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
        planned = _plan_split(name, blends[name], split, summaries, data, seq_length)
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
        unique_documents=sum(len(c.documents) for c in train),
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
