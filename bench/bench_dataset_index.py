"""Index cost of E epochs over one unique set: Megatron-DLM's epoch replay vs megatron-core.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_dataset_index.py \
        [--tokens 100000000] [--seq-length 2048] [--epochs 1 10 150] [--repeats 3]

For each E, side by side in one process, each build from an empty cache directory:

  ours     build_datasets(--data-path P --split 100,0,0) with train_samples = E x N: megatron-core
           builds a one-epoch GPTDataset index; epochs are permutations derived lazily
  megatron megatron-core GPTDataset through BlendedMegatronDatasetBuilder with num_samples =
           E x N: its document index is tiled E times and shuffled across epochs

(N = samples in one epoch.) Reported: build wall time (median of --repeats), bytes of the index
cache on disk, and for ours the replay state in memory after touching the last epoch and the
time to enter a new epoch (computing its permutation). Target: ours(150) <= 1.1 x ours(1).
The dataset (real stdlib tokens, repeated) is generated once and cached: see dataset_corpus.py.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time

import dataset_corpus  # bench/dataset_corpus.py (the script's folder is on sys.path)


def directory_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def build_ours(prefix, tokenizer, seq_length, num_samples, cache):
    from megatron_dlm.config import DataConfig
    from megatron_dlm.data.datasets import build_datasets

    data = DataConfig(data_path=[prefix], split="100,0,0", data_cache_path=cache)
    start = time.perf_counter()
    train = build_datasets(
        data,
        seq_length=seq_length,
        seed=1234,
        tokenizer=tokenizer,
        train_samples=num_samples,
        valid_samples=0,
        test_samples=0,
    ).train
    train[0]
    return train, time.perf_counter() - start


def build_megatron(prefix, tokenizer, seq_length, num_samples, cache):
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    config = GPTDatasetConfig(
        random_seed=1234,
        sequence_length=seq_length,
        blend=([prefix], None),
        split="100,0,0",
        path_to_cache=cache,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    start = time.perf_counter()
    builder = BlendedMegatronDatasetBuilder(
        GPTDataset, [num_samples, None, None], lambda: True, config
    )
    train = builder.build()[0]
    train[0]
    return train, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000_000)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 10, 150])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus-dir", default=dataset_corpus.DEFAULT_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    prefix = dataset_corpus.dataset_prefix(args.tokens, args.corpus_dir)
    tokenizer = dataset_corpus.load_tokenizer(args.corpus_dir)
    from megatron_dlm.config import DataConfig
    from megatron_dlm.data.plan import plan_datasets

    info = plan_datasets(
        DataConfig(data_path=[prefix], split="100,0,0"), seq_length=args.seq_length, train_samples=1
    )
    per_epoch = info.samples_per_epoch
    print(
        f"unique set: {info.unique_documents:,} documents, {info.unique_tokens:,} tokens; "
        f"seq {args.seq_length}: {per_epoch:,} samples/epoch; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    rows = {}
    for epochs in args.epochs:
        samples = epochs * per_epoch
        times = {"ours": [], "megatron": []}
        for _ in range(args.repeats):
            for name, build in (("ours", build_ours), ("megatron", build_megatron)):
                cache = tempfile.mkdtemp(prefix=f"idx_{name}_")
                try:
                    dataset, seconds = build(prefix, tokenizer, args.seq_length, samples, cache)
                    times[name].append(seconds)
                    disk = directory_bytes(cache)
                    if name == "ours":
                        start = time.perf_counter()
                        dataset[samples - 1]  # enter the last epoch: its permutation is made
                        new_epoch_ms = (time.perf_counter() - start) * 1e3
                        memory = dataset.index_nbytes()
                        rows.setdefault(epochs, {})["ours_extra"] = (new_epoch_ms, memory)
                    rows.setdefault(epochs, {})[name] = disk
                    del dataset
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
        for name in times:
            rows[epochs][name + "_s"] = statistics.median(times[name])

    print(
        f"\n{'epochs':>6} | {'ours s':>8} {'ours disk':>12} {'replay mem':>11} "
        f"{'new epoch':>10} | {'megatron s':>10} {'megatron disk':>14} | {'disk x':>7} "
        f"{'time x':>7}"
    )
    for epochs, r in rows.items():
        new_epoch_ms, memory = r["ours_extra"]
        print(
            f"{epochs:>6} | {r['ours_s']:>8.3f} {r['ours']:>12,} {memory:>11,} "
            f"{new_epoch_ms:>8.1f}ms | {r['megatron_s']:>10.3f} {r['megatron']:>14,} | "
            f"{r['megatron'] / r['ours']:>7.1f} {r['megatron_s'] / r['ours_s']:>7.1f}"
        )
    first, last = args.epochs[0], args.epochs[-1]
    print(
        f"\nours({last})/ours({first}): time {rows[last]['ours_s'] / rows[first]['ours_s']:.2f}, "
        f"disk {rows[last]['ours'] / rows[first]['ours']:.2f}  (target <= 1.1)\n"
        f"megatron({last})/megatron({first}): time "
        f"{rows[last]['megatron_s'] / rows[first]['megatron_s']:.1f}, disk "
        f"{rows[last]['megatron'] / rows[first]['megatron']:.1f}\n"
        f"megatron({last})/ours({last}): time "
        f"{rows[last]['megatron_s'] / rows[last]['ours_s']:.1f}, disk "
        f"{rows[last]['megatron'] / rows[last]['ours']:.1f}"
    )


if __name__ == "__main__":
    main()
