"""Training step time: DLM vs AR, and this trainer vs a bare megatron-core loop.

    python bench/bench_training.py [--steps 10] [--threads 2]

One process, one rank (gloo), fp32 on the CPU; the variants run interleaved, round by round, so
machine noise hits them alike. The same model (4 layers, hidden 256, vocab 8192, seq 256,
micro-batch 8, 2 micro-batches per step), the same batches:

  trainer-dlm   Trainer.train_step with --objective dlm (noise, masked ELBO loss, reports,
                NaN-guarded optimizer step)
  trainer-ar    Trainer.train_step with --objective ar (causal attention, next-token loss)
  bare-ar       megatron-core only: DDP, get_megatron_optimizer, forward_backward_func with a
                forward step computing the next-token loss directly, optimizer.step()

Prints median ms/step and the ratios trainer-dlm/trainer-ar (target <= 1.03) and
trainer-ar/bare-ar (target <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

SEQ, MBS, MICRO, VOCAB = 256, 8, 2, 8192


def _config(objective: str):
    from megatron_dlm.config.cli import parse_config

    return parse_config(
        [
            "--num-layers",
            "4",
            "--hidden-size",
            "256",
            "--num-attention-heads",
            "4",
            "--seq-length",
            str(SEQ),
            "--micro-batch-size",
            str(MBS),
            "--global-batch-size",
            str(MBS * MICRO),
            "--train-iters",
            "1000",
            "--objective",
            objective,
            "--dlm-random-length-prob",
            "0",
            "--lr",
            "1e-4",
            # The modern architecture the benchmark was recorded with (the defaults are
            # Megatron-LM's: docs/megatron-lm.md).
            "--position-embedding-type",
            "rope",
            "--normalization",
            "RMSNorm",
            "--swiglu",
            "--disable-bias-linear",
            "--hidden-dropout",
            "0",
            "--attention-dropout",
            "0",
            "--ffn-hidden-size",
            "704",
            "--adam-beta2",
            "0.95",
            "--lr-decay-style",
            "cosine",
        ]  # fmt: skip
    )


def _batches(seed: int):
    gen = torch.Generator().manual_seed(seed)
    sample = 0
    while True:
        tokens = torch.randint(4, VOCAB, (MBS, SEQ + 1), generator=gen)
        yield {
            "tokens": tokens[:, :-1],
            "labels": tokens[:, 1:],
            "loss_mask": torch.ones(MBS, SEQ),
            "position_ids": torch.arange(SEQ).expand(MBS, -1),
            "sample_id": torch.arange(sample, sample + MBS),
            "epoch": torch.zeros(MBS, dtype=torch.long),
        }
        sample += MBS


def _trainer(objective: str):
    from megatron_dlm.models.vocab import Vocab
    from megatron_dlm.objectives import build_objective
    from megatron_dlm.training.batching import resolve_batch_layout
    from megatron_dlm.training.model_setup import setup_model
    from megatron_dlm.training.optimizer import build_optimizer, build_scheduler
    from megatron_dlm.training.trainer import Trainer

    cfg = _config(objective)
    layout = resolve_batch_layout(cfg, 1)
    model = setup_model(cfg, Vocab(size=VOCAB, mask_id=3, eod_id=2, pad_id=1))
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, layout.train_iters)
    objective_fn = build_objective(cfg.objective, mask_id=3, seed=1)
    trainer = Trainer(
        cfg, model=model, optimizer=optimizer, scheduler=scheduler, objective=objective_fn,
        layout=layout, train_data=lambda consumed: _batches(0),
    )  # fmt: skip
    data = _batches(0)
    return lambda: trainer.train_step(data)


def _bare_ar():
    """A minimal megatron-core training step: what the trainer is measured against."""
    from megatron.core import tensor_parallel
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_dlm.models.vocab import Vocab
    from megatron_dlm.training.model_setup import setup_model
    from megatron_dlm.training.optimizer import build_optimizer

    cfg = _config("ar")
    model = setup_model(cfg, Vocab(size=VOCAB, mask_id=3, eod_id=2, pad_id=1))
    optimizer = build_optimizer(cfg, model)
    data = _batches(0)

    def loss_func(labels, output):
        losses = tensor_parallel.vocab_parallel_cross_entropy(output.float(), labels)
        loss_sum = losses.sum()
        n = torch.tensor(labels.numel(), dtype=torch.int)
        return loss_sum, n, {"lm loss": torch.stack([loss_sum.detach(), n.float()])}

    def forward_step(data_iterator, module):
        batch = next(data_iterator)
        output = module(batch["tokens"], batch["position_ids"], attention_mask=None)
        return output, partial(loss_func, batch["labels"])

    def step():
        model[0].zero_grad_buffer()
        optimizer.zero_grad()
        get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=data, model=model,
            num_microbatches=MICRO, seq_length=SEQ, micro_batch_size=MBS, forward_only=False,
        )  # fmt: skip
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10, help="timed rounds per variant")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.runtime.distributed import init_distributed
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings

    quiet_expected_warnings()
    init_distributed(ParallelConfig(), seed=1)
    variants = {"trainer-dlm": _trainer("dlm"), "trainer-ar": _trainer("ar"), "bare-ar": _bare_ar()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for step in variants.values():  # warm-up
        step()
        step()
    for _ in range(args.steps):
        for name, step in variants.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(
        f"torch {torch.__version__}, {args.threads} threads, fp32, 4 layers x 256, "
        f"vocab {VOCAB}, {MICRO} micro-batches of {MBS} x {SEQ} tokens per step"
    )
    for name, value in med.items():
        print(f"{name:>12}: {value:8.1f} ms/step (stdev {statistics.pstdev(times[name]):.1f}, "
              f"{args.steps} rounds)")  # fmt: skip
    print(f"ratio trainer-dlm / trainer-ar = {med['trainer-dlm'] / med['trainer-ar']:.3f}")
    print(f"ratio trainer-ar / bare-ar     = {med['trainer-ar'] / med['bare-ar']:.3f}")


if __name__ == "__main__":
    main()
