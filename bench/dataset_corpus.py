"""A benchmark-sized indexed dataset from real code: the standard library, repeated.

Shared by bench_dataset_index.py and bench_data_loader.py. A 4096-piece sentencepiece BPE is
trained on part of the running interpreter's standard library; its modules are tokenized (one
document per file, EOD appended) and written again and again with megatron-core's
``IndexedDatasetBuilder`` until the dataset holds the requested tokens. Everything is cached
under ``--corpus-dir`` (default /tmp/megatron_dlm_bench): generating 100M tokens takes ~1 min.
"""

from __future__ import annotations

import os
import sysconfig
import time
from pathlib import Path

import numpy as np

DEFAULT_DIR = "/tmp/megatron_dlm_bench"
VOCAB_SIZE = 4096


def _stdlib_texts(max_bytes: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or total >= max_bytes:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            texts.append(text)
            total += len(text)
    return texts


def tokenizer_model(directory: str = DEFAULT_DIR) -> str:
    """Path of the benchmark's sentencepiece model (trained on first use)."""
    from megatron_dlm.data.tokenizer_training import SentencePieceOptions, train_sentencepiece

    path = Path(directory) / f"stdlib{VOCAB_SIZE}.model"
    if not path.exists():
        options = SentencePieceOptions(vocab_size=VOCAB_SIZE, num_threads=1)
        train_sentencepiece(_stdlib_texts(4_000_000), path.with_suffix(""), options)
    return str(path)


def load_tokenizer(directory: str = DEFAULT_DIR):
    from megatron.core.tokenizers import MegatronTokenizer

    return MegatronTokenizer.from_pretrained(
        tokenizer_model(directory), metadata_path={"library": "sentencepiece"}
    )


def dataset_prefix(tokens: int, directory: str = DEFAULT_DIR) -> str:
    """Prefix of a dataset of at least ``tokens`` tokens (written on first use)."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = str(Path(directory) / f"stdlib_{tokens}_text_document")
    if os.path.exists(prefix + ".idx"):
        return prefix
    tokenizer = load_tokenizer(directory)
    start = time.perf_counter()
    documents = [
        np.array(tokenizer.tokenize(t) + [tokenizer.eod], dtype=np.uint16)
        for t in _stdlib_texts(40_000_000)
    ]
    unique = sum(len(d) for d in documents)
    builder = IndexedDatasetBuilder(prefix + ".bin.tmp", dtype=np.uint16)
    written = 0
    while written < tokens:
        for doc in documents:
            builder.add_document(torch.from_numpy(doc.astype(np.int64)), [len(doc)])
            written += len(doc)
            if written >= tokens:
                break
    builder.finalize(prefix + ".idx.tmp")
    os.replace(prefix + ".bin.tmp", prefix + ".bin")
    os.replace(prefix + ".idx.tmp", prefix + ".idx")
    print(
        f"wrote {prefix}: {written:,} tokens ({unique:,} distinct stdlib tokens repeated) in "
        f"{time.perf_counter() - start:.0f} s"
    )
    return prefix
