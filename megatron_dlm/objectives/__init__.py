"""Training objectives: the masked-diffusion forward process and loss, the AR loss, regularisers.

    objective = build_objective(cfg.objective, mask_id=tokenizer.mask_id, seed=cfg_seed)
    prepared = objective.prepare(batch, training=True, iteration=it, microbatch=m)
    logits = model(prepared.inputs, prepared.position_ids, attention_mask=None)
    loss_sum, num_tokens, report = objective.loss(logits, prepared)

See :mod:`megatron_dlm.objectives.base` for the contract and docs/objectives.md for the math.
"""

from __future__ import annotations

from megatron_dlm.config.objective import ObjectiveConfig
from megatron_dlm.objectives.autoregressive import AutoregressiveObjective
from megatron_dlm.objectives.base import Objective, PreparedBatch, Report
from megatron_dlm.objectives.masked_diffusion import MaskedDiffusionObjective
from megatron_dlm.objectives.truncation import random_length


def build_objective(
    cfg: ObjectiveConfig, *, mask_id: int, seed: int, length_multiple: int = 1
) -> Objective:
    """The objective that ``cfg.objective`` names.

    Args:
        cfg: the objective section of the run's config.
        mask_id: id of the mask token, from the tokenizer (never a literal).
        seed: the run's seed; every mask derives from it.
        length_multiple: what a randomly truncated length must be a multiple of: the TP size
            with ``--sequence-parallel``, 2 x CP with ``--context-parallel-size`` > 1 (their
            product if both), else 1.
    """
    classes = {"dlm": MaskedDiffusionObjective, "ar": AutoregressiveObjective}
    return classes[cfg.objective](cfg, mask_id=mask_id, seed=seed, length_multiple=length_multiple)


__all__ = [
    "AutoregressiveObjective",
    "MaskedDiffusionObjective",
    "Objective",
    "PreparedBatch",
    "Report",
    "build_objective",
    "random_length",
]
