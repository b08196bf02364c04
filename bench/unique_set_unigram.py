"""How representative a unique set is: validation unigram cross-entropy, first vs random draws.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/unique_set_unigram.py \\
        --data runs/data/stdlib_train_text_document [--split 969,30,1] \\
        [--unique-tokens 50000] [--seeds 1 2 3 4 5]

As training with ``--data-path DATA --split S --unique-tokens N``: the unique set is drawn from
the training split of --data (megatron_dlm.data.budget), with ``--unique-tokens-sample first``
and, per seed, ``random``, each with ``--unique-tokens-boundary whole`` and ``cut``; its unigram
distribution (add-one smoothing over the tokenizer's vocabulary, read from the dataset's
.meta.json) is scored on every token of the validation split: ``-mean log p(token)`` in nats.
Lower means the set's token frequencies are closer to the held-out data's.
"""

from __future__ import annotations

import argparse

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dlm.data.budget import select_budget_documents, split_document_range
from megatron_dlm.data.metadata import read_dataset_metadata


def token_counts(dataset: IndexedDataset, vocab: int, documents: range, budget=None) -> np.ndarray:
    """Token counts of ``documents`` (or of the budget's kept tokens of them), int64 ``[vocab]``."""
    counts = np.zeros(vocab, dtype=np.int64)
    positions = range(len(documents)) if budget is None else budget.selected
    for position in positions:
        tokens = np.asarray(dataset[documents.start + int(position)], dtype=np.int64)
        if budget is not None and position == budget.boundary_document:
            tokens = tokens[: budget.boundary_tokens]
        counts += np.bincount(tokens, minlength=vocab)
    return counts


def cross_entropy(train_counts: np.ndarray, valid_counts: np.ndarray) -> float:
    p = (train_counts + 1) / (train_counts.sum() + train_counts.size)
    return float(-(valid_counts * np.log(p)).sum() / valid_counts.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="dataset prefix (as --data-path)")
    parser.add_argument("--split", default="969,30,1")
    parser.add_argument("--unique-tokens", type=int, nargs="+", default=[50_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()

    vocab = read_dataset_metadata(args.data).tokenizer["vocab_size"]
    data = IndexedDataset(args.data)
    train = split_document_range(len(data), args.split, "train")
    valid = split_document_range(len(data), args.split, "valid")
    lengths = data.sequence_lengths[train.start : train.stop]
    valid_counts = token_counts(data, vocab, valid)
    print(
        f"--split {args.split}: train documents {train.start}-{train.stop - 1} "
        f"({int(lengths.sum()):,} tokens), valid documents {valid.start}-{valid.stop - 1} "
        f"({int(valid_counts.sum()):,} tokens); vocab {vocab}"
    )

    def score(budget) -> float:
        return cross_entropy(token_counts(data, vocab, train, budget), valid_counts)

    for n in args.unique_tokens:
        for boundary in ("whole", "cut"):
            first = select_budget_documents(lengths, n, sample="first", boundary=boundary)
            drawn = [
                select_budget_documents(lengths, n, sample="random", boundary=boundary, seed=s)
                for s in args.seeds
            ]
            scores = [score(b) for b in drawn]
            print(
                f"N={n:,} {boundary}: first {score(first):.3f} nats ({first.documents} documents, "
                f"{first.tokens:,} tokens); random "
                + ", ".join(
                    f"{x:.3f} ({b.documents} docs, {b.tokens:,} tokens)"
                    for b, x in zip(drawn, scores)
                )
                + f"; random mean {np.mean(scores):.3f}"
            )


if __name__ == "__main__":
    main()
