"""The dataset metadata sidecar: a tokenizer whose vocabulary differs is rejected."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from megatron_dlm.data.encoder import TextEncoder
from megatron_dlm.data.metadata import (
    DatasetMetadataError,
    check_tokenizer_matches,
    metadata_path,
    read_dataset_metadata,
)
from megatron_dlm.data.tokenizer import load_tokenizer
from megatron_dlm.data.tokenizer_training import SentencePieceOptions, train_sentencepiece


@pytest.fixture
def copy(dataset_prefix, tmp_path):
    prefix = str(tmp_path / "d")
    for suffix in (".bin", ".idx", ".meta.json"):
        shutil.copy(dataset_prefix + suffix, prefix + suffix)
    return prefix


@pytest.fixture(scope="module")
def other_models(tmp_path_factory, corpus_texts):
    """Tokenizers with our special tokens but another vocabulary (same size, and smaller)."""
    root = tmp_path_factory.mktemp("other")
    same_size = train_sentencepiece(
        corpus_texts[::-1][:30], root / "same", SentencePieceOptions(1024, num_threads=1)
    )
    smaller = train_sentencepiece(corpus_texts, root / "small", SentencePieceOptions(900))
    return same_size, smaller


def test_the_dataset_tokenizer_and_its_hf_export_match(dataset_prefix, sp_tokenizer, hf_tokenizer):
    meta = check_tokenizer_matches(dataset_prefix, sp_tokenizer)
    assert meta.tokenizer.vocab_size == 1024
    check_tokenizer_matches(dataset_prefix, hf_tokenizer)  # other file, same vocabulary
    check_tokenizer_matches(dataset_prefix, TextEncoder(sp_tokenizer.model_path))


def test_another_vocabulary_is_rejected(dataset_prefix, other_models):
    same_size, smaller = other_models
    with pytest.raises(DatasetMetadataError) as info:
        check_tokenizer_matches(dataset_prefix, load_tokenizer(same_size))
    message = str(info.value)
    assert metadata_path(dataset_prefix) in message and str(same_size) in message
    assert "vocab_sha256" in message and "vocab_size" not in message
    with pytest.raises(DatasetMetadataError, match=r"vocab_size: dataset 1024, tokenizer 900"):
        check_tokenizer_matches(dataset_prefix, TextEncoder(smaller))


def test_missing_stale_or_broken_sidecar(copy, sp_tokenizer, caplog):
    meta_file = metadata_path(copy)
    with open(copy + ".bin", "ab") as f:  # the data changed after the sidecar was written
        f.write(b"\0\0")
    with pytest.raises(DatasetMetadataError, match=r"from different runs"):
        check_tokenizer_matches(copy, sp_tokenizer)
    with open(meta_file, "w") as f:
        f.write("{not json")
    with pytest.raises(DatasetMetadataError, match=rf"cannot read dataset metadata '{meta_file}'"):
        read_dataset_metadata(copy)
    with open(meta_file, "w") as f:
        json.dump({"format": "megatron-dlm-dataset", "version": 99}, f)
    with pytest.raises(DatasetMetadataError, match=r"metadata version 99"):
        read_dataset_metadata(copy)
    import os

    os.remove(meta_file)
    with pytest.raises(DatasetMetadataError, match=rf"'{meta_file}' does not exist"):
        check_tokenizer_matches(copy, sp_tokenizer)
    with caplog.at_level(logging.WARNING):
        assert check_tokenizer_matches(copy, sp_tokenizer, require_metadata=False) is None
    assert "has no metadata" in caplog.text
