"""Training, validation and test datasets from a :class:`DataConfig`, and their data loaders.

    splits = build_datasets(cfg.data, seq_length=2048, seed=1234, tokenizer=tokenizer,
                            train_samples=train_iters * global_batch, valid_samples=...,
                            test_samples=0)
    loader = build_data_loader(splits.train, consumed_samples=state.consumed_samples,
                               micro_batch_size=4, data_parallel_rank=r,
                               data_parallel_size=dp, num_workers=2)

:func:`~megatron_dlm.data.plan.plan_datasets` decides which documents each split uses; each
prefix is then built by megatron-core's ``BlendedMegatronDatasetBuilder`` as a one-epoch
:class:`~megatron_dlm.data.gpt_dataset.BudgetedGPTDataset` per split (rank 0 builds and caches
the indices, the other ranks load them), and
:class:`~megatron_dlm.data.replay.EpochReplayDataset` blends the prefixes and replays epochs
lazily, re-cutting each epoch's windows (``--epoch-windows recut``) or replaying one cut
(``fixed``). Rules: docs/datasets.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

from megatron_dlm.config import DataConfig
from megatron_dlm.data.blend import split_blends
from megatron_dlm.data.budget import SPLIT_NAMES
from megatron_dlm.data.dataset_checks import validate_dataset_against_tokenizer
from megatron_dlm.data.gpt_dataset import BudgetedGPTDataset, BudgetedGPTDatasetConfig
from megatron_dlm.data.plan import ComponentInfo, DatasetInfo, plan_datasets
from megatron_dlm.data.replay import EpochReplayDataset
from megatron_dlm.data.sampler import PretrainingSampler

logger = logging.getLogger(__name__)


@dataclass
class DatasetSplits:
    """The datasets of a run (None where a split is absent or not asked for) and their info."""

    train: EpochReplayDataset | None
    valid: EpochReplayDataset | None
    test: EpochReplayDataset | None
    info: DatasetInfo


def build_datasets(
    data: DataConfig,
    *,
    seq_length: int,
    seed: int,
    tokenizer,
    train_samples: int,
    valid_samples: int,
    test_samples: int,
) -> DatasetSplits:
    """Build the datasets of a run; collective: call on every rank (or in a single process).

    Args:
        data: the data section (paths, --split, --unique-tokens, cache, mmap, eod mask).
        seq_length: tokens per sample.
        seed: seeds the unique-token draw, megatron-core's one-epoch shuffle and the per-epoch
            permutations and cuts.
        tokenizer: ``vocab_size``, ``eod``, ``pad`` and ``unique_identifiers`` (a
            ``DLMTokenizer`` or megatron-core ``MegatronTokenizer``).
        train_samples: samples the compute budget consumes (train iters x global batch).
        valid_samples: validation samples per evaluation (0: no validation dataset).
        test_samples: test samples (0: no test dataset).

    Returns:
        :class:`DatasetSplits`; items are dicts ``tokens``/``labels``/``position_ids`` (int64
        ``[seq_length]``), ``loss_mask`` (float32 ``[seq_length]``), ``sample_id`` and
        ``epoch`` (int64 scalars).

    Raises:
        ConfigError: contradictory or missing data flags.
        DatasetError: a missing, corrupt or empty dataset, one the tokenizer cannot have
            written, or a split too small for one sample.
        BudgetError: --unique-tokens larger than the training data.
    """
    # Every check runs on every rank before the builder's collectives, so that a bad input
    # raises the same error everywhere instead of leaving ranks waiting in a barrier.
    blends, split = split_blends(data)
    summaries = {}
    for blend in filter(None, blends.values()):
        for prefix in blend.prefixes:
            if prefix not in summaries:
                summaries[prefix] = validate_dataset_against_tokenizer(
                    prefix, tokenizer, flag=blend.flag
                )
    info = plan_datasets(
        data,
        seq_length=seq_length,
        train_samples=train_samples,
        seed=seed,
        valid_samples=valid_samples,
        test_samples=test_samples,
        summaries=summaries,
    )
    built = _build_components(data, split, info, seq_length, seed, tokenizer)
    wanted = {"train": train_samples, "valid": valid_samples, "test": test_samples}
    datasets: dict[str, EpochReplayDataset | None] = dict.fromkeys(SPLIT_NAMES)
    for name, parts in built.items():
        datasets[name] = EpochReplayDataset(
            parts,
            num_samples=wanted[name],
            seed=seed,
            draws_per_cycle=[c.draws_per_cycle for c in info.components[name]],
            reshuffle=name == "train",
            windows=data.epoch_windows,
        )
    _log_info(info, data)
    return DatasetSplits(info=info, **datasets)


def _dataset_config(
    data: DataConfig,
    *,
    seq_length: int,
    seed: int,
    tokenizer,
    unique_tokens: int | None,
    component: int,
    **blend,
) -> BudgetedGPTDatasetConfig:
    return BudgetedGPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        path_to_cache=data.data_cache_path,
        mmap_bin_files=data.mmap_bin_files,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=data.eod_mask_loss,
        create_attention_mask=False,
        unique_tokens=unique_tokens,
        unique_tokens_sample=data.unique_tokens_sample,
        unique_tokens_boundary=data.unique_tokens_boundary,
        budget_component=component,
        **blend,
    )


def _build_prefix(config: BudgetedGPTDatasetConfig) -> list[BudgetedGPTDataset | None]:
    """One-epoch datasets of one prefix, [train, valid, test] (collective over ranks)."""
    builder = BlendedMegatronDatasetBuilder(
        BudgetedGPTDataset, [None, None, None], lambda: True, config
    )
    return builder.build()


def _build_components(
    data: DataConfig,
    split: str | None,
    info: DatasetInfo,
    seq_length: int,
    seed: int,
    tokenizer,
) -> dict[str, list[BudgetedGPTDataset]]:
    """Run megatron-core's builder once per prefix (and split, with per-split paths)."""
    common = dict(seq_length=seq_length, seed=seed, tokenizer=tokenizer)
    built: dict[str, list[BudgetedGPTDataset]] = {name: [] for name in info.components}
    if split is not None:  # --data-path: one builder call gives every split of a prefix
        for i, component in enumerate(info.components["train"]):
            budget = component.budget
            config = _dataset_config(
                data,
                unique_tokens=budget.requested_tokens if budget else None,
                component=i,
                blend=([component.prefix], None),
                split=split,
                **common,
            )
            per_split = dict(zip(SPLIT_NAMES, _build_prefix(config)))
            for name in built:
                built[name].append(per_split[name])
    else:  # per-split paths: one builder call per prefix and split
        for name, components in info.components.items():
            index = SPLIT_NAMES.index(name)
            for i, component in enumerate(components):
                budget = component.budget
                blend_per_split = [None] * len(SPLIT_NAMES)
                blend_per_split[index] = ([component.prefix], None)
                config = _dataset_config(
                    data,
                    unique_tokens=budget.requested_tokens if budget else None,
                    component=i,
                    blend_per_split=blend_per_split,
                    **common,
                )
                built[name].append(_build_prefix(config)[index])
    for name, datasets in built.items():
        for dataset, planned in zip(datasets, info.components[name]):
            _check_agrees(name, dataset, planned)
    return built


