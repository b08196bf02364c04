"""megatron-core's ``GPTDataset`` with the training split capped to a unique-token budget.

``BlendedMegatronDatasetBuilder`` hands each split of a prefix its contiguous range of
documents; :class:`BudgetedGPTDataset` keeps only the documents of the *training* range that
hold the budget (:func:`~megatron_dlm.data.budget.select_budget_documents`: a seeded random
draw or the first documents, the boundary document cut or whole) before megatron-core builds
its document, sample and shuffle indices. A cut document is exposed through
:class:`CutDocuments`, so that megatron-core's token counts, sample index and reads all see
only its kept tokens. It is built for one epoch (``num_samples=None``): epochs are replayed
lazily by :class:`~megatron_dlm.data.replay.EpochReplayDataset`, either over these windows or
over the new windows :meth:`BudgetedGPTDataset.recut` cuts for each epoch.
"""

from __future__ import annotations

import copy
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
    """Keep training documents holding this many tokens (None: the whole split)."""
    unique_tokens_sample: str = "random"
    """How to draw them: ``random`` (keyed by ``random_seed`` and ``budget_component``) or
    ``first``."""
    unique_tokens_boundary: str = "cut"
    """The boundary document: ``cut`` (the count is exact) or ``whole``."""
    budget_component: int = 0
    """This prefix's position in the training blend (keys its random draw)."""


class CutDocuments:
    """An ``IndexedDataset`` whose listed documents end early (a budget's boundary document).

    megatron-core's ``GPTDataset`` reads document lengths from ``sequence_lengths`` and tokens
    through ``get(idx, offset, length)``, where ``length=None`` means "to the end of the
    document": both stop at the cut here. Everything else is the wrapped dataset's.

    Args:
        dataset: the indexed dataset.
        cuts: ``{document: tokens kept}`` (its first tokens).
    """

    def __init__(self, dataset: IndexedDataset, cuts: dict[int, int]) -> None:
        self._dataset = dataset
        self.cuts = dict(cuts)
        self.sequence_lengths = np.array(dataset.sequence_lengths, dtype=np.int32)
        for document, kept in self.cuts.items():
            if not 0 < kept <= self.sequence_lengths[document]:
                raise ValueError(f"cannot keep {kept} tokens of document {document}")
            self.sequence_lengths[document] = kept

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Tokens ``[offset, offset + length)`` of document ``idx``, within its kept tokens."""
        end = int(self.sequence_lengths[idx])
        if length is None:
            length = end - offset
        if offset < 0 or offset + length > end:
            raise IndexError(f"tokens {offset}..{offset + length} outside document {idx} ({end})")
        return self._dataset.get(idx, offset=offset, length=length)

    def __len__(self) -> int:
        return len(self._dataset)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not yet set (unpickling) or private: never delegate
            raise AttributeError(name)
        return getattr(self._dataset, name)


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
                sample=config.unique_tokens_sample,
                boundary=config.unique_tokens_boundary,
                seed=config.random_seed,
                component=config.budget_component,
                source=f"the training split of {dataset_path}",
            )
            boundary = int(indexed_indices[self.budget.boundary_document])
            indexed_indices = indexed_indices[self.budget.selected]
            if self.budget.is_cut:
                indexed_dataset = CutDocuments(
                    indexed_dataset, {boundary: self.budget.boundary_tokens}
                )
        super().__init__(
            indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config
        )
        self._num_tokens = self._get_num_tokens_per_epoch()

    @staticmethod
    def _key_config_attributes() -> list[str]:
        # The budget changes the training indices, so it is part of the cache key.
        return [
            *GPTDataset._key_config_attributes(),
            "unique_tokens",
            "unique_tokens_sample",
            "unique_tokens_boundary",
            "budget_component",
        ]

    @property
    def num_tokens(self) -> int:
        """Tokens in this split's (budgeted) documents."""
        return self._num_tokens

    def recut(self, rng: np.random.Generator) -> BudgetedGPTDataset:
        """The same documents in a new order, cut into new windows (one epoch).

        megatron-core's pattern for one epoch: the document order is a permutation of the
        documents (drawn from ``rng``) and its sample index comes from megatron-core's
        ``build_sample_idx``, so the windows never span the epoch's end and their number,
        ``(tokens - 1) // seq_length``, is that of every other cut. Windows are exposed in cut
        order (the caller shuffles them).

        Returns:
            A shallow copy of this dataset sharing its tokens, with the new document and sample
            indices (``recut(rng)[i]`` is window ``i``).
        """
        from megatron.core.datasets import helpers

        documents = rng.permutation(np.asarray(self.indices, dtype=np.int32))
        sample_index = helpers.build_sample_idx(
            self.dataset.sequence_lengths,
            documents,
            self.config.sequence_length,
            1,
            self.num_tokens,
            True,
            self.config.add_extra_token_to_sequence,
        )
        view = copy.copy(self)
        view.document_index = documents
        view.sample_index = sample_index
        view.shuffle_index = range(len(sample_index) - 1)  # identity: cut order
        if len(view) != len(self):
            raise RuntimeError(f"a re-cut epoch has {len(view)} windows, the first {len(self)}")
        return view

    def index_nbytes(self) -> int:
        """Bytes of this dataset's document and sample indices."""
        return sum(
            a.nbytes for a in (self.document_index, self.sample_index) if hasattr(a, "nbytes")
        )

    def document_ids(self, idx: int) -> np.ndarray:
        """The documents sample ``idx`` reads tokens from, without reading them.

        Returns:
            Document indices into the indexed dataset, shape ``[k]``, in reading order.
        """
        row = int(self.shuffle_index[idx])
        first = int(self.sample_index[row][0])
        last = int(self.sample_index[row + 1][0])
        return np.asarray(self.document_index[first : last + 1], dtype=np.int64)
