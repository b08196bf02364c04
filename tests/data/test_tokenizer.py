"""DLMTokenizer (megatron-core + special ids) and the import-light TextEncoder."""

from __future__ import annotations

import json
import shutil

import pytest

from megatron_dlm.config.data import DataConfig
from megatron_dlm.data.encoder import TextEncoder
from megatron_dlm.data.tokenizer import (
    EOD_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SENTENCEPIECE_SPACE,
    TokenizerError,
    build_tokenizer,
    hf_spaces_as_marker,
    load_tokenizer,
)
from megatron_dlm.models.vocab import Vocab
from tests.data.conftest import EDGE_FILES


def test_special_ids_come_from_the_reserved_tokens(sp_model, sp_tokenizer):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
    assert sp_tokenizer.vocab_size == sp.get_piece_size() == 1024
    assert sp_tokenizer.mask_id == sp.piece_to_id(MASK_TOKEN)
    assert sp_tokenizer.eod == sp.piece_to_id(EOD_TOKEN)
    assert sp_tokenizer.pad == sp.piece_to_id(PAD_TOKEN)
    assert len({sp_tokenizer.mask_id, sp_tokenizer.eod, sp_tokenizer.pad, sp.unk_id()}) == 4
    # What the model and megatron-core's datasets read from a tokenizer.
    vocab = Vocab.from_tokenizer(sp_tokenizer)
    assert (vocab.mask_id, vocab.eod_id, vocab.pad_id) == (3, 2, 1)
    # megatron-core's own eod/pad for the model agree (sentencepiece eos/pad are ours).
    assert sp_tokenizer.megatron_tokenizer.eod == sp_tokenizer.eod
    assert sp_tokenizer.megatron_tokenizer.pad == sp_tokenizer.pad


def test_hf_tokenizer_has_the_same_vocabulary_and_ids(sp_tokenizer, hf_tokenizer, corpus_texts):
    assert hf_tokenizer.vocab_size == sp_tokenizer.vocab_size
    assert hf_tokenizer.vocab_sha256 == sp_tokenizer.vocab_sha256
    assert hf_tokenizer.special_ids == sp_tokenizer.special_ids
    for text in corpus_texts[:40] + list(EDGE_FILES.values()):
        ids = sp_tokenizer.tokenize(text)
        assert hf_tokenizer.tokenize(text) == ids
        assert hf_tokenizer.detokenize(ids) == text
        assert sp_tokenizer.detokenize(ids) == text


@pytest.mark.parametrize("kind", ["sp", "hf"])
def test_text_encoder_gives_the_ids_of_dlm_tokenizer(kind, request, corpus_texts):
    tokenizer = request.getfixturevalue(f"{kind}_tokenizer")
    encoder = TextEncoder(
        tokenizer.model_path.parent if kind == "hf" else tokenizer.model_path,
        tokenizer.tokenizer_type,
    )
    assert encoder.vocab_size == tokenizer.vocab_size
    assert encoder.special_ids == tokenizer.special_ids
    assert encoder.vocab_sha256 == tokenizer.vocab_sha256
    for text in corpus_texts + list(EDGE_FILES.values()):
        ids = encoder.encode(text)
        assert ids == tokenizer.tokenize(text)
        assert encoder.decode(ids) == text


def test_special_token_text_is_encoded_as_text(sp_tokenizer, hf_tokenizer):
    text = EDGE_FILES["specials.py"]
    for tok in (sp_tokenizer, hf_tokenizer):
        ids = tok.tokenize(text)
        assert not {tok.mask_id, tok.eod, tok.pad} & set(ids)
        assert tok.detokenize(ids) == text


def test_unique_identifiers_describe_content_not_location(sp_model, sp_tokenizer, tmp_path):
    copy = tmp_path / "copy.model"
    shutil.copy(sp_model, copy)
    ident = sp_tokenizer.unique_identifiers
    assert load_tokenizer(copy).unique_identifiers == ident
    json.dumps(ident)  # megatron-core serialises it into its cache keys
    assert ident["vocab_size"] == 1024 and ident["special_ids"] == [3, 2, 1]


def test_build_tokenizer_from_data_config(sp_model, hf_dir):
    tok = build_tokenizer(DataConfig(tokenizer_model=str(sp_model)))
    assert tok.mask_id == 3
    tok = build_tokenizer(
        DataConfig(
            tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(hf_dir / "tokenizer.json")
        )
    )
    assert tok.mask_id == 3
    with pytest.raises(TokenizerError, match="--tokenizer-model is required"):
        build_tokenizer(DataConfig())


