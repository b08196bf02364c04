"""CPU quickstart: the Megatron-DLM pipeline end to end on a laptop-class CPU.

    make quickstart                     # creates .venv, installs, runs this file
    python examples/quickstart.py --output-dir runs/quickstart

Stages (each prints what it did and how long it took):
  1. model    build megatron-core GPTModels (DLM: bidirectional, AR: causal; dense and MoE) and
              run a forward/backward pass on CPU through the CPU shim
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch


def stage_model(output_dir: Path) -> None:
    from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig
    from megatron_dlm.models.provider import build_model
    from megatron_dlm.models.vocab import Vocab
    from megatron_dlm.runtime.distributed import distributed

    vocab = Vocab(size=1000, mask_id=999, eod_id=0, pad_id=1)
    for objective, experts in (("dlm", None), ("ar", None), ("dlm", 4)):
        cfg = DLMConfig(
            model=ModelConfig(
                num_layers=2, hidden_size=128, num_attention_heads=4, seq_length=128,
                num_experts=experts,
            ),
            objective=ObjectiveConfig(objective=objective),
        )  # fmt: skip
        with distributed(cfg.parallel):
            (model,) = build_model(cfg, vocab)
            tokens = torch.randint(2, vocab.size - 1, (4, cfg.model.seq_length))
            positions = torch.arange(cfg.model.seq_length).expand_as(tokens)
            start = time.perf_counter()
            loss = model(tokens, positions, attention_mask=None, labels=tokens).mean()
            loss.backward()
            elapsed = time.perf_counter() - start
            params = sum(p.numel() for p in model.parameters())
            kind = f"MoE ({experts} experts)" if experts else "dense"
            print(
                f"[model] {objective.upper()} {kind}: {params:,} parameters, "
                f"{'bidirectional' if cfg.objective.bidirectional else 'causal'} attention, "
                f"loss {loss.item():.3f}, "
                f"forward+backward {elapsed * 1000:.0f} ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=Path("runs/quickstart"))
    args = parser.parse_args(argv)
    from megatron_dlm.runtime.logging_utils import setup_logging

    setup_logging(logging.WARNING)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stage_model(args.output_dir)
    print(f"[quickstart] done in {time.perf_counter() - start:.0f} s; outputs in {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
