"""Train a sentencepiece tokenizer for code (the engine of tools/train_tokenizer.py).

The settings that suit source code (measured on the CPython standard library, see
docs/data-tools.md):

- whole files are sentences (``sentence_iterator``): from a text file sentencepiece trains line
  by line and newlines never reach the model;
- identity normalisation, whitespace kept as is (``remove_extra_whitespaces=False``), no dummy
  prefix, pieces may span and consist of whitespace (``split_by_whitespace=False``,
  ``allow_whitespace_only_pieces=True``: indentation becomes a few tokens), and across
  Unicode-script boundaries (``split_by_unicode_script=False``: ``self.``, ``):``; +10% bytes
  per token);
- byte fallback: any text round-trips exactly, rare characters become UTF-8 byte tokens (and
  so does a literal "▁", sentencepiece's whitespace marker, when our tokenizers encode it:
  :func:`megatron_dlm.data.tokenizer.encode_keeping_marker`);
- the special tokens are reserved as control symbols (never produced from text):
  ``<unk>`` 0, ``<|pad|>`` 1 (sentencepiece's pad), ``<|eod|>`` 2 (its eos), ``<|mask|>`` 3; no bos.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from megatron_dlm.data.tokenizer import EOD_TOKEN, MASK_TOKEN, PAD_TOKEN, UNK_TOKEN

MAX_SENTENCE_BYTES = 1 << 28
"""Longest document used for training; sentencepiece skips longer ones (its default: 4192)."""


@dataclass
class SentencePieceOptions:
    """Tokenizer training settings (the flags of tools/train_tokenizer.py).

    Attributes:
        vocab_size: pieces in the vocabulary, special and byte tokens included.
        model_type: ``bpe`` (default) or ``unigram`` (much slower on whole files).
        character_coverage: share of characters that get their own piece; the rest are
            encoded as UTF-8 bytes.
        max_piece_length: longest piece, in characters.
        num_threads: training threads.
    """

    vocab_size: int = 32000
    model_type: str = "bpe"
    character_coverage: float = 0.9995
    max_piece_length: int = 16
    num_threads: int = os.cpu_count() or 1

    def trainer_kwargs(self) -> dict:
        """Keyword arguments for ``sentencepiece.SentencePieceTrainer.train``."""
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"--model-type must be bpe or unigram, got {self.model_type!r}")
        if self.vocab_size < 300:
            raise ValueError(
                f"--vocab-size must be at least 300 (256 byte tokens, the special tokens and "
                f"some pieces), got {self.vocab_size}"
            )
        return dict(
            model_type=self.model_type,
            vocab_size=self.vocab_size,
            character_coverage=self.character_coverage,
            max_sentencepiece_length=self.max_piece_length,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            split_by_whitespace=False,
            split_by_unicode_script=False,
            allow_whitespace_only_pieces=True,
            byte_fallback=True,
            max_sentence_length=MAX_SENTENCE_BYTES,
            input_sentence_size=0,
            unk_id=0,
            unk_piece=UNK_TOKEN,
            pad_id=1,
            pad_piece=PAD_TOKEN,
            eos_id=2,
            eos_piece=EOD_TOKEN,
            bos_id=-1,
            control_symbols=[MASK_TOKEN],
            num_threads=self.num_threads,
            minloglevel=2,
        )


def train_sentencepiece(
    texts: Iterable[str], output_prefix: str | os.PathLike, options: SentencePieceOptions
) -> Path:
    """Train on ``texts`` (one document each) and write ``{output_prefix}.model`` / ``.vocab``.

    The files are written under temporary names and renamed when complete.

    Returns:
        Path of the ``.model`` file.

    Raises:
        ValueError: bad options, or too little text for the vocabulary size (sentencepiece's
            message).
    """
    import sentencepiece

    kwargs = options.trainer_kwargs()
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, **kwargs
        )
    except RuntimeError as exc:
        raise ValueError(f"sentencepiece training failed: {exc}") from exc
    prefix = os.fspath(output_prefix)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    sp = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = "".join(
        f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size())
    )
    payloads = {".vocab": vocab.encode("utf-8"), ".model": model.getvalue()}
    temps = {suffix: f"{prefix}{suffix}.partial-{os.getpid()}" for suffix in payloads}
    try:
        for suffix, payload in payloads.items():  # both complete before either is replaced
            with open(temps[suffix], "wb") as f:
                f.write(payload)
        for suffix, temp in temps.items():
            os.replace(temp, prefix + suffix)
    except BaseException:  # disk full, interrupted: leave no partial file behind
        for temp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)
        raise
    return Path(prefix + ".model")


def bytes_per_token(encode: Callable[[str], list[int]], texts: Iterable[str]) -> float:
    """UTF-8 bytes per token of ``texts`` (higher compresses better)."""
    n_bytes = n_tokens = 0
    for text in texts:
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(encode(text))
    return n_bytes / max(n_tokens, 1)
