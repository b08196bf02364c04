"""GPU rank functions: Transformer Engine models built by the same provider as the CPU path."""

from __future__ import annotations

import torch

from megatron_dlm.config import DLMConfig
from megatron_dlm.models.vocab import Vocab

VOCAB = Vocab(size=500, mask_id=499, eod_id=0, pad_id=1)


def te_probe(cfg_dict: dict) -> dict:
    """Forward/backward through the TE model; the attention probe; peak memory."""
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel)
    (model,) = build_model(cfg, VOCAB)
    seq = cfg.model.seq_length
    tokens = torch.randint(2, VOCAB.size - 1, (2, seq), device="cuda")
    positions = torch.arange(seq, device="cuda").expand(2, -1)
    loss = model(tokens, positions, attention_mask=None, labels=tokens).float().mean()
    loss.backward()
    grads_finite = all(
        torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None
    )
    model.eval()
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 3) % (VOCAB.size - 2) + 2
    with torch.no_grad():
        base = model(tokens, positions, attention_mask=None)
        probe = model(changed, positions, attention_mask=None)
    return {
        "loss": loss.item(),
        "grads_finite": grads_finite,
        "first_position_change": (base[:, 0] - probe[:, 0]).abs().max().item(),
    }


def local_vs_te_logits(local_dict: dict, te_dict: dict, workdir: str) -> float:
    """Max |logits| difference between the local and TE specs holding the same weights."""
    from megatron_dlm.checkpoint import load_model_weights, save_model_weights
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.runtime.distributed import init_distributed

    local_cfg, te_cfg = DLMConfig.from_dict(local_dict), DLMConfig.from_dict(te_dict)
    init_distributed(local_cfg.parallel)
    local = build_model(local_cfg, VOCAB)
    save_model_weights(local, f"{workdir}/weights")
    te = build_model(te_cfg, VOCAB)
    load_model_weights(te, f"{workdir}/weights")
    seq = local_cfg.model.seq_length
    tokens = torch.randint(2, VOCAB.size - 1, (2, seq), device="cuda")
    positions = torch.arange(seq, device="cuda").expand(2, -1)
    with torch.no_grad():
        a = local[0].eval()(tokens, positions, attention_mask=None).float()
        b = te[0].eval()(tokens, positions, attention_mask=None).float()
    return (a - b).abs().max().item()
