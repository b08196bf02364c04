"""Import-light text encoders: the ids of :class:`~megatron_dlm.data.tokenizer.DLMTokenizer`,
computed with sentencepiece or Hugging Face ``tokenizers`` directly.

Preprocessing workers encode millions of documents; they need neither megatron-core (seconds to
import) nor its wrapper layers. ``TextEncoder.encode`` returns exactly what
``DLMTokenizer.tokenize`` returns for the same file (tests/data check it on the standard
library): for sentencepiece both call ``encode_as_ids`` (a literal "▁" becomes its byte tokens,
see :func:`~megatron_dlm.data.tokenizer.encode_keeping_marker`); for a tokenizers JSON both encode
without added special tokens, and split special-token text exactly when the tokenizer's
``tokenizer_config.json`` says ``split_special_tokens``, as ``AutoTokenizer`` does.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from megatron_dlm.data.tokenizer import (
    SENTENCEPIECE_SPACE,
    SpecialTokenIds,
    TokenizerError,
    TokenizerFiles,
    encode_keeping_marker,
    file_sha256,
    hf_special_tokens,
    hf_split_special_tokens,
    marker_byte_ids,
    resolve_special_ids,
    resolve_tokenizer_files,
    vocab_sha256,
    warn_if_spaces_as_marker,
)


class TextEncoder:
    """Encode and decode with the tokenizer library itself.

    Args:
        path: sentencepiece ``.model``, or a Hugging Face ``tokenizer.json`` or its folder.
        tokenizer_type: ``SentencePieceTokenizer`` (default) or ``HuggingFaceTokenizer``.

    Raises:
        TokenizerError: the file is missing or unreadable, or lacks the special tokens.
    """

    def __init__(self, path: str | os.PathLike, tokenizer_type: str = "SentencePieceTokenizer"):
        self.files: TokenizerFiles = resolve_tokenizer_files(path, tokenizer_type)
        if self.files.library == "sentencepiece":
            self._init_sentencepiece()
        else:
            self._init_tokenizers()
        self.special_ids: SpecialTokenIds = resolve_special_ids(
            self.token_to_id, self.vocab_size, self.files.model_file, hf_special_tokens(self.files)
        )

    def _init_sentencepiece(self) -> None:
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor()
        try:
            sp.Load(str(self.files.model_file))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(
                f"{str(self.files.model_file)!r} is not a sentencepiece model: {exc}"
            ) from exc
        self._sp = sp
        self.vocab_size = sp.get_piece_size()
        encode_as_ids = sp.encode_as_ids  # bound C++ call: little per-document overhead
        marker = marker_byte_ids(self.token_to_id)

        def encode(text: str) -> list[int]:
            if SENTENCEPIECE_SPACE in text:  # a literal "▁": keep it (as DLMTokenizer does)
                return encode_keeping_marker(encode_as_ids, text, marker)
            return encode_as_ids(text)

        self.encode = encode

    def _init_tokenizers(self) -> None:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(self.files.model_file))
        except Exception as exc:
            raise TokenizerError(
                f"{str(self.files.model_file)!r} is not a tokenizers JSON: {exc}"
            ) from exc
        warn_if_spaces_as_marker(self.files)
        tok.encode_special_tokens = hf_split_special_tokens(self.files)
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:  # replaced per instance for sentencepiece
        """Token ids of ``text`` (no special tokens added)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; special tokens decode to nothing."""
        if self.files.library == "sentencepiece":
            return self._sp.decode_ids(list(ids))
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary piece, or None if the vocabulary lacks it."""
        if self.files.library == "sentencepiece":
            i = self._sp.piece_to_id(token)
            return i if self._sp.id_to_piece(i) == token else None
        return self._tok.token_to_id(token)

    @property
    def pieces(self) -> list[str | None]:
        """The vocabulary: piece of each id (None for an id no piece has)."""
        if self.files.library == "sentencepiece":
            return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]
        by_id: list[str | None] = [None] * self.vocab_size
        for piece, i in self._tok.get_vocab(with_added_tokens=True).items():
            if 0 <= i < self.vocab_size:
                by_id[i] = piece
        return by_id

    @property
    def tokenizer_type(self) -> str:
        return self.files.tokenizer_type

    @property
    def model_path(self) -> Path:
        return self.files.model_file

    @property
    def mask_id(self) -> int:
        return self.special_ids.mask

    @property
    def eod(self) -> int:
        return self.special_ids.eod

    @property
    def pad(self) -> int:
        return self.special_ids.pad

    @cached_property
    def model_sha256(self) -> str:
        return file_sha256(self.files.model_file)

    @cached_property
    def vocab_sha256(self) -> str:
        return vocab_sha256(self.pieces)
