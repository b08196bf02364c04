"""tools/train_tokenizer.py and the Hugging Face export."""

from __future__ import annotations

import json
import re

import pytest

from megatron_dlm.data.corpus import stdlib_dir
from megatron_dlm.data.encoder import TextEncoder
from megatron_dlm.data.hf_tokenizer import compare_with_sentencepiece
from megatron_dlm.data.tokenizer_training import SentencePieceOptions, bytes_per_token
from tests.data.conftest import EDGE_FILES, run_tool


def test_train_tokenizer_cli_reports_held_out_bytes_per_token_and_exports_hf(tmp_path, edge_dir):
    prefix = tmp_path / "tok" / "json"
    result = run_tool(
        "tools/train_tokenizer.py",
        "--input-dir", str(stdlib_dir() / "json"), str(stdlib_dir() / "email"), str(edge_dir),
        "--exclude", "**/tests",
        "--vocab-size", "600",
        "--held-out-fraction", "0.2",
        "--threads", "1",
        "--output-prefix", str(prefix),
        "--hf-output", str(tmp_path / "hf"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "special ids mask=3 eod=2 pad=1" in out
    held = re.search(r"held out: (\d+) documents, .*: ([\d.]+) bytes/token", out)
    assert held and int(held.group(1)) > 0 and 2.0 < float(held.group(2)) < 8.0
    assert re.search(r"skipped \d+ \(binary 1, empty \d+, undecodable 1\)", out), out
    assert "AutoTokenizer encodes" in out
    encoder = TextEncoder(f"{prefix}.model")
    assert encoder.vocab_size == 600
    assert (tmp_path / "tok" / "json.vocab").read_text().startswith("<unk>\t0\n<|pad|>\t0\n")
    config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["split_special_tokens"] is True
    assert config["mask_token"] == "<|mask|>" and config["eos_token"] == "<|eod|>"


def test_hf_export_round_trips_exactly_through_autotokenizer(sp_model, hf_dir, corpus_texts):
    from transformers import AutoTokenizer

    texts = corpus_texts + list(EDGE_FILES.values())
    assert compare_with_sentencepiece(sp_model, hf_dir, texts) == []
    hf = AutoTokenizer.from_pretrained(hf_dir)
    assert (hf.mask_token_id, hf.eos_token_id, hf.pad_token_id) == (3, 2, 1)
    # Saving and loading again changes nothing.
    hf.save_pretrained(hf_dir.parent / "again")
    again = AutoTokenizer.from_pretrained(hf_dir.parent / "again")
    for text in texts[:20] + list(EDGE_FILES.values()):
        ids = hf.encode(text, add_special_tokens=False)
        assert again.encode(text, add_special_tokens=False) == ids
        assert again.decode(ids) == text


def test_comparison_detects_a_different_tokenizer(sp_model, hf_dir, corpus_texts, tmp_path):
    """The export check can fail: a tokenizer with another merge order is caught."""
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    tok["model"]["merges"] = list(reversed(tok["model"]["merges"]))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text(json.dumps(tok))
    (broken / "tokenizer_config.json").write_text((hf_dir / "tokenizer_config.json").read_text())
    problems = compare_with_sentencepiece(sp_model, broken, corpus_texts[:5])
    assert len(problems) == 5 and "ids differ" in problems[0]


def test_bytes_per_token(sp_model, corpus_texts):
    encoder = TextEncoder(sp_model)
    bpt = bytes_per_token(encoder.encode, corpus_texts)
    total = sum(len(t.encode()) for t in corpus_texts)
    assert bpt == pytest.approx(total / sum(len(encoder.encode(t)) for t in corpus_texts))
    assert bpt > 2.5  # a 1k-vocab BPE on code compresses well beyond bytes


def test_bad_training_options_are_named():
    with pytest.raises(ValueError, match="--vocab-size"):
        SentencePieceOptions(vocab_size=100).trainer_kwargs()
    with pytest.raises(ValueError, match="--model-type"):
        SentencePieceOptions(model_type="wordpiece").trainer_kwargs()


def test_train_tokenizer_cli_errors(tmp_path):
    missing = run_tool(
        "tools/train_tokenizer.py", "--input-dir", str(tmp_path / "nope"),
        "--output-prefix", str(tmp_path / "t"),
    )  # fmt: skip
    assert missing.returncode == 1 and "nope' does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run_tool(
        "tools/train_tokenizer.py", "--input-dir", str(tmp_path / "empty"),
        "--output-prefix", str(tmp_path / "t"),
    )  # fmt: skip
    assert empty.returncode == 1 and "no training text" in empty.stderr
    usage = run_tool("tools/train_tokenizer.py", "--output-prefix", str(tmp_path / "t"))
    assert usage.returncode == 2 and "--input-dir" in usage.stderr
    assert not list(tmp_path.glob("t*"))
