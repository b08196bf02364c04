"""Bad input gets a clear error naming the file or the flag."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from megatron_dlm.config import ConfigError
from megatron_dlm.data.budget import BudgetError
from megatron_dlm.data.dataset_checks import DatasetError, validate_dataset_against_tokenizer
from tests.data.conftest import write_indexed
from tests.data.helpers import build


def _copy(prefix: str, dest) -> str:
    for suffix in (".bin", ".idx"):
        shutil.copyfile(prefix + suffix, str(dest) + suffix)
    return str(dest)


def test_missing_files_name_the_file_and_the_flag(corpus, tmp_path):
    missing = str(tmp_path / "nowhere_text_document")
    with pytest.raises(
        DatasetError,
        match=rf"--data-path {re.escape(missing)}: .*{re.escape(missing)}.idx' does not exist",
    ):
        build(corpus.tokenizer, tmp_path, data_path=[missing])
    prefix = _copy(corpus.a, tmp_path / "no_bin")
    (tmp_path / "no_bin.bin").unlink()
    with pytest.raises(
        DatasetError,
        match=rf"--valid-data-path {re.escape(prefix)}: .*{re.escape(prefix)}.bin' does not",
    ):
        build(
            corpus.tokenizer,
            tmp_path,
            train_data_path=[corpus.a],
            valid_data_path=[prefix],
            valid_samples=1,
        )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-10], r"is truncated or corrupt: \d+ bytes, but its header"),
        (lambda b: b[:20], r"is truncated \(20 bytes, shorter than the"),
        (lambda b: b"XXXXXXXXX" + b[9:], r"is not a megatron-core index \(bad header\)"),
        (lambda b: b[:9] + (7).to_bytes(8, "little") + b[17:], r"unsupported index \(version 7"),
    ],
)
def test_corrupt_or_truncated_index(corpus, tmp_path, damage, message):
    prefix = _copy(corpus.a, tmp_path / "bad")
    idx = tmp_path / "bad.idx"
    idx.write_bytes(damage(idx.read_bytes()))
    with pytest.raises(
        DatasetError,
        match=rf"--data-path {re.escape(prefix)}: '{re.escape(prefix)}\.idx':? {message}",
    ):
        build(corpus.tokenizer, tmp_path, data_path=[prefix])


def test_truncated_bin(corpus, tmp_path):
    prefix = _copy(corpus.a, tmp_path / "short")
    data = (tmp_path / "short.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DatasetError,
        match=rf"{re.escape(prefix)}.bin' has \d+ bytes, but '{re.escape(prefix)}.idx'",
    ):
        build(corpus.tokenizer, tmp_path, data_path=[prefix])


def test_empty_dataset(corpus, tmp_path):
    empty = write_indexed(tmp_path / "empty", [])
    with pytest.raises(
        DatasetError, match=rf"--train-data-path {re.escape(empty)}: the dataset is empty"
    ):
        build(corpus.tokenizer, tmp_path, train_data_path=[empty])


def test_tokenizer_that_did_not_write_the_dataset(corpus, tmp_path):
    with pytest.raises(
        DatasetError,
        match=rf"--data-path {re.escape(corpus.a)}: .*holds token id \d+ .*outside the tokenizer's "
        r"vocabulary of 400 ids",
    ):
        build(corpus.small_tokenizer, tmp_path, data_path=[corpus.a])
    narrow = write_indexed(tmp_path / "narrow", [[5, 6, 7, 2]], dtype=np.uint8)
    with pytest.raises(DatasetError, match=r"stores uint8 token ids \(at most 256 distinct\)"):
        validate_dataset_against_tokenizer(narrow, corpus.tokenizer)
    # ids within the vocabulary pass, whatever the dtype
    assert validate_dataset_against_tokenizer(corpus.a, corpus.tokenizer).num_sequences > 0


def test_budget_larger_than_the_data(corpus, tmp_path):
    available = int(corpus.lengths_a[: round(0.9 * len(corpus.lengths_a))].sum())
    with pytest.raises(
        BudgetError,
        match=rf"--unique-tokens 10,000,000 is larger than the training split of "
        rf"{re.escape(corpus.a)}, which holds {available:,} tokens",
    ):
        build(
            corpus.tokenizer,
            tmp_path,
            data_path=[corpus.a],
            split="90,10,0",
            unique_tokens=10_000_000,
        )
    with pytest.raises(
        BudgetError, match=rf"training split of {re.escape(corpus.b)} \(its share of the"
    ):
        build(
            corpus.tokenizer,
            tmp_path,
            data_path=["1", corpus.a, "1000", corpus.b],
            unique_tokens=1_000_000,
        )


def test_split_too_small_for_a_sample(corpus, tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"the valid split of .* \(--split 999,1,0\) holds .* "
        r"fewer than one sample of --seq-length 4096",
    ):
        build(
            corpus.tokenizer,
            tmp_path,
            data_path=[corpus.a],
            split="999,1,0",
            seq_length=4096,
            valid_samples=1,
        )


def test_contradictory_or_missing_flags(corpus, tmp_path):
    with pytest.raises(ConfigError, match="no training data: give --data-path or --train"):
        build(corpus.tokenizer, tmp_path)
    with pytest.raises(ConfigError, match="--data-path: give prefixes .* or weight-prefix pairs"):
        build(corpus.tokenizer, tmp_path, data_path=["0.5", corpus.a, corpus.b])
    with pytest.raises(ConfigError, match="weights must be > 0"):
        build(corpus.tokenizer, tmp_path, data_path=["0", corpus.a, "1", corpus.b])
    with pytest.raises(ConfigError, match="mutually exclusive"):
        build(corpus.tokenizer, tmp_path, data_path=[corpus.a], test_data_path=[corpus.b])
    with pytest.raises(DatasetError, match="in both --train-data-path and --valid-data-path"):
        build(
            corpus.tokenizer,
            tmp_path,
            train_data_path=[corpus.a],
            valid_data_path=[corpus.a],
            valid_samples=1,
        )
