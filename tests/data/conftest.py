"""Real test data: a sentencepiece model and indexed datasets from the standard library.

Session fixtures, built once (~3 s): a 512-piece sentencepiece BPE trained on standard-library
sources, wrapped by megatron-core's ``MegatronTokenizer``; and two indexed datasets written with
megatron-core's ``IndexedDatasetBuilder`` (one document per source file, EOD appended).
"""

from __future__ import annotations

import io
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

VOCAB_SIZE = 512


def stdlib_sources(start: int, count: int) -> list[str]:
    """``count`` small standard-library modules (sorted by name), as text."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(root.glob("*.py")) if 2_000 < p.stat().st_size < 40_000]
    return [p.read_text(encoding="utf-8") for p in files[start : start + count]]


def chunk_documents(texts: list[str], lines: int = 40) -> list[str]:
    """Cut sources into documents of ``lines`` lines: many short documents of uneven length."""
    chunks = []
    for text in texts:
        rows = text.splitlines(keepends=True)
        chunks += ["".join(rows[i : i + lines]) for i in range(0, len(rows), lines)]
    return [c for c in chunks if c.strip()]


def train_sentencepiece(path: Path, texts: list[str], vocab_size: int) -> Path:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        split_by_whitespace=False,
        byte_fallback=True,
        max_sentence_length=1 << 20,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        eos_piece="<|eod|>",
        pad_piece="<|pad|>",
        user_defined_symbols=["<|mask|>"],
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


def load_tokenizer(path: Path):
    from megatron.core.tokenizers import MegatronTokenizer

    return MegatronTokenizer.from_pretrained(str(path), metadata_path={"library": "sentencepiece"})


def write_indexed(prefix: Path, documents: list[list[int]], dtype=np.uint16) -> str:
    """Write ``documents`` (token-id lists) as ``{prefix}.bin/.idx``; returns the prefix."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=dtype)
    for doc in documents:
        builder.add_document(torch.tensor(doc, dtype=torch.int64), [len(doc)])
    builder.finalize(str(prefix) + ".idx")
    return str(prefix)


@dataclass(frozen=True)
class Corpus:
    """Two datasets (``a``: 60 modules, ``b``: the next 40, in 40-line documents), their
    tokenizer, and a smaller tokenizer that did not write them."""

    tokenizer: object
    tokenizer_path: Path
    a: str
    b: str
    lengths_a: np.ndarray
    lengths_b: np.ndarray
    small_tokenizer: object


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    texts_a, texts_b = stdlib_sources(0, 60), stdlib_sources(60, 40)
    model = train_sentencepiece(root / "stdlib.model", texts_a + texts_b, VOCAB_SIZE)
    tokenizer = load_tokenizer(model)
    small = load_tokenizer(train_sentencepiece(root / "small.model", texts_a[:10], 400))
    docs_a = [tokenizer.tokenize(t) + [tokenizer.eod] for t in chunk_documents(texts_a)]
    docs_b = [tokenizer.tokenize(t) + [tokenizer.eod] for t in chunk_documents(texts_b)]
    return Corpus(
        tokenizer=tokenizer,
        tokenizer_path=model,
        a=write_indexed(root / "a_text_document", docs_a),
        b=write_indexed(root / "b_text_document", docs_b),
        lengths_a=np.array([len(d) for d in docs_a]),
        lengths_b=np.array([len(d) for d in docs_b]),
        small_tokenizer=small,
    )
