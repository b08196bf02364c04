"""Checkpoint save and resume time: the distributed optimizer's two formats side by side.

    python bench/bench_checkpoint_formats.py [--rounds 3] [--layers 8] [--hidden 512]

Two ranks (gloo, DP=2) with --use-distributed-optimizer, fp32, one training step taken so the
Adam state exists. Each round saves and then loads a full checkpoint (model, optimizer,
schedule, RNG) in each format, interleaved so machine noise hits both alike; a first round
warms up (dist_checkpointing's one-time setup) and is not counted:

  dp_reshardable     megatron-core's default: every rank writes and reads its own optimizer
                     shard, no gather (resumes at any DP size, the same TP/PP/EP)
  fully_reshardable  --dist-ckpt-optim-fully-reshardable: the state gathered per parameter
                     (resumes at any layout)

and, in the same rounds, the default format saved with --async-save (the time the training
loop is blocked, and the time until the checkpoint is complete on disk) and the share of a
resume spent verifying the files against the checkpoint's manifest.

Prints median seconds per save and per resume (the slower rank's), the ratios
fully_reshardable / dp_reshardable and sync / async (blocked time), the manifest check's cost,
and the checkpoint sizes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

SEQ, MBS, VOCAB = 128, 4, 8192
FORMATS = ("dp_reshardable", "fully_reshardable")


def _config(layers: int, hidden: int):
    from megatron_dlm.config.cli import parse_config

    return parse_config(
        [
            "--num-layers",
            str(layers),
            "--hidden-size",
            str(hidden),
            "--num-attention-heads",
            "8",
            "--seq-length",
            str(SEQ),
            "--micro-batch-size",
            str(MBS),
            "--global-batch-size",
            str(2 * MBS),
            "--train-iters",
            "1000",
            "--use-distributed-optimizer",
            "--lr",
            "1e-4",
            "--use-cpu-initialization",
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
            str(-(-int(8 * hidden / 3) // 64) * 64),
            "--adam-beta2",
            "0.95",
            "--lr-decay-style",
            "cosine",
        ]  # fmt: skip
    )


def _batches():
    gen = torch.Generator().manual_seed(0)
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


def measure(layers: int, hidden: int, rounds: int, workdir: str) -> dict:
    """Rank function: save and resume times per format (collective)."""
    from megatron_dlm.checkpoint import (
        CheckpointSaver,
        TrainState,
        load_checkpoint,
        resolve_checkpoint,
        save_checkpoint,
        verify_checkpoint,
    )
    from megatron_dlm.models.vocab import Vocab
    from megatron_dlm.objectives import build_objective
    from megatron_dlm.runtime.distributed import init_distributed
    from megatron_dlm.runtime.logging_utils import quiet_expected_warnings
    from megatron_dlm.training.batching import resolve_batch_layout
    from megatron_dlm.training.model_setup import count_parameters, setup_model
    from megatron_dlm.training.optimizer import build_optimizer, build_scheduler
    from megatron_dlm.training.trainer import Trainer

    quiet_expected_warnings()
    cfg = _config(layers, hidden)
    ctx = init_distributed(cfg.parallel, seed=1)
    layout = resolve_batch_layout(cfg, ctx.data_parallel_size)
    model = setup_model(cfg, Vocab(size=VOCAB, mask_id=3, eod_id=2, pad_id=1))
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer, layout.train_iters)
    objective = build_objective(cfg.objective, mask_id=3, seed=1)
    trainer = Trainer(
        cfg, model=model, optimizer=optimizer, scheduler=scheduler, objective=objective,
        layout=layout, train_data=lambda consumed: _batches(),
    )  # fmt: skip
    trainer.train_step(_batches())
    state = TrainState(iteration=1, consumed_samples=layout.global_batch_size)
    times: dict[str, dict[str, list[float]]] = {f: {"save": [], "resume": []} for f in FORMATS}
    asynchronous: dict[str, list[float]] = {"blocked": [], "complete": [], "verify": []}
    saver = CheckpointSaver(Path(workdir) / "async", async_save=True)
    sizes = {}

    def timed(fn) -> float:
        torch.distributed.barrier()
        start = time.perf_counter()
        fn()
        torch.distributed.barrier()
        elapsed = torch.tensor([time.perf_counter() - start])
        torch.distributed.all_reduce(elapsed, op=torch.distributed.ReduceOp.MAX)
        return float(elapsed)

    for round_index in range(rounds + 1):  # round 0 warms up (first-save setup), not counted
        for name in FORMATS:
            root = Path(workdir) / name
            times[name]["save"].append(
                timed(
                    lambda root=root, name=name: save_checkpoint(
                        root,
                        state,
                        model,
                        optimizer,
                        scheduler,
                        fully_reshardable=name == "fully_reshardable",
                    )  # fmt: skip
                )
            )
            times[name]["resume"].append(
                timed(lambda root=root: load_checkpoint(root, model, optimizer, scheduler))
            )
            sizes[name] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
            if round_index == 0:
                times[name]["save"].pop()
                times[name]["resume"].pop()
        # --async-save: save() returns once the state is staged; close() waits for the writer
        # and completes the checkpoint (manifest, rename, tracker).
        start = time.perf_counter()
        blocked = timed(lambda: saver.save(state, model, optimizer, scheduler))
        saver.close()
        torch.distributed.barrier()
        complete = torch.tensor([time.perf_counter() - start])
        torch.distributed.all_reduce(complete, op=torch.distributed.ReduceOp.MAX)
        directory = resolve_checkpoint(saver.root)
        verify = timed(lambda directory=directory: verify_checkpoint(directory))
        if round_index > 0:
            asynchronous["blocked"].append(blocked)
            asynchronous["complete"].append(float(complete))
            asynchronous["verify"].append(verify)
    return {
        "times": times,
        "async": asynchronous,
        "sizes": sizes,
        "parameters": count_parameters(model),  # DP=2: each rank holds the whole model
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per format")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512)
    args = parser.parse_args()
    from megatron_dlm.testing import run_distributed

    workdir = tempfile.mkdtemp(prefix="bench_ckpt_")
    try:
        result = run_distributed(
            measure, 2, args=(args.layers, args.hidden, args.rounds, workdir), timeout=3600
        )[0]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    times, sizes = result["times"], result["sizes"]
    print(
        f"torch {torch.__version__}, 2 ranks (gloo, DP=2), --use-distributed-optimizer, fp32, "
        f"{args.layers} layers x {args.hidden}, vocab {VOCAB} "
        f"({result['parameters'] / 1e6:.1f}M parameters), {args.rounds} rounds after a warm-up"
    )
    med = {f: {k: statistics.median(v) for k, v in times[f].items()} for f in FORMATS}
    for name in FORMATS:
        print(
            f"{name:>18}: save {med[name]['save']:6.2f} s, resume {med[name]['resume']:6.2f} s, "
            f"{sizes[name] / 2**20:.0f} MiB"
        )
    for kind in ("save", "resume"):
        ratio = med["fully_reshardable"][kind] / med["dp_reshardable"][kind]
        print(f"ratio {kind} fully_reshardable / dp_reshardable = {ratio:.2f}")
    a = {k: statistics.median(v) for k, v in result["async"].items()}
    sync_save, resume = med["dp_reshardable"]["save"], med["dp_reshardable"]["resume"]
    print(
        f"dp_reshardable --async-save: training blocked {a['blocked']:6.2f} s, checkpoint "
        f"complete after {a['complete']:6.2f} s"
    )
    print(f"ratio save blocked sync / async = {sync_save / a['blocked']:.2f}")
    print(
        f"manifest verification at load: {a['verify']:.3f} s = "
        f"{100 * a['verify'] / resume:.1f}% of a dp_reshardable resume ({resume:.2f} s)"
    )


if __name__ == "__main__":
    main()
