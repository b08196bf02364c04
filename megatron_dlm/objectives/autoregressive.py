"""Next-token prediction: the matched autoregressive baseline (causal attention)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from megatron_dlm.objectives.base import (
    Objective,
    PreparedBatch,
    Report,
    require_keys,
    score_tokens,
)
from megatron_dlm.objectives.noise import input_mask

BATCH_KEYS = ("tokens", "labels", "position_ids", "loss_mask")


class AutoregressiveObjective(Objective):
    """``--objective ar``: cross-entropy of ``labels`` (the next tokens) where ``loss_mask``.

    ``--dlm-*`` options do not apply (no truncation: a causal model sees every prefix
    length anyway). ``--input-mask-prob`` hides inputs while training; it needs the batch's
    ``sample_id`` and ``epoch`` to key the noise.
    """

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
        require_keys(batch, BATCH_KEYS, "--objective ar")
        tokens = batch["tokens"]
        loss_mask = (batch["loss_mask"] > 0).float()
        inputs = tokens
        if training and self.cfg.input_mask_prob > 0:
            require_keys(batch, ("sample_id", "epoch"), "--input-mask-prob")
            hidden = input_mask(
                self.seed,
                batch["sample_id"].cpu().numpy(),
                batch["epoch"].cpu().numpy(),
                loss_mask.cpu().numpy() > 0,
                self.cfg.input_mask_prob,
            )
            inputs = torch.where(torch.from_numpy(hidden).to(tokens.device), self.mask_id, tokens)
        return PreparedBatch(
            inputs=inputs,
            position_ids=batch["position_ids"],
            targets=batch["labels"],
            loss_mask=loss_mask,
            loss_weights=loss_mask,
        )

    def loss(
        self, logits: torch.Tensor, prepared: PreparedBatch
    ) -> tuple[torch.Tensor, torch.Tensor, Report]:
        """``lm loss`` is the next-token CE per loss token; ``accuracy`` over loss tokens."""
        loss_sum, num_tokens, shared = score_tokens(logits, prepared)
        return loss_sum, num_tokens, {"lm loss": shared["lm loss"], "accuracy": shared["accuracy"]}