def _check_agrees(name: str, dataset: BudgetedGPTDataset, planned: ComponentInfo) -> None:
    """megatron-core built what the plan says (documents, tokens and samples)."""
    if (
        not np.array_equal(np.asarray(dataset.indices), planned.document_ids)
        or dataset.num_tokens != planned.tokens
        or len(dataset) != planned.samples_per_epoch
    ):
        raise RuntimeError(
            f"megatron-core built the {name} split of {planned.prefix} from "
            f"{len(dataset.indices):,} documents ({dataset.num_tokens:,} tokens, {len(dataset)} "
            f"samples), planned {planned.describe()}: this megatron-core splits differently"
        )


def _log_info(info: DatasetInfo, data: DataConfig) -> None:
    for name, parts in info.components.items():
        for c in parts:
            logger.info("%s data: %s", name, c.describe())
    budgets = [c.budget for c in info.components["train"] if c.budget is not None]
    unique = f"{info.unique_tokens:,} tokens in {info.unique_documents:,} documents"
    if len(budgets) == 1:
        unique = f"--unique-tokens {data.unique_tokens:,} -> {budgets[0].describe()}"
    elif budgets:
        cut = sum(b.is_cut for b in budgets)
        how = "drawn at random" if data.unique_tokens_sample == "random" else "the first ones"
        unique = (
            f"--unique-tokens {data.unique_tokens:,} -> {unique} of {len(budgets)} blend "
            f"components, {how}, {cut} boundary document(s) cut"
        )
    windows = "windows re-cut every epoch" if data.epoch_windows == "recut" else "fixed windows"
    logger.info(
        "unique set: %s; %s samples/epoch, %s; %s training samples = %.3f epochs",
        unique,
        f"{info.samples_per_epoch:,}",
        windows,
        f"{info.train_samples:,}",
        info.epochs,
    )


def build_data_loader(
    dataset: torch.utils.data.Dataset,
    *,
    consumed_samples: int,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
    num_workers: int,
) -> torch.utils.data.DataLoader:
    """This rank's micro-batches of ``dataset``, starting after ``consumed_samples`` (global).

    Batches are the default collation of the sample dicts: ``tokens``, ``labels``,
    ``position_ids`` int64 ``[b, s]``, ``loss_mask`` float32 ``[b, s]``, ``sample_id`` and
    ``epoch`` int64 ``[b]``, with ``b = micro_batch_size``. The same positions give the same
    batches with any ``num_workers``.
    """
    sampler = PretrainingSampler(
        total_samples=len(dataset),
        consumed_samples=consumed_samples,
        micro_batch_size=micro_batch_size,
        data_parallel_rank=data_parallel_rank,
        data_parallel_size=data_parallel_size,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        # The loader draws its workers' base seed from this generator, not from torch's global
        # one: creating a loader (e.g. after a resume) must not shift the training RNG stream.
        generator=torch.Generator().manual_seed(consumed_samples),
    )
