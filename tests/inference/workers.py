"""Rank functions for the inference tests: seeded tiny megatron-core models, no checkpoint."""

from __future__ import annotations

import torch

from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig, ParallelConfig
from megatron_dlm.models.vocab import Vocab
from tests.modern import modern_model

VOCAB = Vocab(size=120, mask_id=119, eod_id=1, pad_id=0)
PROMPTS = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17], [20], [30, 31, 32, 33, 34]]


def model_config(objective: str, tp: int = 1, **model) -> dict:
    """The reference tokens' model: 2 x 64, RoPE; init std 0.2 so that logits are spread (no
    near-ties that rounding could flip)."""
    fields = dict(
        num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=64,
        use_cpu_initialization=True, make_vocab_size_divisible_by=64, init_method_std=0.2,
    )  # fmt: skip
    return DLMConfig(
        model=ModelConfig(**modern_model(**{**fields, **model})),
        objective=ObjectiveConfig(objective=objective),
        parallel=ParallelConfig(tensor_model_parallel_size=tp),
    ).to_dict()


def tiny_model(cfg_dict: dict):
    """(InferenceModel over a freshly initialised GPTModel, its config) on this rank."""
    from megatron_dlm.inference import DataParallel, InferenceModel
    from megatron_dlm.inference.megatron import megatron_logits_fn
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=3)
    (module,) = build_model(cfg, VOCAB)
    module.eval()
    fn = megatron_logits_fn(module, bidirectional=cfg.objective.bidirectional)
    model = InferenceModel(
        logits_fn=fn, tokenizer=None, bidirectional=cfg.objective.bidirectional,
        mask_id=VOCAB.mask_id, eos_id=VOCAB.eod_id, pad_id=VOCAB.pad_id, vocab_size=VOCAB.size,
        max_length=cfg.model.max_position_embeddings, device=fn.device, source="megatron",
        path="<tiny>", data_parallel=DataParallel(),
    )  # fmt: skip
    return model, cfg


def generate_all(cfg_dict: dict, prompts: list[list[int]], runs: list[dict]) -> list[dict]:
    """For each options dict: the batch's output and each prompt's output alone."""
    from megatron_dlm.sampling import SamplingConfig

    model, _ = tiny_model(cfg_dict)
    out = []
    for options in runs:
        opts = SamplingConfig(**options)
        batched = model.generate(prompts, opts)
        out.append(
            {
                "sequences": batched.sequences,
                "forward_passes": batched.forward_passes,
                "steps": batched.steps,
                "stopped_at_eos": batched.stopped_at_eos,
                "single": [model.generate([p], opts).sequences[0] for p in prompts],
            }
        )
    return out


def cached_pass_errors(cfg_dict: dict) -> dict[str, float]:
    """Largest |logit difference| between cached passes and the full pass on the same tokens
    (right after the cache was filled, a cached pass computes exactly the full pass)."""
    from megatron_dlm.sampling.common import left_pad

    model, cfg = tiny_model(cfg_dict)
    fn = model.logits_fn
    tokens, valid, start = left_pad(PROMPTS, VOCAB.pad_id, 16, VOCAB.mask_id)
    rows = torch.arange(len(PROMPTS))
    errors = {}
    if cfg.objective.bidirectional:
        full = fn(tokens, valid)
        block = (start, start + 8)
        cache = fn.init_cache(len(PROMPTS), tokens.shape[1])
        refresh = fn.logits_with_cache(
            cache, rows, tokens, valid, 0, store=True, logits_columns=block
        )
        errors["refresh"] = (refresh - full[:, start : start + 8]).abs().max().item()
        pick = torch.tensor([2, 0])  # a subset of rows, out of order
        dual = fn.logits_with_cache(
            cache, pick, tokens[pick, start : start + 8], valid[pick], start, store=False
        )
        errors["dual"] = (dual - full[pick, start : start + 8]).abs().max().item()
        prefix = fn.logits_with_cache(
            cache, pick, tokens[pick, start:], valid[pick], start, store=False, logits_columns=block
        )
        errors["prefix"] = (prefix - full[pick, start : start + 8]).abs().max().item()
    else:
        cache = fn.init_cache(len(PROMPTS), start + 4)
        first = fn.logits_with_cache(
            cache, rows, tokens[:, :start], valid[:, :start], 0, store=True,
            logits_columns=(start - 1, start),
        )  # fmt: skip
        full = fn(tokens[:, :start], valid[:, :start])[:, -1:]
        errors["prefill"] = (first - full).abs().max().item()
        pick = torch.tensor([0, 2])  # two sequences go on, two stopped
        step = fn.logits_with_cache(
            cache, pick, tokens[pick, start : start + 1], valid[pick, : start + 1], start,
            store=True,
        )  # fmt: skip
        full = fn(tokens[pick, : start + 1], valid[pick, : start + 1])[:, -1:]
        errors["decode"] = (step - full).abs().max().item()
    return errors
