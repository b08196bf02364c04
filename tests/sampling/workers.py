"""Rank functions for sampling tests on a real (randomly initialised) megatron-core model."""

from __future__ import annotations

from megatron_dlm.config import DLMConfig
from megatron_dlm.config.sampling import SamplingConfig
from megatron_dlm.models.vocab import Vocab

VOCAB = Vocab(size=120, mask_id=119, eod_id=1, pad_id=0)


def batch_vs_single(cfg_dict: dict, prompts: list[list[int]], options: dict) -> dict:
    from megatron_dlm.inference.megatron import megatron_logits_fn
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed
    from megatron_dlm.sampling import autoregressive_generate, diffusion_generate

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=3)
    (model,) = build_model(cfg, VOCAB)
    model.eval()
    fn = megatron_logits_fn(model, bidirectional=cfg.objective.bidirectional)
    opts = SamplingConfig(**options)
    kwargs = dict(pad_id=VOCAB.pad_id, eos_id=VOCAB.eod_id, options=opts, vocab_size=VOCAB.size)
    if cfg.objective.bidirectional:
        generate = diffusion_generate
        kwargs["mask_id"] = VOCAB.mask_id
    else:
        generate = autoregressive_generate
        kwargs["mask_id"] = VOCAB.mask_id
    batched = generate(fn, prompts, max_length=cfg.model.max_position_embeddings, **kwargs)
    single = [
        generate(fn, [p], max_length=cfg.model.max_position_embeddings, **kwargs).sequences[0]
        for p in prompts
    ]
    return {"batched": batched.sequences, "single": single, "passes": batched.forward_passes}
