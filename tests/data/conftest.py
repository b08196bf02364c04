"""Shared corpora and tokenizers for the data tests: part of the real standard library plus
files with the edge cases it lacks (tabs, CRLF, a BOM, emoji, literal special tokens, and files
that must be skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from megatron_dlm.data.corpus import SourceFile, find_source_files, stdlib_dir
from megatron_dlm.data.tokenizer_training import SentencePieceOptions, train_sentencepiece

REPO = Path(__file__).resolve().parents[2]
# ~700 KB of the standard library; 5 of its files are not ASCII.
STDLIB_SUBSET = ("json", "email", "sqlite3", "re", "urllib", "tomllib")

EDGE_FILES = {
    "tabs.py": "def f(x):\n\tif x:\n\t\treturn x  # tab\tinside\n",
    "crlf.py": "a = 1\r\nb = 2\r\n\r\n",
    "unicode.py": "# café naïve Ωmega 中文 😀\nname = 'ζ'\n",
    "bom.py": "\ufeffprint('bom')\n",
    "formfeed.py": "\x0c\nx = 1\n\u2028y = 2\n",
    "specials.py": "s = '<|mask|> <|eod|> <|pad|> <unk> <s>'\n",
    # sentencepiece's whitespace marker as text (rich's spinners, sparklines).
    "marker.py": "FRAMES = ['\u2581\u2583\u2584\u2585', ' \u2581 ']  # a\u2581b\u2581\n\u2581",
    "spaces.py": "    \n\n        \n",
    "sub/deep/module.py": "import os\n\n\nclass A:\n    pass\n",
}
SKIPPED_FILES = {
    "empty.py": b"",
    "binary.py": b"\x00\x01\x02 binary \xff",
    "latin1.py": "caf\xe9 = 1\n".encode("latin-1"),
}
EXCLUDED_FILES = {"notes.txt": b"not python\n", "sub/tests/test_x.py": b"x = 1\n"}


def run_tool(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python tools/<args>`` from the repository root, as a user would."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stdlib_subset_files() -> list[SourceFile]:
    files = []
    for name in STDLIB_SUBSET:
        files.extend(
            SourceFile(stdlib_dir(), f"{name}/{f.relpath}")
            for f in find_source_files(stdlib_dir() / name, exclude=["**/tests", "**/test"])
        )
    return files


@pytest.fixture(scope="session")
def edge_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edge")
    for name, text in EDGE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text.encode("utf-8"))
    for name, data in {**SKIPPED_FILES, **EXCLUDED_FILES}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="session")
def corpus_texts() -> list[str]:
    """Texts of the standard-library subset (all valid UTF-8)."""
    return [f.path.read_bytes().decode("utf-8") for f in stdlib_subset_files()]


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory, corpus_texts) -> Path:
    """A 1024-piece BPE trained with our settings on the subset (shared by all data tests)."""
    prefix = tmp_path_factory.mktemp("tok") / "subset"
    options = SentencePieceOptions(vocab_size=1024, num_threads=1)
    return train_sentencepiece(corpus_texts + list(EDGE_FILES.values()), prefix, options)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory, sp_model) -> Path:
    from megatron_dlm.data.hf_tokenizer import export_hf_tokenizer

    return export_hf_tokenizer(sp_model, tmp_path_factory.mktemp("hf") / "subset_hf")


@pytest.fixture(scope="session")
def plain_sp_model(tmp_path_factory, corpus_texts) -> Path:
    """A sentencepiece model without our special tokens (as most published ones)."""
    import sentencepiece

    prefix = tmp_path_factory.mktemp("plain") / "plain"
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_texts[:50]),
        model_prefix=str(prefix),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        max_sentence_length=1 << 24,
        minloglevel=2,
        num_threads=1,
    )
    return Path(f"{prefix}.model")


@pytest.fixture(scope="session")
def sp_tokenizer(sp_model):
    """The DLMTokenizer (megatron-core) of ``sp_model``."""
    from megatron_dlm.data.tokenizer import load_tokenizer

    return load_tokenizer(sp_model)


@pytest.fixture(scope="session")
def hf_tokenizer(hf_dir):
    from megatron_dlm.data.tokenizer import load_tokenizer

    return load_tokenizer(hf_dir, "HuggingFaceTokenizer")


@pytest.fixture(scope="session")
def dataset_prefix(tmp_path_factory, sp_model) -> str:
    """The standard-library subset preprocessed (in process) with ``sp_model``."""
    from megatron_dlm.data.preprocess import PreprocessOptions, preprocess_files

    prefix = tmp_path_factory.mktemp("data") / "subset"
    options = PreprocessOptions(str(prefix), str(sp_model), workers=1, progress_bar=False)
    preprocess_files(stdlib_subset_files(), options)
    return f"{prefix}_text_document"


# --- training-dataset fixtures: a MegatronTokenizer and indexed datasets ---

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


def train_dataset_sentencepiece(path: Path, texts: list[str], vocab_size: int) -> Path:
    """The project's code tokenizer settings (tokenizer_training), written to ``path``."""
    options = SentencePieceOptions(vocab_size=vocab_size, num_threads=1)
    return train_sentencepiece(texts, path.with_suffix(""), options)


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
    model = train_dataset_sentencepiece(root / "stdlib.model", texts_a + texts_b, VOCAB_SIZE)
    tokenizer = load_tokenizer(model)
    small = load_tokenizer(train_dataset_sentencepiece(root / "small.model", texts_a[:10], 400))
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
