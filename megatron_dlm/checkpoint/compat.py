"""Whether a checkpoint fits the run that loads it: architecture, objective, tokenizer."""

from __future__ import annotations

import logging

from megatron_dlm.checkpoint.errors import CheckpointError
from megatron_dlm.checkpoint.info import CheckpointInfo
from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord
from megatron_dlm.config import DLMConfig
from megatron_dlm.config.base import flag

logger = logging.getLogger(__name__)

ARCHITECTURE_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "num_query_groups",
    "kv_channels",
    "position_embedding_type",
    "normalization",
    "swiglu",
    "qk_layernorm",
    "untie_embeddings_and_output_weights",
    "disable_bias_linear",
    "add_qkv_bias",
    "num_experts",
    "moe_ffn_hidden_size",
    "moe_shared_expert_intermediate_size",
    "moe_shared_expert_gate",
    "moe_layer_freq",
)
"""Model fields that must match for a checkpoint to load (the parallel layout may differ)."""


def check_compatible(
    info: CheckpointInfo,
    config: DLMConfig | None,
    tokenizer: TokenizerRecord | None,
    *,
    finetune: bool = False,
) -> None:
    """Raise CheckpointError if the checkpoint's architecture, objective or tokenizer differs.

    Resuming also needs the same ``--objective``: continuing an AR run as a DLM (or back)
    would silently change what is trained. ``finetune`` (a new run from the weights) allows it,
    for adapting an AR checkpoint into a DLM.
    """
    if config is not None:
        saved_objective, objective = info.objective, config.objective.objective
        if saved_objective and saved_objective != objective:
            if not finetune:
                raise CheckpointError(
                    f"--objective: checkpoint {saved_objective!r}, now {objective!r}; resuming "
                    "must keep the objective (pass --finetune to start a new run from its weights)"
                )
            logger.info("--finetune: an --objective %s run from %s weights", objective,
                        saved_objective)  # fmt: skip
        saved_model = (info.config or {}).get("model", {})
        model = config.to_dict()["model"]
        diffs = [
            f"{flag(name)}: checkpoint {saved_model[name]!r}, now {model[name]!r}"
            for name in ARCHITECTURE_FIELDS
            if name in saved_model and name in model and saved_model[name] != model[name]
        ]
        if diffs:
            raise CheckpointError(
                f"{info.directory}: the checkpoint's model does not match: " + "; ".join(diffs)
            )
    if info.tokenizer is not None and tokenizer is not None:
        diffs = [f"{name}: checkpoint {saved!r}, now {now!r}"
                 for name, saved, now in info.tokenizer.differences(tokenizer)]  # fmt: skip
        if diffs:
            raise CheckpointError(
                f"{info.directory}: the checkpoint was trained with another tokenizer: "
                + "; ".join(diffs)
            )
