"""``--mock-data``: Megatron-LM's synthetic data, as an indexed dataset of the real pipeline.

Megatron-LM's ``--mock-data`` swaps its datasets for megatron-core's ``MockGPTDataset``, which
invents documents in memory. Here the synthetic documents are written once as an ordinary
``.bin``/``.idx`` pair with its ``.meta.json`` sidecar (megatron-core's
``IndexedDatasetBuilder``) and the run reads them as ``--data-path``: the same dataset classes,
budget, epoch re-cutting, resume and checks as real data, so a smoke or throughput run on mock
data exercises exactly the code a real run does.

The documents are a function of ``--seed``, the tokenizer and ``--seq-length`` alone:
:data:`MOCK_DOCUMENTS` documents of uniformly random length in ``1..2 x seq_length`` (mean one
sequence), of token ids drawn uniformly from the tokenizer's own ids other than its special
ones, each ending with the end of document; split by ``--split`` as any ``--data-path``.
Every rank writes the same files under a temporary name and renames them into place, so ranks
that share a file system cannot see a partial file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from megatron_dlm.data.indexed import indexed_dataset_module, optimal_token_dtype
from megatron_dlm.data.metadata import (
    DatasetMetadata,
    tokenizer_fingerprint,
    write_dataset_metadata,
)

logger = logging.getLogger(__name__)

MOCK_DOCUMENTS = 1000
"""Synthetic documents written (about ``MOCK_DOCUMENTS x seq_length`` tokens)."""


def mock_prefix(directory: str | os.PathLike, seed: int, seq_length: int, tokenizer) -> Path:
    """The dataset prefix of the mock data for these settings under ``directory``."""
    key = f"{tokenizer.vocab_sha256[:12]}_v{tokenizer.vocab_size}_s{seq_length}_seed{seed}"
    return Path(directory) / f"mock_{key}_text_document"


def mock_documents(tokenizer, seq_length: int, seed: int) -> list[np.ndarray]:
    """The synthetic documents (see the module docstring)."""
    rng = np.random.default_rng([seed, 0x6D6F636B])  # "mock"
    special = {tokenizer.mask_id, tokenizer.eod, tokenizer.pad}
    ordinary = np.array(
        [i for i in range(tokenizer.original_vocab_size) if i not in special], dtype=np.int64
    )
    if ordinary.size == 0:
        raise ValueError("--mock-data: the tokenizer has no ids besides its special tokens")
    lengths = rng.integers(1, 2 * seq_length + 1, size=MOCK_DOCUMENTS)
    return [
        np.append(ordinary[rng.integers(0, ordinary.size, size=n)], tokenizer.eod) for n in lengths
    ]


def write_mock_dataset(
    directory: str | os.PathLike, tokenizer, *, seq_length: int, seed: int
) -> str:
    """Write (unless it is there) the mock dataset and return its prefix for ``--data-path``."""
    prefix = mock_prefix(directory, seed, seq_length, tokenizer)
    if all(Path(f"{prefix}{s}").is_file() for s in (".bin", ".idx", ".meta.json")):
        return str(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    temp = f"{prefix}.partial-{os.getpid()}-{os.uname().nodename}"
    dtype = optimal_token_dtype(tokenizer.vocab_size)
    documents = mock_documents(tokenizer, seq_length, seed)
    builder = indexed_dataset_module().IndexedDatasetBuilder(temp + ".bin", dtype=dtype)
    try:
        for ids in documents:
            builder.add_document(ids.astype(dtype), [len(ids)])
        builder.finalize(temp + ".idx")
        metadata = DatasetMetadata(
            documents=len(documents),
            tokens=int(sum(len(d) for d in documents)),
            dtype=np.dtype(dtype).name,
            eod_appended=True,
            bin_bytes=os.path.getsize(temp + ".bin"),
            idx_bytes=os.path.getsize(temp + ".idx"),
            tokenizer=tokenizer_fingerprint(tokenizer),
            source={"mock_data": True, "seed": seed, "seq_length": seq_length},
        )
        write_dataset_metadata(temp + ".meta.json", metadata)
        for suffix in (".bin", ".idx", ".meta.json"):  # the sidecar last: it marks completion
            os.replace(temp + suffix, f"{prefix}{suffix}")
    finally:
        for suffix in (".bin", ".idx", ".meta.json"):
            if os.path.exists(temp + suffix):
                os.remove(temp + suffix)
    logger.info(
        "--mock-data: %d synthetic documents (%d tokens) at %s",
        len(documents),
        metadata.tokens,
        prefix,
    )
    return str(prefix)
