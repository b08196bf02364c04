"""Index cost of E epochs over one unique set: Megatron-DLM's epoch replay vs megatron-core.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/bench_dataset_index.py \
        [--tokens 100000000] [--seq-length 2048] [--epochs 1 10 150] [--repeats 3]

For each E, side by side in one process, each build from an empty cache directory:

  recut    build_datasets(--data-path P --split 100,0,0, --epoch-windows recut) with
           train_samples = E x N: megatron-core builds a one-epoch GPTDataset index; each epoch's
           document order, sample index (megatron-core's build_sample_idx) and window order are
           derived lazily when the epoch is entered
  fixed    the same with --epoch-windows fixed: epochs are permutations of one cut's windows
  megatron megatron-core GPTDataset through BlendedMegatronDatasetBuilder with num_samples =
           E x N: its document index is tiled E times and shuffled across epochs

(N = samples in one epoch.) Reported: build wall time (median of --repeats; it reads the first
sample, so it includes entering epoch 1), bytes of the index cache on disk, and for ours the
replay state in memory after touching the last epoch and the time of the first read of epoch 2
and of the last epoch (recut: it builds the epoch's cut; fixed: its permutation). Target:
ours(150) <= 1.1 x ours(1) in build time, disk and memory, and entering epoch 150 costs what
entering epoch 2 does.
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


def build_ours(prefix, tokenizer, seq_length, num_samples, cache, windows):
    from megatron_dlm.config import DataConfig
    from megatron_dlm.data.datasets import build_datasets

    data = DataConfig(
        data_path=[prefix], split="100,0,0", data_cache_path=cache, epoch_windows=windows
    )
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


def enter_ms(dataset, g: int) -> float:
    """Milliseconds to read position ``g`` (the first read of its epoch builds its index)."""
    start = time.perf_counter()
    dataset[g]
    return (time.perf_counter() - start) * 1e3


def summarise(run: dict) -> dict:
    """Medians of the timed lists (None where nothing was timed); other values as they are."""
    return {
        k: (statistics.median(v) if v else None) if isinstance(v, list) else v
        for k, v in run.items()
    }


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
        DataConfig(data_path=[prefix], split="100,0,0"),
        seq_length=args.seq_length,
        train_samples=1,
        seed=1234,
    )
    per_epoch = info.samples_per_epoch
    print(
        f"unique set: {info.unique_documents:,} documents, {info.unique_tokens:,} tokens; "
        f"seq {args.seq_length}: {per_epoch:,} samples/epoch; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    names = ("recut", "fixed", "megatron")
    for name in names:  # untimed: the first build in a process pays imports and cold caches
        cache = tempfile.mkdtemp(prefix=f"idx_warmup_{name}_")
        build = build_megatron if name == "megatron" else build_ours
        extra = () if name == "megatron" else (name,)
        build(prefix, tokenizer, args.seq_length, per_epoch, cache, *extra)
        shutil.rmtree(cache, ignore_errors=True)
    rows = {}
    for epochs in args.epochs:
        samples = epochs * per_epoch
        runs = {name: {"s": [], "enter_2": [], "enter_last": []} for name in names}
        for _ in range(args.repeats):
            for name in names:
                cache = tempfile.mkdtemp(prefix=f"idx_{name}_")
                try:
                    if name == "megatron":
                        dataset, seconds = build_megatron(
                            prefix, tokenizer, args.seq_length, samples, cache
                        )
                    else:
                        dataset, seconds = build_ours(
                            prefix, tokenizer, args.seq_length, samples, cache, name
                        )
                        if epochs > 1:  # the first reads of epoch 2 and of the last epoch
                            runs[name]["enter_2"].append(enter_ms(dataset, per_epoch))
                            last_epoch = (epochs - 1) * per_epoch
                            runs[name]["enter_last"].append(enter_ms(dataset, last_epoch))
                        runs[name]["memory"] = dataset.index_nbytes()
                    runs[name]["s"].append(seconds)
                    runs[name]["disk"] = directory_bytes(cache)
                    del dataset
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
        rows[epochs] = {name: summarise(r) for name, r in runs.items()}

    print(
        f"\n{'epochs':>6} | {'windows':>8} | {'build s':>8} {'disk B':>12} {'replay mem B':>12} "
        f"{'enter ep 2':>10} {'enter last':>10}"
    )
    for epochs, row in rows.items():
        for name in names:
            r = row[name]
            enter = (
                ("", "")
                if name == "megatron"
                else (
                    "-" if r["enter_2"] is None else f"{r['enter_2']:.1f}ms",
                    "-" if r["enter_last"] is None else f"{r['enter_last']:.1f}ms",
                )
            )
            memory = "" if name == "megatron" else f"{r['memory']:,}"
            print(
                f"{epochs:>6} | {name:>8} | {r['s']:>8.3f} {r['disk']:>12,} {memory:>12} "
                f"{enter[0]:>10} {enter[1]:>10}"
            )
    first, last = args.epochs[0], args.epochs[-1]
    for name in ("recut", "fixed"):
        a, b = rows[first][name], rows[last][name]
        print(
            f"{name}({last})/{name}({first}): build time {b['s'] / a['s']:.2f}, disk "
            f"{b['disk'] / a['disk']:.2f}, replay memory {b['memory'] / a['memory']:.2f} "
            f"(target <= 1.1)"
        )
    mc_a, mc_b = rows[first]["megatron"], rows[last]["megatron"]
    print(
        f"megatron({last})/megatron({first}): time {mc_b['s'] / mc_a['s']:.1f}, disk "
        f"{mc_b['disk'] / mc_a['disk']:.1f}\n"
        f"megatron({last})/recut({last}): time {mc_b['s'] / rows[last]['recut']['s']:.1f}, disk "
        f"{mc_b['disk'] / rows[last]['recut']['disk']:.1f}"
    )


if __name__ == "__main__":
    main()
