"""What every objective shares: the prepared micro-batch, the interface, the scoring.

The trainer drives an objective in two calls per micro-batch, following megatron-core's
``forward_step`` contract::

    prepared = objective.prepare(batch, training=True, iteration=it, microbatch=m, ...)
    logits = model(prepared.inputs, prepared.position_ids, attention_mask=None)
    return logits, functools.partial(objective.loss, prepared=prepared)
    # megatron-core calls loss(logits) -> (loss_sum, num_tokens, report)

``prepare`` is a pure function of the batch and the keys it is given (no communication, no
global RNG); ``loss`` runs on the last pipeline stage, collectively over the TP group.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from megatron_dlm.config.objective import ObjectiveConfig
from megatron_dlm.objectives.vocab_parallel import token_cross_entropy, vocab_parallel_argmax

Report = dict[str, torch.Tensor]
"""Metric name -> fp32 tensor ``[2]`` = (sum, count) over this micro-batch's tokens/samples.

Reduce by summing the tensors over micro-batches and data-parallel (and context-parallel)
ranks, then divide: ``value = total[0] / total[1]``. Sums, not means, so the reduction is exact
whatever the micro-batch sizes and the parallel layout.
"""


@dataclass
class PreparedBatch:
    """One micro-batch as the model reads it and the loss scores it (batch-first ``[b, s]``).

    Attributes:
        inputs: int64 ``[b, s]``, the model's input ids (noised/masked tokens).
        position_ids: int64 ``[b, s]``.
        targets: int64 ``[b, s]``, the id to predict at each position (DLM: the clean token
            at the same position; AR: the next token).
        loss_mask: fp32 ``[b, s]``, 1 on loss tokens: they count in ``num_tokens``, the
            normaliser of the loss.
        loss_weights: fp32 ``[b, s]``, weight of each position's cross-entropy in
            ``loss_sum``; positive exactly at the scored positions (DLM: the masked tokens;
            AR: the loss tokens).
        t: fp32 ``[b]``, the masking ratio of each sequence (DLM), or None (AR).

    With context parallelism, split every ``[b, s]`` field along dim 1 like the model's
    inputs; ``t`` stays whole (the loss weights were computed on the full sequence).
    """

    inputs: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    loss_weights: torch.Tensor
    t: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PreparedBatch:
        """A copy on ``device`` (pinned CPU memory + ``non_blocking`` overlaps the copy)."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None
            },
        )

    @property
    def seq_length(self) -> int:
        return self.inputs.shape[1]


def score_tokens(
    logits: torch.Tensor, prepared: PreparedBatch
) -> tuple[torch.Tensor, torch.Tensor, Report]:
    """Weighted cross-entropy over vocab-parallel logits, and the shared metrics.

    Args:
        logits: ``[b, s, V/TP]``, this TP rank's vocabulary shard (GPTModel's output); any
            dtype, the loss is computed in fp32. fp32 logits are overwritten in place.
        prepared: the micro-batch's targets and weights.

    Returns:
        ``loss_sum`` (fp32 scalar, differentiable): sum of ``loss_weights * CE``;
        ``num_tokens`` (int32 scalar): the number of loss tokens;
        report with ``lm loss`` (loss_sum, num_tokens), ``ce`` and ``accuracy`` over the
        scored positions (sum, number of scored positions).
    """
    if logits.shape[:2] != prepared.targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match the batch {tuple(prepared.targets.shape)}"
            " (expected [b, s, V/TP])"
        )
    targets = prepared.targets.to(logits.device)
    weights = prepared.loss_weights.to(logits.device)
    scored = weights > 0
    # The argmax first: the cross-entropy kernel overwrites fp32 logits in place.
    correct = (vocab_parallel_argmax(logits.detach()) == targets) & scored
    ce = token_cross_entropy(logits, targets)
    loss_sum = (ce * weights).sum()
    num_tokens = prepared.loss_mask.to(logits.device).sum().to(torch.int)
    n_scored = scored.sum().float()
    with torch.no_grad():
        report = {
            "lm loss": torch.stack([loss_sum.detach(), num_tokens.float()]),
            "ce": torch.stack([(ce.detach() * scored).sum(), n_scored]),
            "accuracy": torch.stack([correct.sum().float(), n_scored]),
        }
    return loss_sum, num_tokens, report


class Objective(ABC):
    """A training objective: turns data batches into model inputs and logits into a loss.

    Args:
        cfg: the objective's configuration.
        mask_id: id of the mask token (from the tokenizer).
        seed: the run's seed; all noise derives from it.
        length_multiple: what a (randomly truncated) sequence length must be a multiple of:
            the TP size with sequence parallelism, 2 x CP with context parallelism, else 1.
    """

    def __init__(
        self, cfg: ObjectiveConfig, *, mask_id: int, seed: int, length_multiple: int = 1
    ) -> None:
        if mask_id < 0:
            raise ValueError(f"the mask token id must be a vocabulary id, got {mask_id}")
        if length_multiple < 1:
            raise ValueError(f"length_multiple must be at least 1, got {length_multiple}")
        self.cfg = cfg
        self.mask_id = mask_id
        self.seed = seed
        self.length_multiple = length_multiple

    def sequence_length(self, seq_length: int, *, iteration: int, microbatch: int) -> int:
        """Length of training micro-batch ``microbatch`` of ``iteration`` (after truncation).

        Every rank computes the same value; pipeline stages that get no batch use it for
        their activation shapes.
        """
        return seq_length

    @abstractmethod
    def prepare(
        self,
        batch: Mapping[str, torch.Tensor],
        *,
        training: bool,
        iteration: int = 0,
        microbatch: int = 0,
        global_positions: torch.Tensor | None = None,
        global_batch_size: int | None = None,
    ) -> PreparedBatch:
        """Model inputs and loss targets for one micro-batch (CPU, deterministic).

        Args:
            batch: ``tokens``, ``labels``, ``position_ids`` int64 ``[b, s]``, ``loss_mask``
                float ``[b, s]``, ``sample_id`` and ``epoch`` int64 ``[b]``.
            training: training (noise keyed by sample and epoch, regularisers and truncation
                on) or validation (noise keyed by sample only, no regulariser).
            iteration: the training iteration (keys stratification and truncation).
            microbatch: the micro-batch's index within the iteration (keys truncation).
            global_positions: int64 ``[b]``, each sample's position in the global batch
                (needed by ``--dlm-stratified-t``).
            global_batch_size: the global batch size B (with ``global_positions``).
        """

    @abstractmethod
    def loss(
        self, logits: torch.Tensor, prepared: PreparedBatch
    ) -> tuple[torch.Tensor, torch.Tensor, Report]:
        """``(loss_sum, num_tokens, report)`` for megatron-core's per-token loss.

        Args:
            logits: ``[b, s, V/TP]`` vocab-parallel logits.
            prepared: what :meth:`prepare` returned for this micro-batch.
        """


def require_keys(batch: Mapping[str, torch.Tensor], keys: tuple[str, ...], what: str) -> None:
    missing = [key for key in keys if key not in batch]
    if missing:
        raise KeyError(f"{what} needs batch keys {', '.join(missing)}; got {sorted(batch)}")
