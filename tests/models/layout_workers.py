"""Rank functions for the layout-equality tests (module level so the harness can pickle them).

The reference run (one rank) saves its initial weights with dist_checkpointing; every other
layout loads them (megatron-core reshards), runs the same global batch through megatron-core's
forward_backward_func with DDP and finalize_model_grads, and saves its gradients as a
checkpoint too, so gradients of any layout can be compared parameter by parameter at TP=PP=EP=1.
"""

from __future__ import annotations

from functools import partial

import torch
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_dlm.checkpoint import load_model_weights, save_model_weights
from megatron_dlm.config import DLMConfig
from megatron_dlm.models.provider import build_model
from megatron_dlm.models.vocab import Vocab
from megatron_dlm.runtime.distributed import init_distributed

VOCAB = Vocab(size=250, mask_id=249, eod_id=0, pad_id=1)


def _build(cfg_dict: dict):
    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=1234)
    chunks = build_model(cfg, VOCAB)
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True)
    model = [
        DistributedDataParallel(config=chunk.config, ddp_config=ddp_config, module=chunk)
        for chunk in chunks
    ]
    # One TransformerConfig object is shared by all chunks (build_model) and their DDP wrappers.
    chunks[0].config.finalize_model_grads_func = finalize_model_grads
    return cfg, model


def _loss_func(labels, logits_out, output_tensor):
    # output_tensor: vocab-parallel logits [b, s, V/TP]
    full = tensor_parallel.gather_from_tensor_model_parallel_region(output_tensor.detach())
    logits_out.append(full.clone())
    losses = tensor_parallel.vocab_parallel_cross_entropy(
        output_tensor.transpose(0, 1).contiguous().float(), labels.transpose(0, 1).contiguous()
    )
    loss_sum = losses.sum()
    num_tokens = torch.tensor(labels.numel(), dtype=torch.int)
    return loss_sum, num_tokens, {"loss": torch.stack([loss_sum.detach(), num_tokens.float()])}


def _forward_step(logits_out, data_iterator, model):
    tokens, labels = next(data_iterator)
    positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand_as(tokens)
    output = model(tokens, positions, attention_mask=None)
    return output, partial(_loss_func, labels, logits_out)


def _forward_backward(cfg: DLMConfig, model, tokens: torch.Tensor, labels: torch.Tensor, mbs: int):
    """Run the global batch; return (loss per token, logits) on the rank that reports them."""
    dp = parallel_state.get_data_parallel_world_size()
    dp_rank = parallel_state.get_data_parallel_rank()
    per_rank = tokens.shape[0] // dp
    tokens = tokens[dp_rank * per_rank : (dp_rank + 1) * per_rank]
    labels = labels[dp_rank * per_rank : (dp_rank + 1) * per_rank]
    micro = [(tokens[i : i + mbs], labels[i : i + mbs]) for i in range(0, per_rank, mbs)]
    logits_out: list[torch.Tensor] = []
    for chunk in model:
        chunk.zero_grad_buffer()
    iterators = [iter(micro) for _ in model]
    reports = get_forward_backward_func()(
        forward_step_func=partial(_forward_step, logits_out),
        data_iterator=iterators if len(model) > 1 else iterators[0],
        model=model,
        num_microbatches=len(micro),
        seq_length=cfg.model.seq_length,
        micro_batch_size=mbs,
        forward_only=False,
    )
    if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        return None
    totals = torch.stack([r["loss"] for r in reports]).sum(0)
    torch.distributed.all_reduce(totals, group=parallel_state.get_data_parallel_group())
    logits = torch.cat(logits_out)
    gathered = [torch.empty_like(logits) for _ in range(dp)]
    torch.distributed.all_gather(gathered, logits, group=parallel_state.get_data_parallel_group())
    return {"loss": (totals[0] / totals[1]).item(), "logits": torch.cat(gathered)}


def _grads_as_weights(model) -> None:
    """Overwrite each parameter with its (reduced) gradient so a checkpoint can carry it."""
    with torch.no_grad():
        for chunk in model:
            for param in chunk.module.parameters():
                param.copy_(param.main_grad.to(param.dtype))


def reference_run(cfg_dict: dict, workdir: str, tokens, labels, mbs: int):
    cfg, model = _build(cfg_dict)
    save_model_weights(model, f"{workdir}/weights")
    result = _forward_backward(cfg, model, tokens, labels, mbs)
    _grads_as_weights(model)
    save_model_weights(model, f"{workdir}/grads_reference")
    return result


def layout_run(cfg_dict: dict, workdir: str, tokens, labels, mbs: int, tag: str):
    cfg, model = _build(cfg_dict)
    load_model_weights(model, f"{workdir}/weights")
    result = _forward_backward(cfg, model, tokens, labels, mbs)
    _grads_as_weights(model)
    save_model_weights(model, f"{workdir}/grads_{tag}")
    return result


def grad_differences(cfg_dict: dict, workdir: str, tag: str) -> dict[str, float]:
    """Max |reference grad - layout grad| per parameter, at a single-rank layout."""
    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=1234)
    (reference,) = build_model(cfg, VOCAB)
    (other,) = build_model(cfg, VOCAB)
    load_model_weights([reference], f"{workdir}/grads_reference")
    load_model_weights([other], f"{workdir}/grads_{tag}")
    other_params = dict(other.named_parameters())
    diffs = {}
    for name, param in reference.named_parameters():
        scale = param.abs().max().clamp(min=1e-12).item()
        diffs[name] = ((param - other_params[name]).abs().max().item(), scale)
    return diffs


def attention_probe(cfg_dict: dict) -> float:
    """Max change of position 0's logits when only the last token changes."""
    cfg = DLMConfig.from_dict(cfg_dict)
    init_distributed(cfg.parallel, seed=1234)
    (model,) = build_model(cfg, VOCAB)
    model.eval()
    seq = cfg.model.seq_length
    tokens = torch.randint(2, VOCAB.size - 1, (2, seq), generator=torch.Generator().manual_seed(0))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 7) % (VOCAB.size - 2) + 2
    positions = torch.arange(seq).unsqueeze(0).expand(2, -1)
    with torch.no_grad():
        base = model(tokens, positions, attention_mask=None)
        probe = model(changed, positions, attention_mask=None)
    return (base[:, 0] - probe[:, 0]).abs().max().item()
