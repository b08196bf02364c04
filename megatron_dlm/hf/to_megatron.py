"""Hugging Face folder (an export) -> Megatron-DLM checkpoint, to continue training from it.

The weights go through :func:`megatron_dlm.hf.weights.hf_to_megatron` into a TP=PP=EP=1 model
that is saved with dist_checkpointing, so training can load it at any layout
(``--load DIR --finetune``, or ``--no-load-optim`` to keep the iteration count). The training
config comes from the export's ``megatron_dlm.json`` (the run that produced it) when present,
else it is derived from ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from megatron_dlm.checkpoint import TokenizerRecord
from megatron_dlm.config import DLMConfig
from megatron_dlm.hf.configuration_megatron_dlm import MegatronDLMConfig
from megatron_dlm.hf.convert import PROVENANCE_FILE, ExportError
from megatron_dlm.hf.weights import hf_to_megatron
from megatron_dlm.models.vocab import Vocab


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or its shards, in float32."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("model*.safetensors"))
    if not files:
        raise ExportError(f"{directory}: no model*.safetensors files")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update({k: v.float() for k, v in load_file(file).items()})
    return tensors


def training_config(
    directory: Path, config: MegatronDLMConfig
) -> tuple[dict, TokenizerRecord, int | None]:
    """(DLMConfig dict, tokenizer record, padded vocabulary rows or None) for an export."""
    provenance = directory / PROVENANCE_FILE
    if provenance.is_file():
        record = json.loads(provenance.read_text())
        saved = record["megatron_config"]
        tokenizer = TokenizerRecord.from_dict(record["tokenizer"], f"{provenance}: tokenizer")
        return saved, tokenizer, record.get("padded_vocab_size")
    model = dict(
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        ffn_hidden_size=config.intermediate_size,
        num_attention_heads=config.num_attention_heads,
        num_query_groups=config.num_key_value_heads,
        kv_channels=config.head_dim,
        seq_length=config.max_position_embeddings,
        max_position_embeddings=config.max_position_embeddings,
        position_embedding_type=config.position_embedding_type,
        rotary_base=config.rotary_base,
        rotary_percent=config.rotary_percent,
        normalization=config.normalization,
        norm_epsilon=config.norm_epsilon,
        swiglu=config.swiglu,
        qk_layernorm=config.qk_layernorm,
        untie_embeddings_and_output_weights=not config.tie_word_embeddings,
        disable_bias_linear=not config.add_bias_linear,
        add_qkv_bias=config.add_qkv_bias,
        init_method_std=config.initializer_range,
        num_experts=config.num_experts,
        moe_router_topk=config.moe_router_topk,
        moe_ffn_hidden_size=config.moe_ffn_hidden_size if config.num_experts else None,
        moe_shared_expert_intermediate_size=config.moe_shared_expert_intermediate_size,
        moe_layer_freq=config.moe_layer_freq,
        moe_router_score_function=config.moe_router_score_function,
        moe_router_pre_softmax=config.moe_router_pre_softmax,
    )
    tokenizer = TokenizerRecord(
        vocab_size=config.vocab_size,
        mask_id=config.mask_token_id,
        eod_id=config.eos_token_id,
        pad_id=config.pad_token_id,
    )
    return {"model": model, "objective": {"objective": config.objective}}, tokenizer, None


def import_hf_folder(directory: str | Path, save: str | Path, *, iteration: int = 0) -> Path:
    """Write the export in ``directory`` as a Megatron-DLM checkpoint under ``save``.

    Returns the ``iter_*`` directory written.
    """
    from megatron_dlm.checkpoint import TrainState, save_checkpoint
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.models.trained import trained_config
    from megatron_dlm.runtime.distributed import single_process

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ExportError(f"{directory} is not an exported folder (no config.json)")
    config = MegatronDLMConfig.from_pretrained(directory)
    saved, tokenizer, padded_rows = training_config(directory, config)
    cfg = trained_config(saved, embedding_rows=padded_rows, for_export=True)
    vocab = Vocab.from_record(tokenizer)
    with single_process():
        (model,) = build_model(cfg, vocab)
        rows = model.embedding.word_embeddings.weight.shape[0]
        state = hf_to_megatron(read_hf_weights(directory), config, rows)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if missing or unexpected:
            raise ExportError(f"the weights do not fit the Megatron model: missing {missing}, "
                              f"unexpected {unexpected}")  # fmt: skip
        return save_checkpoint(
            save,
            TrainState(iteration=iteration),
            [model],
            config=DLMConfig.from_dict(saved),  # the run's config, defaults filled in
            tokenizer=tokenizer,
        )
