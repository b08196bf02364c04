"""Documents and tokens of indexed datasets, and the epochs a training budget implies.

Reads {PREFIX}.idx/.bin (checked against each other) and the {PREFIX}.meta.json sidecar that
tools/preprocess_data.py writes (tokenizer, source). With a budget, says how many times the
unique tokens are repeated:

    epochs = training tokens / unique tokens
    training tokens = --train-tokens, or --train-iters x --global-batch-size x --seq-length
    unique tokens   = --unique-tokens, drawn from the documents exactly as training draws them
                      (same --seed, --unique-tokens-sample and --unique-tokens-boundary; with
                      several prefixes, split between them by their token counts), or all tokens

The prefixes are the training data as --train-data-path gives it; --split 969,30,1 takes the
training split of each, as --data-path does. A --unique-tokens larger than the data is an error
(training would refuse it too).

Examples:

    python tools/dataset_info.py runs/data/stdlib_train_text_document
    python tools/dataset_info.py runs/data/stdlib_train_text_document \\
        --unique-tokens 1e6 --train-tokens 150e6
    python tools/dataset_info.py runs/data/stdlib_text_document --split 969,30,1 \\
        --unique-tokens 1e6 --unique-tokens-sample first --seed 1234
    python tools/dataset_info.py data/a_text_document data/b_text_document \\
        --train-iters 20000 --global-batch-size 256 --seq-length 2048 --json

Exit status: 0, 1 for a missing or corrupt dataset or an impossible budget, 2 for bad flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from megatron_dlm.config import TrainingConfig
from megatron_dlm.data.budget import blend_budgets, split_document_range, split_fractions
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
    parser.add_argument(
        "--unique-tokens-sample",
        choices=["random", "first"],
        default="random",
        help="which documents --unique-tokens keeps: a random sample seeded by --seed, or the "
        "first ones (as training; default: random)",
    )
    parser.add_argument(
        "--unique-tokens-boundary",
        choices=["cut", "whole"],
        default="cut",
        help="the last document kept: cut so that the count is exact, or whole (default: cut)",
    )
    seed = next(f.default for f in dataclasses.fields(TrainingConfig) if f.name == "seed")
    parser.add_argument(
        "--seed", type=int, default=seed, help=f"the training seed (default: {seed})"
    )
    parser.add_argument(
        "--split",
        help="take the training split of each prefix, as --data-path with --split does "
        "(default: the whole prefixes, as --train-data-path)",
    )
    parser.add_argument("--train-tokens", type=_count, help="training budget in tokens")
    parser.add_argument("--train-iters", type=_count, help="training budget in iterations")
    parser.add_argument("--global-batch-size", type=_count, help="sequences per iteration")
    parser.add_argument("--seq-length", type=_count, help="tokens per sequence")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    if args.split is not None:
        try:
            split_fractions(args.split)
        except ValueError as exc:
            parser.error(str(exc))
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
    try:
        meta = read_dataset_metadata(summary.prefix)
        info["tokenizer"] = meta.tokenizer.to_dict()
        info["eod_appended"] = meta.eod_appended
    except DatasetMetadataError:
        info["tokenizer"] = None  # e.g. written by Megatron-LM's tool
    return info


def training_lengths(args: argparse.Namespace, summary: IndexSummary) -> np.ndarray:
    """Tokens per document of the prefix's training documents (all, or its --split share)."""
    if args.split is None:
        return summary.document_lengths
    documents = split_document_range(summary.num_documents, args.split, "train")
    if documents is None:
        raise ValueError(f"--split {args.split} gives the training split no documents")
    return summary.document_lengths[documents.start : documents.stop]


def budget(args: argparse.Namespace, summaries: list[IndexSummary]) -> dict | None:
    """Unique and training tokens, and epochs; raises ValueError for an impossible budget."""
    lengths = [training_lengths(args, s) for s in summaries]
    total = sum(int(x.sum()) for x in lengths)
    train = args.train_tokens
    if args.train_iters:
        train = args.train_iters * args.global_batch_size * args.seq_length
    if not train and not args.unique_tokens:
        return None
    if not args.unique_tokens:
        result = {"unique_tokens": total, "unique_documents": sum(len(x) for x in lengths)}
    else:
        if args.unique_tokens > total:
            data = (
                "the data" if args.split is None else f"the training split (--split {args.split})"
            )
            raise ValueError(
                f"--unique-tokens {args.unique_tokens:,} is larger than {data}: {total:,} tokens "
                f"in {len(summaries)} dataset(s); lower it or add data"
            )
        budgets = blend_budgets(
            lengths,
            args.unique_tokens,
            weights=None,
            sample=args.unique_tokens_sample,
            boundary=args.unique_tokens_boundary,
            seed=args.seed,
            names=[s.prefix for s in summaries],
        )
        result = {
            "unique_tokens": sum(b.tokens for b in budgets),
            "unique_documents": sum(b.documents for b in budgets),
            "requested_unique_tokens": args.unique_tokens,
            "sample": args.unique_tokens_sample,
            "boundary": args.unique_tokens_boundary,
            "seed": args.seed if args.unique_tokens_sample == "random" else None,
            "boundary_documents_cut": sum(b.is_cut for b in budgets),
        }
    unique = result["unique_tokens"]
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
                f"eod {tok['eod_id']}, pad {tok['pad_id']}, mask {tok['mask_id']})"
            )
        else:
            lines.append(f"  no {metadata_path(info['prefix'])}: tokenizer unknown")
    if len(infos) > 1:
        lines.append(
            f"total: {sum(i['documents'] for i in infos):,} documents, "
            f"{sum(i['tokens'] for i in infos):,} tokens"
        )
    if plan and "requested_unique_tokens" in plan:
        how = (
            f"drawn at random with --seed {plan['seed']}"
            if plan["sample"] == "random"
            else "the first ones"
        )
        cut = plan["boundary_documents_cut"]
        lines.append(
            f"unique tokens: {plan['unique_tokens']:,} in {plan['unique_documents']:,} documents "
            f"({how}; {cut or 'no'} boundary document{'s' if cut != 1 else ''} cut)"
        )
    elif plan:
        lines.append(
            f"unique tokens: {plan['unique_tokens']:,} (all {plan['unique_documents']:,} "
            f"training documents)"
        )
    if plan and "epochs" in plan:
        epochs = plan["epochs"]
        verdict = (
            f"the budget repeats the unique tokens {epochs:,.2f} times"
            if epochs > 1
            else "less than one pass over the unique tokens"
        )
        lines.append(
            f"budget: {plan['train_tokens']:,} training tokens = {epochs:,.2f} epochs ({verdict})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    try:
        summaries = [read_index(p) for p in args.prefix]
        plan = budget(args, summaries)
    except (IndexedDatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    infos = [describe(s) for s in summaries]
    if args.json:
        print(json.dumps({"datasets": infos, "budget": plan}, indent=2))
    else:
        print(report(infos, plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
