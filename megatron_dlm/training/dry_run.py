"""``--dry-run``: validate a configuration and size the job without a GPU or a process group.

Prints the parallel layout, parameter counts (total and active), memory per device, FLOPs per
step and the projected wall time of the compute budget, for a simulated world size.

Memory is an estimate: weights, gradients (fp32 reduction buffers) and Adam state per device,
plus activations by Korthikanti et al. (2022) without recomputation (selective recomputation
and Transformer Engine's fused attention drop the attention s^2 term; full recomputation keeps
one layer's input per layer).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from megatron_dlm.config import DLMConfig
from megatron_dlm.models.vocab import padded_vocab_size
from megatron_dlm.training.batching import resolve_batch_layout
from megatron_dlm.training.flops import PEAK_TFLOPS_BF16, flops_per_sequence, parameter_counts


@dataclass(frozen=True)
class DryRunReport:
    world_size: int
    data_parallel_size: int
    padded_vocab: int
    total_params: int
    active_params: int
    params_per_device: int
    memory_gb: dict[str, float]
    flops_per_step: float
    train_iters: int
    tokens_per_step: int
    num_microbatches: int
    projected_hours: float | None
    peak_tflops: float | None
    vocab: int = 0
    vocab_source: str = ""


def _per_device_params(cfg: DLMConfig, padded_vocab: int) -> int:
    """Parameters on the most loaded device (the first pipeline stage, with the embedding)."""
    m, p = cfg.model, cfg.parallel
    counts = parameter_counts(cfg, padded_vocab)
    tp, pp, ep = (
        p.tensor_model_parallel_size,
        p.pipeline_model_parallel_size,
        p.expert_model_parallel_size,
    )
    etp = p.expert_tensor_parallel_size
    expert_total = 0
    if m.is_moe:
        mlp_factor = 3 if m.swiglu else 2
        moe_layers = len(range(0, m.num_layers, m.moe_layer_freq))
        expert_total = (
            moe_layers * m.num_experts * mlp_factor * m.hidden_size * m.moe_ffn_hidden_size
        )
    embedding = counts.embedding * (2 if m.untie_embeddings_and_output_weights else 1)
    body = counts.total - embedding - expert_total
    per_stage_body = body / pp / tp
    per_stage_experts = expert_total / pp / (ep * etp)
    first_stage_embedding = counts.embedding / tp
    if pp == 1:
        first_stage_embedding = embedding / tp
    return int(per_stage_body + per_stage_experts + first_stage_embedding)


def _activation_bytes(cfg: DLMConfig, micro_batch: int, num_microbatches: int) -> float:
    m, p = cfg.model, cfg.parallel
    s, b, h, a = m.seq_length, micro_batch, m.hidden_size, m.num_attention_heads
    tp, pp, cp = (
        p.tensor_model_parallel_size,
        p.pipeline_model_parallel_size,
        p.context_parallel_size,
    )
    s_local = s / cp
    sp = tp if p.sequence_parallel else 1
    per_layer = s_local * b * h * (10 / sp + 24 / tp) + 5 * a * s_local * s / tp * b
    if m.recompute_granularity == "selective" or m.transformer_impl == "transformer_engine":
        # Recomputed, or never materialised: TE's fused (flash) attention keeps no s x s scores.
        per_layer = s_local * b * h * (10 / sp + 24 / tp)
    elif m.recompute_granularity == "full":
        per_layer = 2 * s_local * b * h / sp
    layers_per_stage = m.num_layers / pp
    # 1F1B keeps up to PP micro-batches in flight on the first stage.
    in_flight = min(pp, num_microbatches)
    bytes_per_value = 1.0 if (cfg.precision.bf16 or cfg.precision.fp16) else 2.0
    return per_layer * layers_per_stage * in_flight * bytes_per_value


def _tokenizer_files_present(data_cfg) -> bool:
    """Whether the files of the run's tokenizer exist on this machine (NullTokenizer has none)."""
    if data_cfg.tokenizer_type == "NullTokenizer":
        return True
    if data_cfg.tokenizer_type == "GPT2BPETokenizer":
        files = (data_cfg.vocab_file, data_cfg.merge_file)
    else:
        files = (data_cfg.tokenizer_model,)
    return all(f and os.path.exists(f) for f in files)


def dry_run_vocabulary(cfg: DLMConfig) -> tuple[int, str]:
    """The vocabulary (before padding) the run would have, and where the number comes from.

    The tokenizer itself when it can be built here: its ids plus the mask and padding tokens it
    would append (NullTokenizer always: ``--vocab-size N`` gives ``N`` ids, its end of document,
    then the appended mask and padding). A launch script sized before its tokenizer files exist
    on this machine (paths of the cluster it targets) is sized from ``--vocab-size`` (the most
    ids the tokenizer may have, appended tokens included), else ``--dry-run-vocab-size``.
    """
    data = cfg.data
    if _tokenizer_files_present(data):
        from megatron_dlm.data.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(data)
        appended = (
            f", {', '.join(tokenizer.added_tokens)} appended" if tokenizer.added_tokens else ""
        )
        return (
            tokenizer.vocab_size,
            f"{data.tokenizer_type}: {tokenizer.vocab_size:,} ids{appended}",
        )
    if data.vocab_size is not None:
        return (
            data.vocab_size,
            f"from --vocab-size {data.vocab_size}: no tokenizer files here",
        )
    size = cfg.training.dry_run_vocab_size
    return size, f"from --dry-run-vocab-size {size}: no tokenizer files here"


