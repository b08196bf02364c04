"""Cost of the per-sample noise on the data path, side by side with the obvious alternative.

    OMP_NUM_THREADS=1 python bench/objective_noise.py [--batch 8] [--seq 2048]

Times ``Objective.prepare`` (counter-based noise, vectorised over the batch) against a loop
that seeds one ``torch.Generator`` per sample from (seed, sample, epoch) and draws the same
quantities, and against the vocab-parallel loss of the same micro-batch (fp32 logits,
forward + backward) for scale.
"""

from __future__ import annotations

import argparse
import time

import torch

from megatron_dlm.config import ObjectiveConfig
from megatron_dlm.objectives import build_objective
from megatron_dlm.objectives.noise import mask_tokens, masking_ratios, token_uniforms


def _best_ms(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def _generator_loop(batch: dict, seed: int, eps: float, mask_id: int) -> torch.Tensor:
    """The alternative: one stateful generator per sample."""
    tokens = batch["tokens"]
    inputs = tokens.clone()
    for row, (sample, epoch) in enumerate(
        zip(batch["sample_id"].tolist(), batch["epoch"].tolist())
    ):
        gen = torch.Generator().manual_seed(hash((seed, sample, epoch)) & (2**63 - 1))
        t = eps + (1 - eps) * torch.rand((), generator=gen)
        masked = torch.rand(tokens.shape[1], generator=gen) < t
        masked &= batch["loss_mask"][row] > 0
        inputs[row, masked] = mask_id
    return inputs


def _counter_noise(batch: dict, seed: int, eps: float) -> torch.Tensor:
    """What the loop computes, with the counter-based generator (the core of ``prepare``)."""
    sample_id, epoch = batch["sample_id"].numpy(), batch["epoch"].numpy()
    t = masking_ratios(seed, sample_id, epoch, eps=eps, training=True)
    u = token_uniforms(seed, sample_id, epoch, batch["tokens"].shape[1], training=True)
    masked = mask_tokens(u, t, batch["loss_mask"].numpy() > 0)
    return torch.from_numpy(masked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    b, s = args.batch, args.seq
    batch = {
        "tokens": torch.randint(0, args.vocab - 1, (b, s)),
        "labels": torch.randint(0, args.vocab - 1, (b, s)),
        "loss_mask": torch.ones(b, s),
        "position_ids": torch.arange(s).expand(b, s),
        "sample_id": torch.arange(b) * 7919,
        "epoch": torch.full((b,), 3),
    }
    positions = torch.arange(b)
    rows = []
    for name, cfg in [
        ("prepare, defaults", ObjectiveConfig()),
        (
            "prepare, all options",
            ObjectiveConfig(
                dlm_stratified_t=True,
                dlm_at_least_one_mask=True,
                dlm_loss_weight="realised",
                input_mask_prob=0.1,
            ),
        ),
    ]:
        objective = build_objective(cfg, mask_id=args.vocab - 1, seed=1234)
        rows.append(
            (
                name,
                _best_ms(
                    lambda o=objective: o.prepare(
                        batch,
                        training=True,
                        iteration=1,
                        global_positions=positions,
                        global_batch_size=64,
                    ),
                    args.repeats,
                ),
            )
        )
    rows.append(
        (
            "noise only, counter-based",
            _best_ms(lambda: _counter_noise(batch, 1234, 1e-3), args.repeats),
        )
    )
    rows.append(
        (
            "noise only, torch.Generator per sample",
            _best_ms(lambda: _generator_loop(batch, 1234, 1e-3, args.vocab - 1), args.repeats),
        )
    )
    objective = build_objective(ObjectiveConfig(), mask_id=args.vocab - 1, seed=1234)
    prepared = objective.prepare(batch, training=True)
    logits = torch.randn(b, s, args.vocab)

    def loss_step():
        scored = logits.clone().requires_grad_()
        objective.loss(scored, prepared)[0].backward()

    rows.append((f"loss fwd+bwd, V={args.vocab} (scale)", _best_ms(loss_step, 3)))
    print(f"b={b} s={s} threads={torch.get_num_threads()}")
    for name, ms in rows:
        print(f"  {name:<40s} {ms:9.3f} ms   ({ms / rows[0][1]:.1f}x prepare)")


if __name__ == "__main__":
    main()
