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
    TokenizerOptions,
    assign_special_ids,
    can_append_tokens,
    check_vocab_size_option,
    encode_keeping_marker,
    gpt2_bpe_tokenizer,
    hf_split_special_tokens,
    marker_byte_ids,
    model_sha256,
    null_encode,
    null_pieces,
    own_special_tokens,
    resolve_tokenizer_files,
    tokenizer_source,
    tokenizers_pieces,
    vocab_sha256,
    warn_if_spaces_as_marker,
)


class TextEncoder:
    """Encode and decode with the tokenizer library itself.

    Args:
        path: sentencepiece ``.model``, or a Hugging Face ``tokenizer.json`` or its folder
            (None for GPT2BPETokenizer and NullTokenizer).
        tokenizer_type: a key of :data:`~megatron_dlm.data.tokenizer.TOKENIZER_LIBRARIES`.
        options: as for :class:`~megatron_dlm.data.tokenizer.DLMTokenizer`; tokens are
            appended in the same order, so the ids are the same.

    Raises:
        TokenizerError: the file is missing or unreadable, or lacks the special tokens.
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        tokenizer_type: str = "SentencePieceTokenizer",
        options: TokenizerOptions | None = None,
    ):
        self.options = options = options or TokenizerOptions()
        self.files: TokenizerFiles = resolve_tokenizer_files(path, tokenizer_type, options)
        self._tok = None
        self._appended: list[str] = []  # sentencepiece (Llama2Tokenizer): ids past the model
        if self.files.library == "sentencepiece":
            self._init_sentencepiece()
        elif self.files.library == "null":
            self._null = null_pieces(int(options.vocab_size))
            self.vocab_size = len(self._null)
            size = self.vocab_size
            self.encode = lambda text: null_encode(text, size)
        else:
            self._init_tokenizers()
        self.original_vocab_size = self.vocab_size
        for token in options.added_tokens:
            if self.token_to_id(token) is None:
                self.add_special_token(token)
        self.special_ids: SpecialTokenIds
        self.special_ids, _ = assign_special_ids(
            self,
            tokenizer_source(self.files),
            mask_token=options.mask_token,
            eod_token=options.eod_token,
            pad_token=options.pad_token,
            named=own_special_tokens(self.files),
            can_add=can_append_tokens(self.files),
        )
        check_vocab_size_option(self.vocab_size, options, self.files)

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
        if self.files.tokenizer_type != "SentencePieceTokenizer":  # Llama2Tokenizer: the model's
            self.encode = encode_as_ids  # own encoding (as DLMTokenizer does)
            return
        marker = marker_byte_ids(self.token_to_id)

        def encode(text: str) -> list[int]:
            if SENTENCEPIECE_SPACE in text:  # a literal "▁": keep it (as DLMTokenizer does)
                return encode_keeping_marker(encode_as_ids, text, marker)
            return encode_as_ids(text)

        self.encode = encode

    def _init_tokenizers(self) -> None:
        if self.files.library == "gpt2-bpe":
            self._tok = gpt2_bpe_tokenizer(self.files)
            self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
            return
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

    def add_special_token(self, token: str) -> int:
        """Append ``token`` as a special token (as ``DLMTokenizer`` does); return its id."""
        if self._tok is None:
            if self.files.library == "null":
                self._null.append(token)
                self.vocab_size = len(self._null)
                return self.vocab_size - 1
            if can_append_tokens(self.files):
                self._appended.append(token)
                self.vocab_size += 1
                return self.vocab_size - 1
            raise TokenizerError(
                f"{self.files.model_file}: cannot add {token!r} to a sentencepiece model; "
                f"train it with the token (tools/train_tokenizer.py reserves <|mask|>, "
                f"<|eod|>, <|pad|>)"
            )
        from tokenizers import AddedToken

        expected = self.vocab_size
        self._tok.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        got = self._tok.token_to_id(token)
        if got != expected:
            raise TokenizerError(f"appending {token!r} gave id {got}, expected {expected}")
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        return got

    def encode(self, text: str) -> list[int]:  # replaced per instance for sentencepiece
        """Token ids of ``text`` (no special tokens added)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``; special tokens decode to nothing."""
        if self.files.library == "sentencepiece":
            return self._sp.decode_ids([i for i in ids if i < self.original_vocab_size])
        if self.files.library == "null":
            return " ".join(str(i) for i in ids if i < self.original_vocab_size - 1)
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary piece, or None if the vocabulary lacks it."""
        if self.files.library == "sentencepiece":
            if token in self._appended:
                return self.original_vocab_size + self._appended.index(token)
            i = self._sp.piece_to_id(token)
            return i if self._sp.id_to_piece(i) == token else None
        if self.files.library == "null":
            return self._null.index(token) if token in self._null else None
        return self._tok.token_to_id(token)

    @property
    def pieces(self) -> list[str | None]:
        """The vocabulary: piece of each id (None for an id no piece has)."""
        if self.files.library == "sentencepiece":
            own = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
            return own + self._appended
        if self.files.library == "null":
            return list(self._null)
        return tokenizers_pieces(self._tok)

    @property
    def added_tokens(self) -> tuple[str, ...]:
        """Tokens appended to the tokenizer's own vocabulary (ids ``original_vocab_size``...)."""
        return tuple(self.pieces[self.original_vocab_size :])  # type: ignore[arg-type]

    @property
    def special_tokens(self) -> dict[str, str | None]:
        """The token of each role (``mask_token``, ``eos_token``, ``pad_token``)."""
        pieces = self.pieces
        return {
            "mask_token": pieces[self.mask_id],
            "eos_token": pieces[self.eod],
            "pad_token": pieces[self.pad],
        }

    @property
    def merge_file(self) -> Path | None:
        return self.files.merge_file

    def save_tokenizers_json(self, path: str | os.PathLike) -> None:
        """Write the ``tokenizers`` JSON, appended tokens included (not for sentencepiece or
        NullTokenizer)."""
        if self._tok is None:
            raise TokenizerError(f"{self.files.tokenizer_type} has no tokenizers JSON to write")
        self._tok.save(os.fspath(path))

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
        return model_sha256(self.files, self.options)

    @cached_property
    def vocab_sha256(self) -> str:
        return vocab_sha256(self.pieces)