def dry_run(cfg: DLMConfig, world_size: int | None = None) -> DryRunReport:
    """Size the job described by ``cfg`` on ``world_size`` devices (validates the layout)."""
    world = world_size or cfg.training.dry_run_world_size or int(os.environ.get("WORLD_SIZE", 1))
    dp = cfg.parallel.data_parallel_size(world)
    layout = resolve_batch_layout(cfg, dp)
    vocab, vocab_source = dry_run_vocabulary(cfg)
    tp = cfg.parallel.tensor_model_parallel_size
    padded = padded_vocab_size(vocab, cfg.model.make_vocab_size_divisible_by, tp)
    counts = parameter_counts(cfg, padded)
    per_device = _per_device_params(cfg, padded)
    param_bytes = 2 if (cfg.precision.bf16 or cfg.precision.fp16) else 4
    optimizer_bytes = 12 if param_bytes == 2 else 8  # fp32 main copy + two Adam moments
    if cfg.optimizer.optimizer == "sgd":
        optimizer_bytes -= 4
    if cfg.optimizer.use_distributed_optimizer:  # sharded within one optimizer instance
        optimizer_bytes /= max(1, dp // cfg.parallel.num_distributed_optimizer_instances)
    memory = {
        "weights": per_device * param_bytes / 2**30,
        "gradients": per_device * 4 / 2**30,
        "optimizer": per_device * optimizer_bytes / 2**30,
        "activations": _activation_bytes(cfg, layout.micro_batch_size, layout.num_microbatches)
        / 2**30,
    }
    memory["total"] = sum(memory.values())
    flops_step = flops_per_sequence(cfg, padded) * layout.global_batch_size
    peak = cfg.logging.peak_tflops
    if peak is None and cfg.model.transformer_impl == "transformer_engine":
        peak = PEAK_TFLOPS_BF16["H100"] * (2 if cfg.precision.fp8_format else 1)
    hours = None
    if peak:
        seconds = flops_step * layout.train_iters / (world * peak * 1e12 * cfg.training.dry_run_mfu)
        hours = seconds / 3600
    return DryRunReport(
        world_size=world,
        data_parallel_size=dp,
        padded_vocab=padded,
        total_params=counts.total,
        active_params=counts.active,
        params_per_device=per_device,
        memory_gb=memory,
        flops_per_step=flops_step,
        train_iters=layout.train_iters,
        tokens_per_step=layout.tokens_per_step,
        num_microbatches=layout.num_microbatches,
        projected_hours=hours,
        peak_tflops=peak,
        vocab=vocab,
        vocab_source=vocab_source,
    )


def format_report(cfg: DLMConfig, report: DryRunReport) -> str:
    p = cfg.parallel
    lines = [
        "Megatron-DLM dry run (nothing was built)",
        f"  objective        : {cfg.objective.objective} "
        f"({'bidirectional' if cfg.objective.bidirectional else 'causal'} attention)",
        f"  layout           : world {report.world_size} = TP {p.tensor_model_parallel_size} x "
        f"PP {p.pipeline_model_parallel_size} x CP {p.context_parallel_size} x "
        f"DP {report.data_parallel_size}; EP {p.expert_model_parallel_size}, "
        f"ETP {p.expert_tensor_parallel_size}"
        + (", sequence parallel" if p.sequence_parallel else ""),
        f"  vocabulary       : {report.padded_vocab:,} (padded; {report.vocab_source})",
        f"  parameters       : {report.total_params / 1e9:.3f} B total, "
        f"{report.active_params / 1e9:.3f} B active per token, "
        f"{report.params_per_device / 1e9:.3f} B on the most loaded device",
        "  memory / device  : "
        + ", ".join(f"{k} {v:.2f} GiB" for k, v in report.memory_gb.items()),
        f"  batch            : {report.tokens_per_step:,} tokens per step "
        f"({cfg.training.micro_batch_size} sequences x {report.data_parallel_size} DP ranks x "
        f"{report.num_microbatches} micro-batches x {cfg.model.seq_length} tokens)",
        f"  FLOPs / step     : {report.flops_per_step:.3e} (model FLOPs, fwd+bwd)",
        f"  budget           : {report.train_iters:,} steps = "
        f"{report.train_iters * report.tokens_per_step:,} tokens",
    ]
    if cfg.data.unique_tokens:
        epochs = report.train_iters * report.tokens_per_step / cfg.data.unique_tokens
        lines.append(
            f"  epochs           : {epochs:.1f} over {cfg.data.unique_tokens:,} unique tokens"
        )
    if report.projected_hours is not None:
        lines.append(
            f"  projected time   : {report.projected_hours:.1f} h "
            f"({report.projected_hours / 24:.2f} days) at {cfg.training.dry_run_mfu:.0%} MFU of "
            f"{report.peak_tflops:.0f} TFLOP/s per device"
        )
    else:
        lines.append("  projected time   : give --peak-tflops (per device) to project it")
    if math.isfinite(report.memory_gb["total"]) and report.memory_gb["total"] > 80:
        lines.append(
            "  warning          : more than 80 GiB per device: add parallelism or recompute"
        )
    return "\n".join(lines)
