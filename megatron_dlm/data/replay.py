"""Exact, O(one epoch) epoch replay over one-epoch datasets, and lazy blending.

megatron-core's ``GPTDataset`` asked for E epochs of samples tiles its document index E times and
shuffles across the epoch boundaries: its indices grow linearly with E and a sample can come
twice before another comes once. Here each component is a *one-epoch* dataset of ``N_c`` samples
and the stream is computed on demand:

* **Blend cycle.** Global position ``g`` falls in cycle ``g // L`` at offset ``g % L``; a cycle of
  ``L = sum(n_c)`` positions draws ``n_c`` samples from component ``c``, interleaved by
  megatron-core's ``build_exhaustive_blending_indices`` (the mix is even at every scale). The
  ``k``-th draw from component ``c`` is ``k = cycle * n_c + (draws of c before the offset)``.
* **Epochs.** Draw ``k`` of component ``c`` is in its epoch ``e = k // N_c`` at position
  ``k % N_c``; epoch ``e`` visits ``N_c`` windows in the order of a permutation seeded by
  ``(seed, c, e)``, computed when the epoch is first touched and kept for that epoch only.
* **Windows** (training). ``recut``: epoch ``e`` first cuts its own windows, from the
  component's documents in an order seeded by ``(seed, c, e)``
  (:meth:`~megatron_dlm.data.gpt_dataset.BudgetedGPTDataset.recut`), so every epoch trains on
  new windows of the same documents, as Megatron-LM's multi-epoch ``GPTDataset`` does; a cut
  of ``T`` tokens always gives ``N_c = (T - 1) // seq_length`` windows and drops the rest, so
  no window crosses an epoch boundary. ``fixed``: every epoch replays the component's own
  one-epoch windows.

With ``n_c = N_c`` (single datasets, unweighted blends, and weighted blends under
``--unique-tokens``) a cycle is exactly one epoch of every component. Memory: the cycle
(``10 L`` bytes, none for one component) plus, per component and data-loader worker, one
permutation (``4-8 N_c`` bytes) and with ``recut`` one epoch's document and sample indices
(``4 D_c + 8 N_c`` bytes), whatever the number of epochs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

_EPOCH_STREAM = 0x6570_6F63  # "epoc": keeps these permutations apart from other uses of the seed
_RECUT_STREAM = 0x6375_7473  # "cuts": the document order of a re-cut epoch


def epoch_permutation(seed: int, component: int, epoch: int, size: int) -> np.ndarray:
    """The order in which epoch ``epoch`` of component ``component`` visits its samples.

    Returns:
        A permutation of ``range(size)``, shape ``[size]`` (int32 when it fits, else int64).
    """
    entropy = [_EPOCH_STREAM, seed, component, epoch]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
    order = rng.permutation(size)
    return order.astype(np.int32) if size < 2**31 else order


def recut_generator(seed: int, component: int, epoch: int) -> np.random.Generator:
    """The generator that orders the documents of epoch ``epoch`` of component ``component``
    under ``--epoch-windows recut`` (numpy PCG64 keyed by ``(seed, component, epoch)``)."""
    entropy = [_RECUT_STREAM, seed, component, epoch]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


@dataclass(frozen=True)
class StreamPosition:
    """Where global position ``g`` of the stream lands.

    Attributes:
        component: blend component index.
        index: the window's index in that component's one-epoch dataset (``fixed`` windows,
            validation) or in this epoch's cut (``recut``).
        sample_id: ``index`` offset by the sizes of the earlier components (unique in the blend
            and, with ``recut``, within the epoch; ``(sample_id, epoch)`` is unique in the run).
        epoch: how many times this component's samples were all visited before (its epoch).
    """

    component: int
    index: int
    sample_id: int
    epoch: int


class EpochReplayDataset(torch.utils.data.Dataset):
    """A stream of ``num_samples`` samples replaying one-epoch datasets epoch by epoch.

    Each item is the component's sample dict (megatron-core ``GPTDataset``: ``tokens``,
    ``labels``, ``position_ids`` int64 ``[seq_length]``, ``loss_mask`` float32 ``[seq_length]``)
    plus ``sample_id`` and ``epoch``, int64 scalars.

    Args:
        components: one-epoch datasets (``len(c) = N_c > 0``); with ``windows="recut"``, ones
            with a ``recut(rng)`` method returning a re-cut dataset of the same length
            (:class:`~megatron_dlm.data.gpt_dataset.BudgetedGPTDataset`).
        num_samples: length of the stream.
        seed: seeds the per-epoch permutations and document orders.
        draws_per_cycle: ``n_c`` per component (default ``N_c``: a cycle is one epoch of each).
        reshuffle: permute every epoch (training). Without it (validation, test) the stream
            repeats the components' own order and reports ``epoch = 0``, so a sample's noise
            depends on the sample only.
        windows: ``recut`` (new windows every epoch) or ``fixed`` (the components' windows);
            only with ``reshuffle``.
    """

    def __init__(
        self,
        components: Sequence[torch.utils.data.Dataset],
        *,
        num_samples: int,
        seed: int,
        draws_per_cycle: Sequence[int] | None = None,
        reshuffle: bool = True,
        windows: Literal["recut", "fixed"] = "recut",
    ) -> None:
        self.components = list(components)
        self.sizes = [len(c) for c in self.components]
        if not self.components or min(self.sizes) <= 0:
            raise ValueError(f"every component needs at least one sample, got sizes {self.sizes}")
        self.draws = list(draws_per_cycle) if draws_per_cycle is not None else list(self.sizes)
        if len(self.draws) != len(self.sizes) or min(self.draws) <= 0:
            raise ValueError(f"draws_per_cycle must be positive, one per component: {self.draws}")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if windows not in ("recut", "fixed"):
            raise ValueError(f"windows must be recut or fixed, got {windows!r}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.reshuffle = reshuffle
        self.recut = reshuffle and windows == "recut"
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.cycle_length = int(sum(self.draws))
        self._cycle_component: np.ndarray | None = None
        self._cycle_draw: np.ndarray | None = None
        if len(self.components) > 1:
            from megatron.core.datasets import helpers

            self._cycle_component = np.zeros(self.cycle_length, dtype=np.int16)
            self._cycle_draw = np.zeros(self.cycle_length, dtype=np.int64)
            helpers.build_exhaustive_blending_indices(
                self._cycle_component,
                self._cycle_draw,
                np.asarray(self.draws, dtype=np.int64),
                len(self.components),
            )
        self._orders: dict[int, tuple[int, np.ndarray]] = {}
        self._cuts: dict[int, tuple[int, torch.utils.data.Dataset]] = {}

    @property
    def samples_per_epoch(self) -> int:
        """Samples in one pass over every component (the unique set)."""
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.num_samples

    def index_nbytes(self) -> int:
        """Bytes of replay state held now: the blend cycle, the cached epoch permutations and
        (``recut``) the current epochs' document and sample indices; independent of the number
        of epochs (the components' own one-epoch indices come on top)."""
        cycle = sum(a.nbytes for a in (self._cycle_component, self._cycle_draw) if a is not None)
        cuts = sum(view.index_nbytes() for _, view in self._cuts.values())
        return cycle + cuts + sum(order.nbytes for _, order in self._orders.values())

    def position(self, g: int) -> StreamPosition:
        """Resolve global position ``g`` without reading any tokens."""
        if not 0 <= g < self.num_samples:
            raise IndexError(f"position {g} outside the stream of {self.num_samples} samples")
        cycle, offset = divmod(int(g), self.cycle_length)
        if self._cycle_component is None:
            component, draw = 0, int(g)
        else:
            component = int(self._cycle_component[offset])
            draw = cycle * self.draws[component] + int(self._cycle_draw[offset])
        epoch, rank = divmod(draw, self.sizes[component])
        if self.reshuffle:
            index = int(self._order(component, epoch)[rank])
        else:
            index, epoch = rank, 0
        return StreamPosition(component, index, int(self.offsets[component]) + index, epoch)

    def _order(self, component: int, epoch: int) -> np.ndarray:
        cached = self._orders.get(component)
        if cached is None or cached[0] != epoch:
            cached = (epoch, epoch_permutation(self.seed, component, epoch, self.sizes[component]))
            self._orders[component] = cached  # the current epoch only: memory O(N_c)
        return cached[1]

    def epoch_windows(self, component: int, epoch: int) -> torch.utils.data.Dataset:
        """The windows epoch ``epoch`` of ``component`` draws from (its own cut with ``recut``;
        the component itself otherwise). Only the current epoch's cut is kept."""
        if not self.recut:
            return self.components[component]
        cached = self._cuts.get(component)
        if cached is None or cached[0] != epoch:
            self._cuts.pop(component, None)  # free the previous cut before making the next
            view = self.components[component].recut(recut_generator(self.seed, component, epoch))
            cached = (epoch, view)
            self._cuts[component] = cached
        return cached[1]

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        where = self.position(g)
        sample = dict(self.epoch_windows(where.component, where.epoch)[where.index])
        sample["sample_id"] = torch.tensor(where.sample_id, dtype=torch.int64)
        sample["epoch"] = torch.tensor(where.epoch, dtype=torch.int64)
        return sample
