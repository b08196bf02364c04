"""Data-loader throughput at quickstart size: samples/s and tokens/s per data-parallel rank.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_data_loader.py \
        [--seq-length 256] [--micro-batch-size 8] [--workers 0 1 2] [--batches 2000]

build_datasets over real stdlib tokens (--unique-tokens 5M, replayed for 100 epochs, so the
stream crosses epoch boundaries, each with new windows unless --epoch-windows fixed) and
build_data_loader for one rank, as the trainer reads it.
For each worker count: --warmup batches (worker start-up, the first epoch's cut) are not timed, then
--batches are. Compare tokens/s with the trainer's tokens/s at the same size: the target is
>= 10x headroom. The dataset is generated once and cached: see dataset_corpus.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import dataset_corpus  # bench/dataset_corpus.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-length", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--unique-tokens", type=int, default=5_000_000)
    parser.add_argument("--epoch-windows", choices=["recut", "fixed"], default="recut")
    parser.add_argument("--tokens", type=int, default=20_000_000, help="dataset size")
    parser.add_argument("--corpus-dir", default=dataset_corpus.DEFAULT_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from megatron_dlm.config import DataConfig
    from megatron_dlm.data.datasets import build_data_loader, build_datasets
    from megatron_dlm.data.plan import plan_datasets

    prefix = dataset_corpus.dataset_prefix(args.tokens, args.corpus_dir)
    tokenizer = dataset_corpus.load_tokenizer(args.corpus_dir)
    data = DataConfig(
        data_path=[prefix],
        split="99,1,0",
        unique_tokens=args.unique_tokens,
        epoch_windows=args.epoch_windows,
        data_cache_path=tempfile.mkdtemp(prefix="loader_bench_"),
    )
    per_epoch = plan_datasets(
        data, seq_length=args.seq_length, train_samples=1, seed=1234
    ).samples_per_epoch
    train = build_datasets(
        data,
        seq_length=args.seq_length,
        seed=1234,
        tokenizer=tokenizer,
        train_samples=100 * per_epoch,
        valid_samples=0,
        test_samples=0,
    ).train
    print(
        f"seq {args.seq_length}, micro-batch {args.micro_batch_size}: {per_epoch:,} samples/epoch "
        f"of --unique-tokens {args.unique_tokens:,}, --epoch-windows {args.epoch_windows}; "
        f"load average {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores"
    )
    batch_tokens = args.micro_batch_size * args.seq_length
    for workers in args.workers:
        # Start just before an epoch boundary so the timed batches cross it.
        consumed = per_epoch - (args.warmup + args.batches // 2) * args.micro_batch_size
        loader = build_data_loader(
            train,
            consumed_samples=max(consumed, 0),
            micro_batch_size=args.micro_batch_size,
            data_parallel_rank=0,
            data_parallel_size=1,
            num_workers=workers,
        )
        batches = iter(loader)
        for _ in range(args.warmup):
            next(batches)
        start = time.perf_counter()
        epochs = set()
        for _ in range(args.batches):
            epochs.update(next(batches)["epoch"].tolist())
        seconds = time.perf_counter() - start
        samples = args.batches * args.micro_batch_size
        print(
            f"workers {workers}: {samples / seconds:>10,.0f} samples/s  "
            f"{args.batches * batch_tokens / seconds:>12,.0f} tokens/s  "
            f"({args.batches} batches in {seconds:.2f} s, epochs {sorted(epochs)})"
        )
        del batches, loader


if __name__ == "__main__":
    main()
