"""Tokenizer files of an export: copied or converted, checked against the model's vocabulary."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from megatron_dlm.hf import tokenizer_export
from megatron_dlm.hf.tokenizer_export import TokenizerExportError, export_tokenizer
from tests.hf.conftest import write_tokenizer_json

SPECIAL = {"mask_token": 99, "eos_token": 1, "pad_token": 0}


def test_tokenizer_json_round_trips_through_auto_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    source = write_tokenizer_json(tmp_path / "src" / "tokenizer.json")
    out = tmp_path / "out"
    out.mkdir()
    export_tokenizer(source, "HuggingFaceTokenizer", out, vocab_size=100, special_ids=SPECIAL,
                     model_max_length=256)  # fmt: skip
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["model_max_length"] == 256
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("w5 w6 w42", add_special_tokens=False).input_ids
    assert ids == [5, 6, 42]
    assert tok.decode(ids) == "w5 w6 w42"
    assert (tok.mask_token_id, tok.eos_token_id, tok.pad_token_id) == (99, 1, 0)


def test_folder_with_its_own_config_is_copied(tmp_path):
    source = write_tokenizer_json(tmp_path / "src" / "tokenizer.json")
    (source.parent / "tokenizer_config.json").write_text('{"tokenizer_class": "Mine"}')
    out = tmp_path / "out"
    out.mkdir()
    export_tokenizer(source.parent, None, out, vocab_size=100, special_ids=SPECIAL)
    assert json.loads((out / "tokenizer_config.json").read_text()) == {"tokenizer_class": "Mine"}


def test_errors(tmp_path, monkeypatch):
    source = write_tokenizer_json(tmp_path / "src" / "tokenizer.json")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TokenizerExportError, match="100 tokens but the model was trained with 64"):
        export_tokenizer(source, None, out, vocab_size=64)
    with pytest.raises(TokenizerExportError, match="no token with id 150"):
        export_tokenizer(source, None, out, special_ids={"mask_token": 150})
    with pytest.raises(TokenizerExportError, match="does not exist"):
        export_tokenizer(tmp_path / "none.json", None, out)
    model = tmp_path / "sp.model"
    model.write_bytes(b"sentencepiece")
    monkeypatch.setitem(sys.modules, "megatron_dlm.data.hf_tokenizer", None)
    with pytest.raises(NotImplementedError, match="needs megatron_dlm.data.hf_tokenizer"):
        export_tokenizer(model, "SentencePieceTokenizer", out)


def test_sentencepiece_goes_through_the_data_converter(tmp_path, monkeypatch):
    """The wiring to megatron_dlm.data.hf_tokenizer.export_hf_tokenizer(model, folder)."""
    calls = []

    def export_hf_tokenizer(model_file, output_dir, model_type="bpe"):
        calls.append((model_file, model_type))
        output_dir.mkdir()
        write_tokenizer_json(output_dir / "tokenizer.json")
        (output_dir / "tokenizer_config.json").write_text('{"tokenizer_class": "X"}')
        return output_dir

    fake = types.ModuleType("megatron_dlm.data.hf_tokenizer")
    fake.export_hf_tokenizer = export_hf_tokenizer
    monkeypatch.setitem(sys.modules, "megatron_dlm.data.hf_tokenizer", fake)
    monkeypatch.setattr(tokenizer_export, "sentencepiece_model_type", lambda path: "unigram")
    model = tmp_path / "sp.model"
    model.write_bytes(b"sentencepiece")
    out = tmp_path / "out"
    out.mkdir()
    export_tokenizer(model, "SentencePieceTokenizer", out, vocab_size=100, special_ids=SPECIAL)
    assert calls == [(model, "unigram")]
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_model_exports_exactly(tmp_path, model_type):
    """A real sentencepiece model (our trainer's settings) -> tokenizer.json, same ids."""
    import textwrap as sample_module

    import sentencepiece
    from transformers import AutoTokenizer

    from megatron_dlm.data.encoder import TextEncoder
    from megatron_dlm.data.tokenizer import DLMTokenizer
    from megatron_dlm.data.tokenizer_training import SentencePieceOptions, train_sentencepiece

    texts = [Path(sample_module.__file__).read_text(encoding="utf-8"), json.__doc__ or "x"]
    options = SentencePieceOptions(vocab_size=400, model_type=model_type, num_threads=1)
    model = train_sentencepiece(texts, tmp_path / "sp", options)
    dlm = DLMTokenizer(model)
    out = tmp_path / "out"
    out.mkdir()
    special = {"mask_token": dlm.mask_id, "eos_token": dlm.eod, "pad_token": dlm.pad}
    export_tokenizer(model, "SentencePieceTokenizer", out, vocab_size=dlm.vocab_size,
                     special_ids=special, vocab_sha256=dlm.vocab_sha256)  # fmt: skip
    tok = AutoTokenizer.from_pretrained(out)
    text = "def wrap(text, width=70):\n    return ['é中', text]  # ✓\n"
    expected = sentencepiece.SentencePieceProcessor(model_file=str(model)).encode(text)
    assert tok(text, add_special_tokens=False).input_ids == expected
    assert tok.decode(expected) == text
    # sentencepiece's whitespace marker as text: the ids training uses, and back to the text.
    marked = "bar = '\u2581\u2583\u2585'  # a\u2581b\n"
    expected = TextEncoder(model).encode(marked)
    assert tok(marked, add_special_tokens=False).input_ids == expected == dlm.tokenize(marked)
    assert tok.decode(expected) == marked
    assert (tok.mask_token_id, tok.eos_token_id, tok.pad_token_id) == (
        dlm.mask_id, dlm.eod, dlm.pad,
    )  # fmt: skip
    with pytest.raises(TokenizerExportError, match="sha256 fingerprint does not match"):
        export_tokenizer(out, None, tmp_path, vocab_sha256="0" * 64)
