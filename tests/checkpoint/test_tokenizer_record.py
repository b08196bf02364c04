"""The typed tokenizer record shared by checkpoints and dataset sidecars."""

from __future__ import annotations

import json

import pytest

from megatron_dlm.checkpoint import CheckpointError, TokenizerRecord
from megatron_dlm.data.metadata import read_dataset_metadata

RECORD = TokenizerRecord(
    vocab_size=1024,
    mask_id=3,
    eod_id=2,
    pad_id=1,
    type="SentencePieceTokenizer",
    model="/abs/tok.model",
    vocab_sha256="v" * 64,
    model_sha256="m" * 64,
)


def test_round_trip_and_legacy_names():
    assert TokenizerRecord.from_dict(RECORD.to_dict()) == RECORD
    # Checkpoints of format 1 wrote mask_id/eod/pad/path/sha256.
    old_checkpoint = {"vocab_size": 1024, "mask_id": 3, "eod": 2, "pad": 1,
                      "path": "/abs/tok.model", "sha256": "v" * 64,
                      "type": "SentencePieceTokenizer"}  # fmt: skip
    assert TokenizerRecord.from_dict(old_checkpoint) == RECORD.__class__(
        **{**RECORD.to_dict(), "model_sha256": None}
    )


def test_missing_or_malformed_fields_name_the_source():
    with pytest.raises(CheckpointError, match="ckpt X: the tokenizer record lacks eod_id"):
        TokenizerRecord.from_dict({"vocab_size": 10, "mask_id": 9, "pad": 0},
                                  "ckpt X: the tokenizer record")  # fmt: skip
    with pytest.raises(CheckpointError, match="expected a mapping"):
        TokenizerRecord.from_dict([1, 2])


def test_differences_compare_only_what_both_know():
    imported = TokenizerRecord(vocab_size=1024, mask_id=3, eod_id=2, pad_id=1)  # no fingerprint
    assert RECORD.differences(imported) == []
    other = TokenizerRecord(vocab_size=1024, mask_id=5, eod_id=2, pad_id=1, vocab_sha256="w")
    assert RECORD.differences(other) == [("vocab_sha256", "v" * 64, "w"), ("mask_id", 3, 5)]


def test_version_1_dataset_sidecar_still_reads(tmp_path):
    prefix = tmp_path / "data_text_document"
    sidecar = {
        "format": "megatron-dlm-dataset", "version": 1, "documents": 2, "tokens": 10,
        "dtype": "uint16", "eod_appended": True, "bin_bytes": 20, "idx_bytes": 70,
        "tokenizer": {"type": "SentencePieceTokenizer", "model": "/abs/tok.model",
                      "model_sha256": "m" * 64, "vocab_size": 1024, "vocab_sha256": "v" * 64,
                      "eod": 2, "pad": 1, "mask": 3},
    }  # fmt: skip
    (tmp_path / "data_text_document.meta.json").write_text(json.dumps(sidecar))
    meta = read_dataset_metadata(prefix)
    assert meta.tokenizer == RECORD
    assert json.loads(meta.to_json())["tokenizer"] == RECORD.to_dict()
