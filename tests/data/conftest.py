"""Shared corpora and tokenizers for the data tests: part of the real standard library plus
files with the edge cases it lacks (tabs, CRLF, a BOM, emoji, literal special tokens, and files
that must be skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
