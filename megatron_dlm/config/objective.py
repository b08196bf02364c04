"""Training objective: masked diffusion (DLM) or autoregressive (AR), and regularisers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_dlm.config.base import require

MODEL_RUNNING_MODES = {"difflm-noshift": "dlm", "vanilla": "ar"}
"""MegaDLMs' --model-running-mode -> --objective."""


@dataclass
class ObjectiveConfig:
    """What the model learns; everything else stays identical between DLM and AR runs."""

    objective: Literal["dlm", "ar"] = "dlm"
    """'dlm': masked diffusion with bidirectional attention; 'ar': next-token prediction with
    causal attention (the matched baseline)."""
    dlm_eps: float = 1e-3
    """Smallest masking ratio t; t is drawn uniformly from [eps, 1) per sequence."""
    dlm_stratified_t: bool = False
    """Stratify t over the global batch (t_i = eps + (1-eps)((u + i/B) mod 1), one u per
    iteration) to cut the variance of the loss; training only (validation t depends on the
    sample alone)."""
    dlm_loss_weight: Literal["inv_t", "realised"] = "inv_t"
    """Per-token weight of the masked cross-entropy: 1/t (the ELBO) or 1/(realised masked
    fraction of the sequence's loss tokens), as MegaDLMs; 'realised' is biased low by a factor
    L/(L+1) for L loss tokens (docs/objectives.md)."""
    dlm_at_least_one_mask: bool = False
    """Mask at least one loss token of every sequence (the one a slightly larger t would mask
    first)."""
    dlm_random_length_prob: float = 0.01
    """Probability that a DLM training step is truncated to a random length (uniform, rounded
    up so TP/SP/CP still divide it), so the model also sees short sequences; drawn from (seed,
    iteration), so all ranks, micro-batches and parallel layouts agree."""
    model_running_mode: Literal["difflm-noshift", "vanilla"] | None = None
    """MegaDLMs' name for the objective: 'difflm-noshift' is --objective dlm, 'vanilla' is
    --objective ar (an --objective that disagrees is an error)."""
    attention_mask_type: Literal["no_mask", "causal"] | None = None
    """MegaDLMs' attention mask: 'no_mask' (bidirectional) goes with --objective dlm, 'causal'
    with --objective ar; anything else is an error."""
    base_model: Literal["vanilla"] | None = None
    """MegaDLMs' architecture family: only 'vanilla' (the megatron-core GPT model) exists here."""
    input_mask_prob: float = 0.0
    """Regulariser for both objectives, training only: replace this fraction of input tokens
    by the mask token, targets unchanged (DLM: hides context beyond the diffusion mask, the
    loss stays on the diffusion-masked tokens)."""

    def __post_init__(self):
        if self.model_running_mode is not None:
            # An explicit --objective that disagrees is refused by the CLI (config/cli.py).
            self.objective = MODEL_RUNNING_MODES[self.model_running_mode]
        if self.attention_mask_type is not None:
            needed = "dlm" if self.attention_mask_type == "no_mask" else "ar"
            require(
                self.objective == needed,
                f"--attention-mask-type {self.attention_mask_type} needs --objective {needed} "
                f"(the objective sets the mask here; got --objective {self.objective})",
            )
        require(0.0 < self.dlm_eps < 1.0, "--dlm-eps must be in (0, 1)")
        require(0.0 <= self.dlm_random_length_prob <= 1.0, "--dlm-random-length-prob in [0, 1]")
        require(0.0 <= self.input_mask_prob < 1.0, "--input-mask-prob must be in [0, 1)")

    @property
    def bidirectional(self) -> bool:
        return self.objective == "dlm"