@pytest.mark.parametrize("loader", [load_tokenizer, TextEncoder])
def test_tokenizer_without_special_tokens_is_rejected(loader, plain_sp_model):
    with pytest.raises(TokenizerError) as info:
        loader(plain_sp_model)
    message = str(info.value)
    assert str(plain_sp_model) in message
    assert "<|mask|>" in message and "tools/train_tokenizer.py" in message


def test_hf_tokenizer_without_special_tokens_is_rejected(tmp_path):
    from tokenizers import Tokenizer, models

    path = tmp_path / "tokenizer.json"
    Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]")).save(str(path))
    for loader in (TextEncoder, load_tokenizer):
        with pytest.raises(TokenizerError, match=r"tokenizer\.json' lacks the special token"):
            loader(path, "HuggingFaceTokenizer")


def test_missing_or_mistyped_tokenizer_files(tmp_path, sp_model, hf_dir):
    with pytest.raises(TokenizerError, match=r"does not exist"):
        TextEncoder(tmp_path / "nope.model")
    with pytest.raises(TokenizerError, match=r"is a folder"):
        TextEncoder(hf_dir)
    with pytest.raises(TokenizerError, match=r"not a tokenizer\.json"):
        TextEncoder(sp_model, "HuggingFaceTokenizer")
    with pytest.raises(TokenizerError, match=r"--tokenizer-type 'BertWordPieceCase'"):
        TextEncoder(sp_model, "BertWordPieceCase")
    with pytest.raises(TokenizerError, match=r"GPT2BPETokenizer needs --vocab-file and --merge"):
        TextEncoder(sp_model, "GPT2BPETokenizer")
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="not a sentencepiece model"):
        TextEncoder(tmp_path / "bad.model")


MARKER_TEXTS = [
    SENTENCEPIECE_SPACE,
    "spinner = ['\u2581\u2583\u2585\u2587']",
    "a\u2581b \u2581\u2581 \u2581",
    " \u2581 ",
    "x\u2581\n\u2581",
]


def test_the_library_alone_turns_a_literal_marker_into_a_space(sp_model):
    """Why the marker needs care: sentencepiece cannot tell it from a space."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_model))
    assert sp.decode(sp.encode_as_ids("a\u2581b")) == "a b"


@pytest.mark.parametrize("kind", ["sp", "hf"])
def test_literal_marker_round_trips_with_the_same_ids_everywhere(kind, request, sp_tokenizer):
    tokenizer = request.getfixturevalue(f"{kind}_tokenizer")
    encoder = TextEncoder(
        tokenizer.model_path.parent if kind == "hf" else tokenizer.model_path,
        tokenizer.tokenizer_type,
    )
    for text in MARKER_TEXTS:
        ids = tokenizer.tokenize(text)
        assert ids == encoder.encode(text) == sp_tokenizer.tokenize(text), text
        assert tokenizer.detokenize(ids) == text
        assert encoder.decode(ids) == text


def test_marker_becomes_its_byte_tokens_and_the_rest_is_unchanged(sp_tokenizer):
    marker = [sp_tokenizer.token_to_id(p) for p in ("<0xE2>", "<0x96>", "<0x81>")]
    assert None not in marker
    left, right = "def f(x):", " return x\n"
    ids = sp_tokenizer.tokenize(left + SENTENCEPIECE_SPACE + right)
    assert ids == sp_tokenizer.tokenize(left) + marker + sp_tokenizer.tokenize(right)
    assert sp_tokenizer.tokenize(left + right) == TextEncoder(sp_tokenizer.model_path).encode(
        left + right
    )


def test_an_export_that_maps_spaces_to_the_marker_is_flagged(hf_dir, tmp_path, caplog):
    """Exports written before the marker was spelled as a space lose a literal one."""
    assert not hf_spaces_as_marker(hf_dir / "tokenizer.json")
    tok = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tok["normalizer"] = {
        "type": "Replace", "pattern": {"String": " "}, "content": SENTENCEPIECE_SPACE,
    }  # fmt: skip
    old = tmp_path / "old"
    old.mkdir()
    (old / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    shutil.copy(hf_dir / "tokenizer_config.json", old)
    assert hf_spaces_as_marker(old / "tokenizer.json")
    with caplog.at_level("WARNING"):
        TextEncoder(old, "HuggingFaceTokenizer")
    assert "decodes as a space; re-export it" in caplog.text
