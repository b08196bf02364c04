"""megatron-core's ``GPTDataset`` with the training split capped to a unique-token budget.

``BlendedMegatronDatasetBuilder`` hands each split of a prefix its contiguous range of
documents; :class:`BudgetedGPTDataset` keeps only the first documents of the *training* range
that hold the budget (:func:`~megatron_dlm.data.budget.select_budget_documents`) before
megatron-core builds its document, sample and shuffle indices. It is built for one epoch
(``num_samples=None``): epochs are replayed lazily by
:class:`~megatron_dlm.data.replay.EpochReplayDataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from megatron_dlm.data.budget import UniqueTokenBudget, select_budget_documents


@dataclass
class BudgetedGPTDatasetConfig(GPTDatasetConfig):
    """``GPTDatasetConfig`` plus this prefix's unique-token budget for its training split."""

    unique_tokens: int | None = None
    """Keep the first training documents holding this many tokens (None: the whole split)."""


class BudgetedGPTDataset(GPTDataset):
    """One pass over a split of one prefix; the training split capped to the budget.

    Args: as megatron-core's ``GPTDataset`` (the builder calls it); ``num_samples`` is None.

    Attributes:
        budget: the applied budget (training split with ``unique_tokens`` only, else None).
    """

    def __init__(
        self,
        indexed_dataset: IndexedDataset,
        dataset_path: str | None,
        indexed_indices: np.ndarray,
        num_samples: int | None,
        index_split: Split,
        config: BudgetedGPTDatasetConfig,
    ) -> None:
        self.budget: UniqueTokenBudget | None = None
        if index_split == Split.train and config.unique_tokens is not None:
            self.budget = select_budget_documents(
                indexed_dataset.sequence_lengths[indexed_indices],
                config.unique_tokens,
                source=f"the training split of {dataset_path}",
            )
            indexed_indices = indexed_indices[: self.budget.documents]
        super().__init__(
            indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config
        )

    @staticmethod
    def _key_config_attributes() -> list[str]:
        # The budget changes the training indices, so it is part of the cache key.
        return [*GPTDataset._key_config_attributes(), "unique_tokens"]

    @property
    def num_tokens(self) -> int:
        """Tokens in this split's (budgeted) documents."""
        return self._get_num_tokens_per_epoch()

    def document_ids(self, idx: int) -> np.ndarray:
        """The documents sample ``idx`` reads tokens from, without reading them.

        Returns:
            Document indices into the indexed dataset, shape ``[k]``, in reading order.
        """
        row = int(self.shuffle_index[idx])
        first = int(self.sample_index[row][0])
        last = int(self.sample_index[row + 1][0])
        return np.asarray(self.document_index[first : last + 1], dtype=np.int64)
