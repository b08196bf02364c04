"""GPU training throughput: tokens/s, TFLOP/s per GPU and MFU, DLM vs AR, bf16 vs FP8, one run.

    python bench/gpu_throughput.py                          # one GPU, the 1.7B recipe's shape
    python bench/gpu_throughput.py --output results.json    # also write the figures
    torchrun --nproc-per-node 8 bench/gpu_throughput.py     # data parallel over a node
    python bench/gpu_throughput.py --dry-run                # the plan, on any machine (no CUDA)

The model is the one examples/recipes/dlm_1p7b_python.yaml describes (28 x 2048, 16 heads,
SwiGLU 6144, QK-norm, untied embeddings, sequence 2048, a 50,289-token vocabulary), built and
stepped by the trainer's own code (setup_model, build_optimizer, Trainer.train_step: megatron-core
DDP, the distributed optimizer, forward_backward_func, the objective's noise and loss) on random
tokens, with Transformer Engine layers. Variants, one after another (four 1.7B models with their
optimizer state do not fit one GPU together): dlm-bf16, ar-bf16, dlm-fp8, ar-fp8 (FP8: hybrid
format, delayed scaling; needs Transformer Engine and compute capability >= 8.9). Each runs
--warmup steps, then --steps timed steps (CUDA-synchronised); the figures are medians.

Where the recipe's micro-batch does not fit, the micro-batch halves (down to 1), then the layer
count; the report says which shape ran. Without Transformer Engine the local layers run and the
FP8 variants are skipped (said in the report).

MFU is model FLOPs (training/flops.py: bidirectional attention at the full s^2 for DLM, half of
it for causal AR) over the GPU's dense bf16 peak, for FP8 too, so the four figures compare; the
FP8 rows also give the fraction of the FP8 peak (twice the bf16 one).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPE = REPO / "examples" / "recipes" / "dlm_1p7b_python.yaml"
VOCAB_SIZE = 50289  # the recipe's dry-run vocabulary: GPT-NeoX's plus the special tokens
VARIANTS = ("dlm-bf16", "ar-bf16", "dlm-fp8", "ar-fp8")


@dataclass
class Shape:
    num_layers: int
    micro_batch_size: int
    micro_batches: int


def variant_config(variant: str, shape: Shape, world: int, impl: str):
    """The recipe, as this variant and shape, for ``world`` data-parallel GPUs."""
    from megatron_dlm.config.cli import parse_config

    objective, precision = variant.split("-")
    argv = [
        "--config", str(RECIPE),
        "--objective", objective,
        "--num-layers", str(shape.num_layers),
        "--micro-batch-size", str(shape.micro_batch_size),
        "--global-batch-size", str(shape.micro_batch_size * shape.micro_batches * world),
        "--train-iters", "1000",
        "--lr-warmup-iters", "10",
        "--dlm-random-length-prob", "0",  # every step at the full length: steady throughput
        "--transformer-impl", impl,
        "--dry-run-world-size", str(world),
        "--eval-interval", "1000000",
        # One node: one distributed-optimizer instance (the recipe has one per node of its job).
        "--num-distributed-optimizer-instances", "1",
    ]  # fmt: skip
    if precision == "fp8":
        argv += ["--fp8-format", "hybrid", "--fp8-recipe", "delayed"]
    return parse_config(argv)


def _batches(cfg, vocab, seed: int):
    import torch

    mbs, seq = cfg.training.micro_batch_size, cfg.model.seq_length
    gen = torch.Generator().manual_seed(seed)
    sample = 0
    while True:
        tokens = torch.randint(3, vocab.size - 1, (mbs, seq + 1), generator=gen)
        yield {
            "tokens": tokens[:, :-1],
            "labels": tokens[:, 1:],
            "loss_mask": torch.ones(mbs, seq),
            "position_ids": torch.arange(seq).expand(mbs, -1),
            "sample_id": torch.arange(sample, sample + mbs),
            "epoch": torch.zeros(mbs, dtype=torch.long),
        }
        sample += mbs


def _vocab():
    from megatron_dlm.models.vocab import Vocab

    # GPT-NeoX's <|endoftext|> is 0; the specials follow its 50,277 pieces.
    return Vocab(size=VOCAB_SIZE, mask_id=VOCAB_SIZE - 1, eod_id=0, pad_id=1)


def measure(cfg, steps: int, warmup: int, world: int) -> dict:
    """Warm-up, then ``steps`` timed optimizer steps of the trainer; medians."""
    import torch
    from megatron.core import parallel_state

    from megatron_dlm.models.vocab import padded_vocab_size
    from megatron_dlm.objectives import build_objective
    from megatron_dlm.training.batching import resolve_batch_layout
    from megatron_dlm.training.flops import flops_per_sequence
    from megatron_dlm.training.model_setup import setup_model
    from megatron_dlm.training.optimizer import build_optimizer, build_scheduler
    from megatron_dlm.training.trainer import Trainer

    vocab = _vocab()
    layout = resolve_batch_layout(cfg, parallel_state.get_data_parallel_world_size())
    built: dict = {}  # everything that holds GPU memory, dropped at the end (or on OOM)
    times, losses = [], []
    try:
        built["model"] = model = setup_model(cfg, vocab)
        built["optimizer"] = optimizer = build_optimizer(cfg, model)
        scheduler = build_scheduler(cfg, optimizer, layout.train_iters)
        model[0].config.grad_scale_func = optimizer.scale_loss
        objective = build_objective(cfg.objective, mask_id=vocab.mask_id, seed=cfg.training.seed)
        data = _batches(cfg, vocab, seed=1 + parallel_state.get_data_parallel_rank())
        built["trainer"] = trainer = Trainer(
            cfg, model=model, optimizer=optimizer, scheduler=scheduler, objective=objective,
            layout=layout, train_data=lambda consumed: data,
        )  # fmt: skip
        torch.cuda.reset_peak_memory_stats()
        for step in range(warmup + steps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            metrics, _, _ = trainer.train_step(data)
            torch.cuda.synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - start)
                losses.append(metrics.get("loss", float("nan")))
        peak_memory = torch.cuda.max_memory_allocated() / 2**30
    finally:
        model = optimizer = scheduler = trainer = None
        built.clear()
        gc.collect()
        torch.cuda.empty_cache()
    padded = padded_vocab_size(
        VOCAB_SIZE, cfg.model.make_vocab_size_divisible_by, cfg.parallel.tensor_model_parallel_size
    )
    seconds = statistics.median(times)
    tokens = layout.global_batch_size * layout.seq_length
    flops = flops_per_sequence(cfg, padded) * layout.global_batch_size
    return {
        "step_ms": seconds * 1000,
        "step_ms_stdev": statistics.pstdev(times) * 1000,
        "tokens_per_s_per_gpu": tokens / seconds / world,
        "tflops_per_gpu": flops / seconds / world / 1e12,
        "peak_memory_gib": peak_memory,
        "final_loss": losses[-1] if losses else None,
        "micro_batch_size": layout.micro_batch_size,
        "micro_batches": layout.num_microbatches,
        "num_layers": cfg.model.num_layers,
    }


def fits(variant: str, args, world: int, impl: str) -> tuple[Shape, dict]:
    """Measure at the largest shape that fits, starting from the recipe's."""
    import torch

    shape = Shape(args.num_layers, args.micro_batch_size, args.micro_batches)
    while True:
        try:
            cfg = variant_config(variant, shape, world, impl)
            return shape, measure(cfg, args.steps, args.warmup, world)
        except torch.cuda.OutOfMemoryError:
            gc.collect()
            torch.cuda.empty_cache()
            if shape.micro_batch_size > 1:
                shape = Shape(shape.num_layers, shape.micro_batch_size // 2, shape.micro_batches)
            elif shape.num_layers > 2:
                shape = Shape(shape.num_layers // 2, 1, shape.micro_batches)
            else:
                raise
            print(f"  {variant}: out of memory, retrying at {shape}", flush=True)


def ratios(results: dict) -> dict:
    out = {}

    def rate(name):
        entry = results.get(name)
        return entry["tokens_per_s_per_gpu"] if entry and "tokens_per_s_per_gpu" in entry else None

    for precision in ("bf16", "fp8"):
        dlm, ar = rate(f"dlm-{precision}"), rate(f"ar-{precision}")
        if dlm and ar:
            out[f"dlm/ar tokens/s ({precision})"] = dlm / ar
    for objective in ("dlm", "ar"):
        fp8, bf16 = rate(f"{objective}-fp8"), rate(f"{objective}-bf16")
        if fp8 and bf16:
            out[f"fp8/bf16 tokens/s ({objective})"] = fp8 / bf16
    return out


def dry_run_plan(args) -> dict:
    """What a run would measure, from the configs alone (no CUDA)."""
    from megatron_dlm.training.dry_run import dry_run

    shape = Shape(args.num_layers, args.micro_batch_size, args.micro_batches)
    plan = {}
    for variant in args.variants:
        cfg = variant_config(variant, shape, args.world_size, "transformer_engine")
        report = dry_run(cfg, args.world_size)
        plan[variant] = {
            "parameters": report.total_params,
            "tokens_per_step": report.tokens_per_step,
            "flops_per_step": report.flops_per_step,
            "estimated_memory_gib": report.memory_gb["total"],
            "micro_batch_size": cfg.training.micro_batch_size,
            "micro_batches": report.num_microbatches,
            "num_layers": cfg.model.num_layers,
        }
    return plan


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "megatron-core", "transformer-engine"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--num-layers", type=int, default=28, help="the recipe's: 28")
    parser.add_argument("--micro-batch-size", type=int, default=4, help="the recipe's: 4")
    parser.add_argument("--micro-batches", type=int, default=2, help="per step, per GPU")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense bf16 peak of one GPU (default: looked up by name)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan from the configs; needs no GPU")  # fmt: skip
    parser.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)),
                        help="GPUs --dry-run plans for (default: WORLD_SIZE or 1)")  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.steps, args.num_layers, args.micro_batch_size, args.micro_batches) < 1:
        parser.error("--steps, --num-layers, --micro-batch-size and --micro-batches must be >= 1")

    if args.dry_run:
        plan = dry_run_plan(args)
        print(f"gpu_throughput plan: {args.world_size} GPU(s), recipe {RECIPE.name}")
        for name, p in plan.items():
            print(
                f"  {name:>9}: {p['num_layers']} layers, {p['parameters'] / 1e9:.3f}B parameters, "
                f"{p['micro_batches']} x {p['micro_batch_size']} sequences per GPU per step, "
                f"{p['tokens_per_step']:,} tokens/step, {p['flops_per_step']:.3e} FLOPs/step, "
                f"~{p['estimated_memory_gib']:.1f} GiB per GPU (estimate)"
            )
        if args.output:
            args.output.write_text(json.dumps({"plan": plan}, indent=2))
        return 0

    import torch

    if not torch.cuda.is_available():
        print("gpu_throughput.py: error: needs a CUDA GPU (or --dry-run)", file=sys.stderr)
        return 2
    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.runtime.distributed import destroy_distributed, init_distributed
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings
    from megatron_dlm.training.flops import PEAK_TFLOPS_BF16

    quiet_expected_warnings()
    ctx = init_distributed(ParallelConfig(), seed=1234)
    world = ctx.world_size
    has_te = importlib.util.find_spec("transformer_engine") is not None
    impl = "transformer_engine" if has_te else "local"
    fp8_ok = has_te and torch.cuda.get_device_capability() >= (8, 9)
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS_BF16.items() if k in name), None)
    results: dict[str, dict] = {}
    try:
        for variant in args.variants:
            if variant.endswith("fp8") and not fp8_ok:
                why = "no Transformer Engine" if not has_te else "compute capability < 8.9"
                results[variant] = {"skipped": why}
                continue
            shape, measured = fits(variant, args, world, impl)
            if peak:
                measured["mfu"] = measured["tflops_per_gpu"] / peak
                if variant.endswith("fp8"):
                    measured["fraction_of_fp8_peak"] = measured["tflops_per_gpu"] / (2 * peak)
            results[variant] = measured
            if ctx.is_main:
                print(f"  {variant}: {json.dumps(measured)}", flush=True)
    finally:
        destroy_distributed()
    summary = {
        "gpu": name,
        "gpus": world,
        "peak_bf16_tflops": peak,
        "layers": impl,
        "versions": _versions(),
        "recipe": str(RECIPE.relative_to(REPO)),
        "steps": args.steps,
        "warmup": args.warmup,
        "variants": results,
        "ratios": ratios(results),
    }
    if ctx.is_main:
        print(format_table(summary))
        if args.output:
            args.output.write_text(json.dumps(summary, indent=2))
            print(f"results: {args.output}")
    return 0


def format_table(summary: dict) -> str:
    lines = [
        f"{summary['gpu']} x {summary['gpus']}, {summary['layers']} layers, "
        f"peak {summary['peak_bf16_tflops']} bf16 TFLOP/s, {summary['versions']}",
        f"{'variant':>9} {'layers':>6} {'mbs':>4} {'ms/step':>9} {'tokens/s/GPU':>13} "
        f"{'TFLOP/s/GPU':>12} {'MFU':>6} {'GiB':>6}",
    ]
    for name, r in summary["variants"].items():
        if "skipped" in r:
            lines.append(f"{name:>9} skipped: {r['skipped']}")
            continue
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        lines.append(
            f"{name:>9} {r['num_layers']:>6} {r['micro_batch_size']:>4} {r['step_ms']:>9.1f} "
            f"{r['tokens_per_s_per_gpu']:>13,.0f} {r['tflops_per_gpu']:>12.1f} {mfu:>6} "
            f"{r['peak_memory_gib']:>6.1f}"
        )
    for key, value in summary["ratios"].items():
        lines.append(f"ratio {key} = {value:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
