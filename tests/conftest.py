"""Shared fixtures. ``tiny_data``: real training data (part of the standard library, tokenized).

Built once per session (~5 s): a 1024-piece sentencepiece tokenizer (our code settings), and a
train and a valid dataset written by the preprocessing pipeline from disjoint files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from megatron_dlm.data.corpus import SourceFile, find_source_files, stdlib_dir
from megatron_dlm.data.preprocess import PreprocessOptions, preprocess_files
from megatron_dlm.data.tokenizer_training import SentencePieceOptions, train_sentencepiece

TRAIN_PACKAGES = ("json", "email", "http", "logging", "xml")
VALID_PACKAGES = ("tomllib", "urllib")


@dataclass(frozen=True)
class TinyData:
    tokenizer: Path
    train: str
    valid: str

    def flags(self) -> list[str]:
        return [
            "--tokenizer-model", str(self.tokenizer),
            "--train-data-path", self.train,
            "--valid-data-path", self.valid,
            "--num-workers", "0",
        ]  # fmt: skip


def _files(packages) -> list[SourceFile]:
    files = []
    for name in packages:
        found = find_source_files(stdlib_dir() / name, exclude=["**/tests", "**/test"])
        files.extend(SourceFile(stdlib_dir(), f"{name}/{f.relpath}") for f in found)
    return files


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> TinyData:
    root = tmp_path_factory.mktemp("tiny_data")
    texts = [f.path.read_text(encoding="utf-8") for f in _files(TRAIN_PACKAGES)]
    model = train_sentencepiece(
        texts, root / "tok", SentencePieceOptions(vocab_size=1024, num_threads=1)
    )
    for name, packages in (("train", TRAIN_PACKAGES), ("valid", VALID_PACKAGES)):
        options = PreprocessOptions(str(root / name), str(model), progress_bar=False)
        preprocess_files(_files(packages), options)
    return TinyData(
        tokenizer=Path(model),
        train=str(root / "train_text_document"),
        valid=str(root / "valid_text_document"),
    )
