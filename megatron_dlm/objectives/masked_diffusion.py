"""Masked diffusion (MDLM/LLaDA): mask tokens with probability t, predict them, weight by 1/t.

For a sequence x with loss tokens L, the training loss of one sample is

    loss_sum(x) = sum over masked positions i of w * CE(model(x_t)_i, x_i)

with t ~ U[eps, 1), each loss token masked independently with probability t, and w = 1/t
(``inv_t``, the ELBO weight) or ``|L| / |masked|`` (``realised``). The trainer divides by
the number of loss tokens in the global batch. In expectation (eps -> 0), ``inv_t`` gives
exactly the any-order autoregressive bound sum_m (1/m) E_{|M|=m}[sum_{i in M} CE_i], an upper
bound on -log p_model(x) that is tight for exact conditionals; ``realised`` gives |L|/(|L|+1)
times that bound (the m = 0 draws weigh nothing), see docs/objectives.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from megatron_dlm.objectives.base import (
    Objective,
    PreparedBatch,
    Report,
    require_keys,
    score_tokens,
)
from megatron_dlm.objectives.noise import (
    diffusion_loss_weights,
    input_mask,
    mask_tokens,
    masking_ratios,
    token_uniforms,
)
from megatron_dlm.objectives.truncation import random_length

BATCH_KEYS = ("tokens", "position_ids", "loss_mask", "sample_id")


class MaskedDiffusionObjective(Objective):
    """``--objective dlm``: the masked-diffusion ELBO (bidirectional attention)."""

    def sequence_length(self, seq_length: int, *, iteration: int, microbatch: int) -> int:
        return random_length(
            seq_length,
            prob=self.cfg.dlm_random_length_prob,
            seed=self.seed,
            iteration=iteration,
            microbatch=microbatch,
            multiple=self.length_multiple,
        )

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
        cfg = self.cfg
        require_keys(batch, BATCH_KEYS + (("epoch",) if training else ()), "--objective dlm")
        tokens, position_ids = batch["tokens"], batch["position_ids"]
        loss_mask = batch["loss_mask"]
        if training:
            length = self.sequence_length(
                tokens.shape[1], iteration=iteration, microbatch=microbatch
            )
            tokens, position_ids = tokens[:, :length], position_ids[:, :length]
            loss_mask = loss_mask[:, :length]

        sample_id = batch["sample_id"].cpu().numpy()
        epoch = batch["epoch"].cpu().numpy() if training else np.zeros_like(sample_id)
        loss_tokens = loss_mask.cpu().numpy() > 0
        stratify = None
        if training and cfg.dlm_stratified_t:
            if global_positions is None or global_batch_size is None:
                raise ValueError(
                    "--dlm-stratified-t needs each sample's global batch position and the "
                    "global batch size"
                )
            stratify = (iteration, global_positions.cpu().numpy(), global_batch_size)
        t = masking_ratios(
            self.seed, sample_id, epoch, eps=cfg.dlm_eps, training=training, stratify=stratify
        )
        u = token_uniforms(self.seed, sample_id, epoch, tokens.shape[1], training=training)
        masked = mask_tokens(u, t, loss_tokens, at_least_one=cfg.dlm_at_least_one_mask)
        weights = diffusion_loss_weights(masked, loss_tokens, t, cfg.dlm_loss_weight)
        hidden = masked
        if training and cfg.input_mask_prob > 0:
            # Hide some unmasked context too; the loss stays on the diffusion-masked tokens.
            candidates = loss_tokens & ~masked
            hidden = masked | input_mask(
                self.seed, sample_id, epoch, candidates, cfg.input_mask_prob
            )

        device = tokens.device
        return PreparedBatch(
            inputs=torch.where(torch.from_numpy(hidden).to(device), self.mask_id, tokens),
            position_ids=position_ids,
            targets=tokens,
            loss_mask=torch.from_numpy(loss_tokens.astype(np.float32)).to(device),
            loss_weights=torch.from_numpy(weights).to(device),
            t=torch.from_numpy(t.astype(np.float32)).to(device),
        )

    def loss(
        self, logits: torch.Tensor, prepared: PreparedBatch
    ) -> tuple[torch.Tensor, torch.Tensor, Report]:
        """``lm loss`` is the objective (per loss token); ``masked ce`` and ``masked accuracy``
        are over masked tokens; ``mean t`` and ``masked fraction`` over loss tokens (so rows
        without loss tokens do not count, and a context-parallel split stays exact)."""
        loss_sum, num_tokens, shared = score_tokens(logits, prepared)
        n_masked = shared["ce"][1]
        loss_tokens = prepared.loss_mask.to(logits.device)
        t_sum = (loss_tokens.sum(dim=1) * prepared.t.to(logits.device)).sum()
        report = {
            "lm loss": shared["lm loss"],
            "masked ce": shared["ce"],
            "masked accuracy": shared["accuracy"],
            "mean t": torch.stack([t_sum, num_tokens.float()]),
            "masked fraction": torch.stack([n_masked, num_tokens.float()]),
        }
        return loss_sum, num_tokens, report
