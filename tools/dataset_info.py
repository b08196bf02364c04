"""Documents and tokens of indexed datasets, and the epochs a training budget implies.

Reads {PREFIX}.idx/.bin (checked against each other) and the {PREFIX}.meta.json sidecar that
tools/preprocess_data.py writes (tokenizer, source). With a budget, says how many times the
unique tokens are repeated:

    epochs = training tokens / unique tokens
    training tokens = --train-tokens, or --train-iters x --global-batch-size x --seq-length
    unique tokens   = --unique-tokens (the first documents holding that many tokens; the
                      training data loader defines the exact boundary rule), or all tokens

A --unique-tokens larger than the data is an error (training would refuse it too).

Examples:

    python tools/dataset_info.py runs/data/stdlib_train_text_document
    python tools/dataset_info.py runs/data/stdlib_train_text_document \\
        --unique-tokens 1e6 --train-tokens 150e6
    python tools/dataset_info.py data/a_text_document data/b_text_document \\
        --train-iters 20000 --global-batch-size 256 --seq-length 2048 --json

Exit status: 0, 1 for a missing or corrupt dataset (a corrupt .meta.json included) or an
impossible budget, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from megatron_dlm.data.indexed import IndexedDatasetError, IndexSummary, read_index
from megatron_dlm.data.metadata import (
    DatasetMetadataError,
    metadata_path,
    read_dataset_metadata,
)


def _count(text: str) -> int:
    """Integers also as 1e9 / 1.5e6."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if value <= 0 or not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prefix", nargs="+", help="dataset prefix(es), without .bin/.idx")
    parser.add_argument("--unique-tokens", type=_count, help="cap on unique training tokens")
    parser.add_argument("--train-tokens", type=_count, help="training budget in tokens")
    parser.add_argument("--train-iters", type=_count, help="training budget in iterations")
    parser.add_argument("--global-batch-size", type=_count, help="sequences per iteration")
    parser.add_argument("--seq-length", type=_count, help="tokens per sequence")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    by_iters = (args.train_iters, args.global_batch_size, args.seq_length)
    if args.train_tokens and any(by_iters):
        parser.error("give --train-tokens or --train-iters/--global-batch-size/--seq-length")
    if any(by_iters) and not all(by_iters):
        parser.error("--train-iters needs --global-batch-size and --seq-length")
    return args


def describe(summary: IndexSummary) -> dict:
    lengths = summary.document_lengths
    info = {
        "prefix": summary.prefix,
        "documents": summary.num_documents,
        "tokens": summary.num_tokens,
        "dtype": summary.dtype.name,
        "bytes": summary.bin_bytes + summary.idx_bytes,
        "tokens_per_document": {
            "mean": float(lengths.mean()) if lengths.size else 0.0,
            "median": float(np.median(lengths)) if lengths.size else 0.0,
            "max": int(lengths.max()) if lengths.size else 0,
        },
    }
    if not os.path.exists(metadata_path(summary.prefix)):
        info["tokenizer"] = None  # e.g. written by Megatron-LM's tool
        return info
    meta = read_dataset_metadata(summary.prefix)  # a sidecar that exists must be readable
    for suffix, recorded in ((".bin", meta.bin_bytes), (".idx", meta.idx_bytes)):
        actual = summary.bin_bytes if suffix == ".bin" else summary.idx_bytes
        if actual != recorded:
            raise DatasetMetadataError(
                f"{metadata_path(summary.prefix)!r} describes a {recorded}-byte {suffix} file "
                f"but {summary.prefix}{suffix} has {actual} bytes: the files are from different "
                "runs; re-run tools/preprocess_data.py"
            )
    info["tokenizer"] = meta.tokenizer
    info["eod_appended"] = meta.eod_appended
    return info


def budget(args: argparse.Namespace, summaries: list[IndexSummary]) -> dict | None:
    """Unique and training tokens, and epochs; raises ValueError for an impossible budget."""
    total = sum(s.num_tokens for s in summaries)
    train = args.train_tokens
    if args.train_iters:
        train = args.train_iters * args.global_batch_size * args.seq_length
    if not train and not args.unique_tokens:
        return None
    unique = args.unique_tokens or total
    if unique > total:
        raise ValueError(
            f"--unique-tokens {unique:,} is larger than the data: {total:,} tokens in "
            f"{len(summaries)} dataset(s); lower it or add data"
        )
    lengths = np.concatenate([s.document_lengths for s in summaries])
    documents = int(np.searchsorted(np.cumsum(lengths), unique) + 1)
    result = {"unique_tokens": unique, "unique_documents": min(documents, lengths.size)}
    if train:
        result.update(train_tokens=train, epochs=train / unique)
    return result


def report(infos: list[dict], plan: dict | None) -> str:
    lines = []
    for info in infos:
        t = info["tokens_per_document"]
        lines.append(
            f"{info['prefix']}: {info['documents']:,} documents, {info['tokens']:,} tokens "
            f"({info['dtype']}, {info['bytes'] / 1e6:,.1f} MB); tokens/document mean "
            f"{t['mean']:,.0f}, median {t['median']:,.0f}, max {t['max']:,}"
        )
        tok = info["tokenizer"]
        if tok:
            lines.append(
                f"  tokenizer: {tok['type']} {tok['model']} (vocab {tok['vocab_size']}, "
                f"eod {tok['eod']}, pad {tok['pad']}, mask {tok['mask']})"
            )
        else:
            lines.append(f"  no {metadata_path(info['prefix'])}: tokenizer unknown")
    if len(infos) > 1:
        lines.append(
            f"total: {sum(i['documents'] for i in infos):,} documents, "
            f"{sum(i['tokens'] for i in infos):,} tokens"
        )
    if plan:
        lines.append(
            f"unique tokens: {plan['unique_tokens']:,} (the first {plan['unique_documents']:,} "
            f"documents hold them)"
        )
        if "epochs" in plan:
            epochs = plan["epochs"]
            verdict = (
                f"the budget repeats the unique tokens {epochs:,.2f} times"
                if epochs > 1
                else "less than one pass over the unique tokens"
            )
            lines.append(
                f"budget: {plan['train_tokens']:,} training tokens = {epochs:,.2f} epochs "
                f"({verdict})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    try:
        summaries = [read_index(p) for p in args.prefix]
        plan = budget(args, summaries)
        infos = [describe(s) for s in summaries]
    except (IndexedDatasetError, ValueError) as exc:  # DatasetMetadataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"datasets": infos, "budget": plan}, indent=2))
    else:
        print(report(infos, plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
