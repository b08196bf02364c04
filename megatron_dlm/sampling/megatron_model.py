"""A :data:`~megatron_dlm.sampling.common.LogitsFn` over a megatron-core GPTModel (any TP)."""

from __future__ import annotations

import torch
from megatron.core import tensor_parallel

from megatron_dlm.sampling.common import LogitsFn


def attention_mask_for(valid: torch.Tensor, bidirectional: bool) -> torch.Tensor | None:
    """megatron-core's boolean mask [b, 1, L, L] (True = not attended), or None if not needed.

    Keys on left padding are masked; AR models add the causal mask (megatron-core applies a
    given mask instead of, not on top of, its default causal one).
    """
    if bool(valid.all()):
        return None
    b, length = valid.shape
    mask = (~valid)[:, None, None, :].expand(b, 1, length, length)
    if not bidirectional:
        causal = torch.ones(length, length, dtype=torch.bool, device=valid.device).triu(1)
        mask = mask | causal
    return mask.contiguous()


def megatron_logits_fn(model: torch.nn.Module, *, bidirectional: bool) -> LogitsFn:
    """Wrap an (unwrapped, eval-mode) GPTModel with ``pre_process`` and ``post_process``.

    Positions count from each sequence's first valid token, so a left-padded prompt sees the
    positions it would alone. With tensor parallelism every TP rank must call this with the same
    inputs; the vocabulary shards are gathered, so all ranks get the full logits.
    """
    device = next(model.parameters()).device

    def logits_fn(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        tokens, valid = tokens.to(device), valid.to(device)
        positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
        mask = attention_mask_for(valid, bidirectional)
        with torch.no_grad():
            logits = model(tokens, positions, attention_mask=mask)
            logits = tensor_parallel.gather_from_tensor_model_parallel_region(logits)
        return logits.float().cpu()

    return logits_fn
